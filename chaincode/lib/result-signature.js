'use strict';

// The Fabric result signature, as defined once in
// enclave_bridge/result_signature.py and frozen in
// contracts/golden/result-signature.json: DER ECDSA secp256k1 over SHA-256 of
//   tag ‖ len(channel) channel ‖ len(chaincode) chaincode ‖ len(id) id
//   ‖ requestHash(32) ‖ responseHash(32) ‖ status(uint32, big-endian)
// with 4-byte big-endian length prefixes, so field boundaries cannot shift.

const crypto = require('crypto');

const FABRIC_TAG = Buffer.from('tcbridge/fabric-result/v1', 'utf8');
const SECP256K1_N = BigInt('0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141');
const MAX_STATUS = 0xffffffff;

function lengthPrefixed(text) {
    const raw = Buffer.from(text, 'utf8');
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(raw.length);
    return Buffer.concat([prefix, raw]);
}

function sha256(bytes) {
    return crypto.createHash('sha256').update(bytes).digest();
}

function fabricPreimage(channel, chaincode, workOrderId, requestHash, responseHash, status) {
    if (requestHash.length !== 32 || responseHash.length !== 32) {
        throw new Error('request and response hashes must be 32 bytes');
    }
    if (!Number.isInteger(status) || status < 0 || status > MAX_STATUS) {
        throw new Error(`status ${status} is not a 32-bit unsigned integer`);
    }
    const statusBytes = Buffer.alloc(4);
    statusBytes.writeUInt32BE(status);
    return Buffer.concat([
        FABRIC_TAG,
        lengthPrefixed(channel),
        lengthPrefixed(chaincode),
        lengthPrefixed(workOrderId),
        requestHash,
        responseHash,
        statusBytes,
    ]);
}

// Reads r and s from a strict DER ECDSA signature; null when it is not one.
function derIntegers(der) {
    if (der.length < 8 || der[0] !== 0x30 || der[1] !== der.length - 2) {
        return null;
    }
    const values = [];
    let at = 2;
    for (let i = 0; i < 2; i++) {
        if (der[at] !== 0x02) {
            return null;
        }
        const length = der[at + 1];
        const body = der.subarray(at + 2, at + 2 + length);
        if (length === 0 || length > 33 || body.length !== length) {
            return null;
        }
        values.push(BigInt('0x' + body.toString('hex')));
        at += 2 + length;
    }
    return at === der.length ? values : null;
}

// A secp256k1 public key from PEM (SubjectPublicKeyInfo); throws on anything else.
function parseVerifyingKey(pem) {
    let key;
    try {
        key = crypto.createPublicKey(pem);
    } catch (err) {
        throw new Error(`verifying key is not a PEM public key: ${err.message}`);
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails.namedCurve !== 'secp256k1') {
        throw new Error('verifying key must be an EC public key on secp256k1');
    }
    return key;
}

// True when `signature` (DER, low s) is the worker's signature over `preimage`.
// High-s twins are refused, as the Ethereum registry refuses them.
function verifyResultSignature(verifyingKeyPem, preimage, signature) {
    const integers = derIntegers(signature);
    if (integers === null) {
        return false;
    }
    const [r, s] = integers;
    if (r === 0n || s === 0n || r >= SECP256K1_N || s > SECP256K1_N / 2n) {
        return false;
    }
    return crypto.verify('sha256', preimage, {key: parseVerifyingKey(verifyingKeyPem), dsaEncoding: 'der'}, signature);
}

module.exports = {fabricPreimage, parseVerifyingKey, sha256, verifyResultSignature, MAX_STATUS};
