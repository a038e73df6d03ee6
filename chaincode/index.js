'use strict';

// Entry point for fabric-chaincode-node (start or server mode).
const {TcbridgeRegistry} = require('./lib/registry');

module.exports.TcbridgeRegistry = TcbridgeRegistry;
module.exports.contracts = [TcbridgeRegistry];
