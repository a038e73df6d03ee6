'use strict';

// Where each record lives in world state, and who a caller is.
//
// Every record has its own key, so unrelated work orders and workers never
// write the same key (no counters, no shared lists): concurrent transactions
// conflict (MVCC) only when they really touch the same order or worker.

const {peer} = require('@hyperledger/fabric-protos');
const {sha256} = require('./result-signature');

const WORKER = 'tcb.worker';
const WORKER_INDEX = 'tcb.workerIndex';
const ORDER = 'tcb.order';
const ORDER_KEY_TAG = 'tcbridge/fabric-order-key/v1';

// Composite-key attributes must be non-empty, so a lookup field that means
// "any" is stored as ANY, and real values carry a prefix that ANY lacks.
const ANY = '*';

function workerKey(stub, workerId) {
    return stub.createCompositeKey(WORKER, [workerId]);
}

function orderStateKey(stub, orderKey) {
    return stub.createCompositeKey(ORDER, [orderKey]);
}

function indexAttributes(workerType, organizationId, applicationTypeId) {
    return [
        String(workerType),
        organizationId ? `o:${organizationId}` : ANY,
        applicationTypeId ? `a:${applicationTypeId}` : ANY,
    ];
}

// Every lookup filter that matches this worker, one index key each, so a
// lookup with any combination of wildcards is one range scan, in pages.
function workerIndexKeys(stub, worker) {
    const keys = new Set();
    for (const type of [worker.workerType, 0]) {
        for (const org of [worker.organizationId, '']) {
            for (const app of [...worker.applicationTypeIds, '']) {
                const attributes = indexAttributes(type, org, app);
                keys.add(stub.createCompositeKey(WORKER_INDEX, [...attributes, worker.workerId]));
            }
        }
    }
    return [...keys];
}

// The caller as Fabric authenticated it: MSP id plus the X.509 identity
// (subject and issuer) that signed the proposal.
function callerOf(ctx) {
    return {mspId: ctx.clientIdentity.getMSPID(), id: ctx.clientIdentity.getID()};
}

function sameIdentity(a, b) {
    return a.mspId === b.mspId && a.id === b.id;
}

// The order key binds the submitter's identity to its work-order id, so no
// identity can squat another's id: hex SHA-256 over length-prefixed fields.
function orderKeyOf(caller, workOrderId) {
    const parts = [ORDER_KEY_TAG, caller.mspId, caller.id, workOrderId].map((text) => {
        const raw = Buffer.from(text, 'utf8');
        const prefix = Buffer.alloc(4);
        prefix.writeUInt32BE(raw.length);
        return Buffer.concat([prefix, raw]);
    });
    return sha256(Buffer.concat(parts)).toString('hex');
}

// The chaincode's own name: the one the client's proposal invoked (the
// ChaincodeInvocationSpec inside the signed proposal). Fabric routes a
// proposal only to the chaincode of that name on the channel, so every
// endorser derives the same name, and a signature made for another
// chaincode name cannot be accepted here.
function chaincodeNameOf(stub) {
    const signed = stub.getSignedProposal();
    if (!signed || !signed.proposal || !signed.proposal.payload) {
        throw new Error('the transaction carries no signed proposal to read the chaincode name from');
    }
    const spec = peer.ChaincodeInvocationSpec.deserializeBinary(signed.proposal.payload.getInput_asU8());
    const name = spec.getChaincodeSpec() && spec.getChaincodeSpec().getChaincodeId()
        ? spec.getChaincodeSpec().getChaincodeId().getName()
        : '';
    if (!name) {
        throw new Error('the signed proposal names no chaincode');
    }
    return name;
}

function txSeconds(stub) {
    const timestamp = stub.getTxTimestamp();
    const seconds = timestamp.seconds;
    return typeof seconds === 'number' ? seconds : Number(seconds.toString());
}

module.exports = {
    WORKER_INDEX,
    callerOf,
    chaincodeNameOf,
    indexAttributes,
    orderKeyOf,
    orderStateKey,
    sameIdentity,
    txSeconds,
    workerIndexKeys,
    workerKey,
};
