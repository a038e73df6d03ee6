"""The Hyperledger Fabric side of the bridge.

::

    identity.py   X.509 client identity; P-256 signatures, low s, DER
    gateway.py    Gateway gRPC client (Evaluate, Endorse, Submit, CommitStatus,
                  ChaincodeEvents); gRPC errors mapped in one place
    events.py     strict decoding of the registry's chaincode events
    watcher.py    ChaincodeEvents from a (block, last tx id) checkpoint; reconnects
    adapters.py   the watcher's store sink (chain id ``fabric:<channel>``)
    submitter.py  completions: tx id stored before Submit, CommitStatus after a
                  restart, MVCC conflicts re-endorsed (bounded)
    bridge.py     watcher -> store -> pool -> store -> submitter, one TaskGroup
    requester.py  a requester: submit, wait for the completion event, verify
    runtime.py    assembly from the ``[fabric]`` configuration section
    demo.py       ``./scripts/demo --chain fabric``
"""
