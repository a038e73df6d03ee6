"""tcbridge's Fabric development peer: a TEST AND DEMO TOOL, not a Fabric network.

A single process that plays one peer and one orderer for one channel: it
runs the real chaincode (``chaincode/``) in chaincode-as-a-service mode over
the real chaincode protocol, keeps a versioned world state and a block store
in SQLite, validates read sets (MVCC) at commit, and serves the Fabric
Gateway gRPC service on 127.0.0.1 so that real Gateway clients work.

Modules: ``msp`` (test CA and identities), ``ledger`` (state and blocks),
``simulator`` (read/write sets), ``validation`` (MVCC and phantom checks),
``chaincode`` (the Connect stream), ``protocol`` (Fabric messages),
``peer`` (endorse, order, validate, commit, events), ``gateway`` (the gRPC
service), ``rpc_status`` (error details), ``client`` (a minimal Python
Gateway client), ``launcher`` (run it as a child process in tests),
``__main__`` (``python -m tcbridge_devpeer``). Documented in
``chaincode/README.md``.
"""
