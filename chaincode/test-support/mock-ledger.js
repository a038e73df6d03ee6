'use strict';

// An in-memory stand-in for the peer, for the chaincode's unit tests only.
// It follows fabric-shim's ChaincodeStub semantics where they matter to the
// registry: reads see committed state only (no read-your-writes), writes and
// the event apply only when the transaction succeeds, the last event set
// wins, composite keys and paged range queries behave like the shim's.

const crypto = require('crypto');
const Long = require('long');
const {peer} = require('@hyperledger/fabric-protos');

const COMPOSITE_NS = '\x00';
const MIN_RUNE = '\u0000';
const MAX_RUNE = '\u{10ffff}';

function byteOrder(a, b) {
    return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

class MockIterator {
    constructor(entries) {
        this.entries = entries;
        this.at = 0;
        this.closed = false;
    }

    async next() {
        if (this.at >= this.entries.length) {
            return {done: true};
        }
        const [key, value] = this.entries[this.at++];
        return {value: {key, value: Buffer.from(value)}, done: false};
    }

    async close() {
        this.closed = true;
    }
}

class MockStub {
    constructor(ledger, {txId, seconds, channel, chaincodeName}) {
        this.ledger = ledger;
        this.txId = txId;
        this.seconds = seconds;
        this.channel = channel;
        this.chaincodeName = chaincodeName;
        this.writes = new Map();
        this.event = null;
    }

    async getState(key) {
        const value = this.ledger.state.get(key);
        return value ? Buffer.from(value) : Buffer.alloc(0);
    }

    async putState(key, value) {
        if (typeof key !== 'string' || key.length === 0) {
            throw new Error('key must not be empty');
        }
        this.writes.set(key, Buffer.from(value));
    }

    async deleteState(key) {
        this.writes.set(key, null);
    }

    createCompositeKey(objectType, attributes) {
        for (const part of [objectType, ...attributes]) {
            if (typeof part !== 'string' || part.length === 0) {
                throw new Error('object type or attribute not a non-zero length string');
            }
        }
        return COMPOSITE_NS + [objectType, ...attributes].map((part) => part + MIN_RUNE).join('');
    }

    splitCompositeKey(key) {
        const parts = key.substring(1).split(MIN_RUNE);
        parts.pop();
        return {objectType: parts[0], attributes: parts.slice(1)};
    }

    _range(startKey, endKey) {
        return [...this.ledger.state.entries()]
            .filter(([key]) => byteOrder(key, startKey) >= 0 && byteOrder(key, endKey) < 0)
            .sort(([a], [b]) => byteOrder(a, b));
    }

    _page(startKey, endKey, pageSize, bookmark) {
        const entries = this._range(bookmark || startKey, endKey);
        const page = pageSize > 0 ? entries.slice(0, pageSize) : entries;
        const next = pageSize > 0 && entries.length > pageSize ? entries[pageSize][0] : '';
        return {
            iterator: new MockIterator(page),
            metadata: {bookmark: next, fetchedRecordsCount: page.length},
        };
    }

    async getStateByRange(startKey, endKey) {
        return new MockIterator(this._range(startKey, endKey));
    }

    async getStateByRangeWithPagination(startKey, endKey, pageSize, bookmark) {
        return this._page(startKey, endKey, pageSize, bookmark);
    }

    async getStateByPartialCompositeKey(objectType, attributes) {
        const prefix = this.createCompositeKey(objectType, attributes);
        return new MockIterator(this._range(prefix, prefix + MAX_RUNE));
    }

    async getStateByPartialCompositeKeyWithPagination(objectType, attributes, pageSize, bookmark) {
        const prefix = this.createCompositeKey(objectType, attributes);
        return this._page(prefix, prefix + MAX_RUNE, pageSize, bookmark);
    }

    setEvent(name, payload) {
        this.event = {name, payload: Buffer.from(payload)};
    }

    getTxID() {
        return this.txId;
    }

    getChannelID() {
        return this.channel;
    }

    getTxTimestamp() {
        return {seconds: Long.fromNumber(this.seconds, true), nanos: 0};
    }

    // The same shape fabric-shim decodes: proposal.payload is a
    // ChaincodeProposalPayload whose input is a ChaincodeInvocationSpec.
    getSignedProposal() {
        const id = new peer.ChaincodeID();
        id.setName(this.chaincodeName);
        const spec = new peer.ChaincodeSpec();
        spec.setChaincodeId(id);
        spec.setInput(new peer.ChaincodeInput());
        const invocation = new peer.ChaincodeInvocationSpec();
        invocation.setChaincodeSpec(spec);
        const payload = new peer.ChaincodeProposalPayload();
        payload.setInput(invocation.serializeBinary());
        return {signature: Buffer.alloc(0), proposal: {payload}};
    }
}

// An identity as ctx.clientIdentity presents it.
function identity(mspId, commonName) {
    return {
        getMSPID: () => mspId,
        getID: () => `x509::/CN=${commonName}::/CN=ca.${mspId}`,
    };
}

class MockLedger {
    constructor({channel = 'mychannel', chaincodeName = 'tcbridge', seconds = 1_700_000_000} = {}) {
        this.state = new Map();
        this.events = [];
        this.channel = channel;
        this.chaincodeName = chaincodeName;
        this.seconds = seconds;
        this.txCount = 0;
    }

    // Runs one transaction: commits its writes and event only when it succeeds.
    async invoke(who, fn, {seconds = this.seconds, chaincodeName = this.chaincodeName} = {}) {
        const stub = new MockStub(this, {
            txId: `tx${++this.txCount}`, seconds, channel: this.channel, chaincodeName,
        });
        const ctx = {stub, clientIdentity: who};
        const result = await fn(ctx);
        for (const [key, value] of stub.writes) {
            if (value === null) {
                this.state.delete(key);
            } else {
                this.state.set(key, value);
            }
        }
        if (stub.event) {
            this.events.push({name: stub.event.name, payload: JSON.parse(stub.event.payload.toString('utf8'))});
        }
        return typeof result === 'string' ? JSON.parse(result) : result;
    }

    lastEvent() {
        return this.events[this.events.length - 1];
    }
}

const SECP256K1_N = BigInt('0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141');

function derInteger(value) {
    let hex = value.toString(16);
    if (hex.length % 2) {
        hex = '0' + hex;
    }
    let bytes = Buffer.from(hex, 'hex');
    if (bytes[0] & 0x80) {
        bytes = Buffer.concat([Buffer.from([0]), bytes]);
    }
    return Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]);
}

function derSignature(r, s) {
    const body = Buffer.concat([derInteger(r), derInteger(s)]);
    return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

function derParts(der) {
    const rLength = der[3];
    const r = BigInt('0x' + der.subarray(4, 4 + rLength).toString('hex'));
    const s = BigInt('0x' + der.subarray(6 + rLength).toString('hex'));
    return [r, s];
}

// A fresh secp256k1 worker key: sign(preimage) gives a low-s DER signature.
function workerKey() {
    const {privateKey, publicKey} = crypto.generateKeyPairSync('ec', {namedCurve: 'secp256k1'});
    return {
        pem: publicKey.export({type: 'spki', format: 'pem'}),
        sign(preimage) {
            const der = crypto.sign('sha256', preimage, {key: privateKey, dsaEncoding: 'der'});
            const [r, s] = derParts(der);
            return derSignature(r, s > SECP256K1_N / 2n ? SECP256K1_N - s : s);
        },
    };
}

module.exports = {MockLedger, MockStub, identity, workerKey, derParts, derSignature, SECP256K1_N};
