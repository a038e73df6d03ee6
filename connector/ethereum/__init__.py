"""The Ethereum side of the bridge: JSON-RPC, event decoding, watcher, submitter."""
