"""The Hyperledger Fabric side of the bridge: Gateway client, event watcher, submitter."""
