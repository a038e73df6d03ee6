'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const {TcbridgeRegistry, LOOKUP_PAGE_SIZE} = require('../lib/registry');
const {fabricPreimage, sha256, verifyResultSignature} = require('../lib/result-signature');
const {MockLedger, identity, workerKey, derParts, derSignature, SECP256K1_N} = require('../test-support/mock-ledger');

const GOLDEN = JSON.parse(fs.readFileSync(
    path.join(__dirname, '..', '..', 'contracts', 'golden', 'result-signature.json'), 'utf8'));
const GOLDEN_REQUEST = Buffer.from(GOLDEN.ethereum.requestHex.slice(2), 'hex').toString('utf8');
const GOLDEN_RESPONSE = Buffer.from(GOLDEN.ethereum.responseHex.slice(2), 'hex').toString('utf8');

const OPERATOR = identity('Org1MSP', 'operator');
const OTHER_OPERATOR = identity('Org1MSP', 'intruder');
const SAME_NAME_OTHER_MSP = identity('Org2MSP', 'operator');
const REQUESTER = identity('Org1MSP', 'requester');
const OTHER_REQUESTER = identity('Org2MSP', 'requester');
const RELAYER = identity('Org1MSP', 'relayer');

const NOW = 1_700_000_000;

function setup() {
    const ledger = new MockLedger({seconds: NOW});
    const cc = new TcbridgeRegistry();
    const call = (who, fn, ...args) => ledger.invoke(who, (ctx) => cc[fn](ctx, ...args));
    const callAt = (seconds, who, fn, ...args) => ledger.invoke(who, (ctx) => cc[fn](ctx, ...args), {seconds});
    return {ledger, cc, call, callAt};
}

async function withWorker(options = {}) {
    const env = setup();
    const key = options.key || workerKey();
    await env.call(OPERATOR, 'workerRegister', 'worker-1', '1', 'org-a', '["app-x","app-y"]', 'details', key.pem);
    return {...env, key};
}

function signResult(key, {workOrderId, request, response, status, channel = 'mychannel', chaincode = 'tcbridge'}) {
    const preimage = fabricPreimage(channel, chaincode, workOrderId, sha256(Buffer.from(request)),
        sha256(Buffer.from(response)), status);
    return key.sign(preimage).toString('hex');
}

async function submitted(options) {
    const env = await withWorker(options);
    const {orderKey} = await env.call(REQUESTER, 'workOrderSubmit', 'wo-1', 'worker-1', 'req-1', 'the request',
        String(NOW + 100));
    return {...env, orderKey};
}

test('the golden Fabric preimage, digest and signature match the frozen definition', () => {
    const f = GOLDEN.fabric;
    const preimage = fabricPreimage(f.channel, f.chaincode, f.workOrderId, Buffer.from(f.requestHashHex, 'hex'),
        Buffer.from(f.responseHashHex, 'hex'), f.status);

    assert.equal(preimage.toString('hex'), f.preimageHex);
    assert.equal(sha256(preimage).toString('hex'), f.digestHex);
    assert.equal(verifyResultSignature(GOLDEN.publicKeyPem, preimage, Buffer.from(f.signatureDerHex, 'hex')), true);
});

test('the high-s twin of the golden signature is refused', () => {
    const f = GOLDEN.fabric;
    const preimage = Buffer.from(f.preimageHex, 'hex');
    const [r, s] = derParts(Buffer.from(f.signatureDerHex, 'hex'));
    const twin = derSignature(r, SECP256K1_N - s);

    assert.equal(crypto.verify('sha256', preimage, {key: GOLDEN.publicKeyPem, dsaEncoding: 'der'}, twin), true);
    assert.equal(verifyResultSignature(GOLDEN.publicKeyPem, preimage, twin), false);
});

test('a work order completes with the golden signature end to end', async () => {
    const {call, ledger} = setup();
    const f = GOLDEN.fabric;
    await call(OPERATOR, 'workerRegister', 'golden-worker', '1', 'org', '[]', '', GOLDEN.publicKeyPem);
    const {orderKey} = await call(REQUESTER, 'workOrderSubmit', f.workOrderId, 'golden-worker', 'r', GOLDEN_REQUEST,
        String(NOW + 60));

    await call(RELAYER, 'workOrderComplete', orderKey, String(f.status), GOLDEN_RESPONSE, f.signatureDerHex);

    const order = await call(RELAYER, 'workOrderGet', orderKey);
    assert.equal(order.state, 2);
    assert.equal(order.requestHash, f.requestHashHex);
    assert.equal(order.responseHash, f.responseHashHex);
    assert.deepEqual(ledger.lastEvent().payload.orders[0].response, GOLDEN_RESPONSE);
});

test('workerRegister stores the worker, owned by the caller, and emits WorkerRegistered', async () => {
    const {call, ledger, key} = await withWorker();

    const worker = await call(RELAYER, 'workerRetrieve', 'worker-1');
    assert.equal(worker.status, 1);
    assert.equal(worker.workerType, 1);
    assert.deepEqual(worker.applicationTypeIds, ['app-x', 'app-y']);
    assert.equal(worker.verifyingKeyPem, key.pem);
    assert.deepEqual(worker.owner, {mspId: 'Org1MSP', id: OPERATOR.getID()});
    assert.equal(ledger.lastEvent().name, 'WorkerRegistered');
});

test('a duplicate worker registration is rejected, even by its owner', async () => {
    const {call, key} = await withWorker();

    await assert.rejects(call(OPERATOR, 'workerRegister', 'worker-1', '1', 'org-a', '[]', '', key.pem),
        /WorkerAlreadyRegistered/);
    await assert.rejects(call(OTHER_OPERATOR, 'workerRegister', 'worker-1', '1', 'org-b', '[]', '', key.pem),
        /WorkerAlreadyRegistered/);
});

test('workerRegister refuses keys not on secp256k1 and malformed arguments', async () => {
    const {call} = setup();
    const p256 = crypto.generateKeyPairSync('ec', {namedCurve: 'P-256'}).publicKey.export({type: 'spki', format: 'pem'});
    const good = workerKey().pem;

    await assert.rejects(call(OPERATOR, 'workerRegister', 'w', '1', 'o', '[]', '', p256), /InvalidVerifyingKey/);
    await assert.rejects(call(OPERATOR, 'workerRegister', 'w', '1', 'o', '[]', '', 'not a key'), /InvalidVerifyingKey/);
    await assert.rejects(call(OPERATOR, 'workerRegister', 'w', '1', 'o', '{"a":1}', '', good), /applicationTypeIds/);
    await assert.rejects(call(OPERATOR, 'workerRegister', 'w', '0', 'o', '[]', '', good), /workerType/);
    await assert.rejects(call(OPERATOR, 'workerRegister', '', '1', 'o', '[]', '', good), /workerId/);
});

test('only the owner (same MSP and same identity) updates a worker', async () => {
    const {call, ledger} = await withWorker();
    const newKey = workerKey();

    await assert.rejects(call(OTHER_OPERATOR, 'workerUpdate', 'worker-1', 'x', newKey.pem), /NotWorkerOwner/);
    await assert.rejects(call(SAME_NAME_OTHER_MSP, 'workerUpdate', 'worker-1', 'x', newKey.pem), /NotWorkerOwner/);
    await assert.rejects(call(OTHER_OPERATOR, 'workerSetStatus', 'worker-1', '4'), /NotWorkerOwner/);
    await call(OPERATOR, 'workerUpdate', 'worker-1', 'new details', newKey.pem);

    const worker = await call(RELAYER, 'workerRetrieve', 'worker-1');
    assert.equal(worker.details, 'new details');
    assert.equal(worker.verifyingKeyPem, newKey.pem);
    assert.equal(ledger.lastEvent().name, 'WorkerUpdated');
});

test('workerSetStatus accepts 1 to 4 only and unknown workers are reported', async () => {
    const {call, ledger} = await withWorker();

    await assert.rejects(call(OPERATOR, 'workerSetStatus', 'worker-1', '5'), /InvalidWorkerStatus/);
    await assert.rejects(call(OPERATOR, 'workerSetStatus', 'worker-1', '0'), /InvalidWorkerStatus/);
    await assert.rejects(call(OPERATOR, 'workerSetStatus', 'nobody', '2'), /UnknownWorker/);
    await assert.rejects(call(OPERATOR, 'workerRetrieve', 'nobody'), /UnknownWorker/);
    await call(OPERATOR, 'workerSetStatus', 'worker-1', '3');

    assert.equal((await call(RELAYER, 'workerRetrieve', 'worker-1')).status, 3);
    assert.deepEqual(ledger.lastEvent(), {name: 'WorkerStatusChanged', payload: {workerId: 'worker-1', status: 3}});
});

test('workerLookUp filters by type, organization and application, 0 and empty meaning any', async () => {
    const {call} = setup();
    const pem = workerKey().pem;
    await call(OPERATOR, 'workerRegister', 'a', '1', 'org1', '["x"]', '', pem);
    await call(OPERATOR, 'workerRegister', 'b', '2', 'org1', '["x","y"]', '', pem);
    await call(OPERATOR, 'workerRegister', 'c', '1', 'org2', '["y"]', '', pem);

    const ids = async (...filter) => (await call(RELAYER, 'workerLookUp', ...filter)).ids.sort();
    assert.deepEqual(await ids('0', '', ''), ['a', 'b', 'c']);
    assert.deepEqual(await ids('1', '', ''), ['a', 'c']);
    assert.deepEqual(await ids('0', 'org1', ''), ['a', 'b']);
    assert.deepEqual(await ids('0', '', 'y'), ['b', 'c']);
    assert.deepEqual(await ids('2', 'org1', 'x'), ['b']);
    assert.deepEqual(await ids('3', '', ''), []);
});

test('workerLookUpNext pages through every match with bookmarks, then ends with an empty tag', async () => {
    const {call} = setup();
    const pem = workerKey().pem;
    const total = LOOKUP_PAGE_SIZE * 2 + 7;
    for (let i = 0; i < total; i++) {
        await call(OPERATOR, 'workerRegister', `w${String(i).padStart(3, '0')}`, '1', 'org', '["app"]', '', pem);
    }

    const seen = [];
    let page = await call(RELAYER, 'workerLookUp', '1', 'org', 'app');
    const sizes = [page.ids.length];
    seen.push(...page.ids);
    while (page.lookupTag) {
        page = await call(RELAYER, 'workerLookUpNext', '1', 'org', 'app', page.lookupTag);
        sizes.push(page.ids.length);
        seen.push(...page.ids);
    }

    assert.equal(page.totalCount, total);
    assert.deepEqual(sizes, [LOOKUP_PAGE_SIZE, LOOKUP_PAGE_SIZE, 7]);
    assert.equal(new Set(seen).size, total);
});

test('workOrderSubmit stores the request hash and emits the full request in a one-order array', async () => {
    const {call, ledger, orderKey, key} = await submitted();

    const order = await call(RELAYER, 'workOrderGet', orderKey);
    assert.equal(order.state, 1);
    assert.equal(order.requestHash, sha256(Buffer.from('the request')).toString('hex'));
    assert.equal(order.verifyingKeyPem, key.pem);
    assert.equal(order.deadline, NOW + 100);
    assert.deepEqual(ledger.lastEvent(), {
        name: 'WorkOrderSubmitted',
        payload: {orders: [{orderKey, workOrderId: 'wo-1', workerId: 'worker-1', requesterId: 'req-1',
            requester: {mspId: 'Org1MSP', id: REQUESTER.getID()}, request: 'the request'}]},
    });
});

test('a duplicate work-order id from the same identity is rejected', async () => {
    const {call} = await submitted();

    await assert.rejects(call(REQUESTER, 'workOrderSubmit', 'wo-1', 'worker-1', 'req-1', 'again', String(NOW + 100)),
        /DuplicateOrder/);
});

test('another identity cannot squat a work-order id: the same id gives it its own order', async () => {
    const {call, orderKey} = await submitted();

    const other = await call(OTHER_REQUESTER, 'workOrderSubmit', 'wo-1', 'worker-1', 'req-2', 'other request',
        String(NOW + 100));

    assert.notEqual(other.orderKey, orderKey);
    assert.equal((await call(RELAYER, 'workOrderGet', orderKey)).requestHash,
        sha256(Buffer.from('the request')).toString('hex'));
});

test('workOrderSubmit requires a known, active worker and a future deadline', async () => {
    const {call} = await withWorker();

    await assert.rejects(call(REQUESTER, 'workOrderSubmit', 'a', 'nobody', 'r', 'q', String(NOW + 10)), /UnknownWorker/);
    await assert.rejects(call(REQUESTER, 'workOrderSubmit', 'b', 'worker-1', 'r', 'q', String(NOW)),
        /DeadlineNotInFuture/);
    await call(OPERATOR, 'workerSetStatus', 'worker-1', '2');
    await assert.rejects(call(REQUESTER, 'workOrderSubmit', 'c', 'worker-1', 'r', 'q', String(NOW + 10)),
        /WorkerNotActive/);
});

test('workOrderComplete accepts the worker signature once and emits WorkOrderCompleted', async () => {
    const {call, ledger, orderKey, key} = await submitted();
    const sig = signResult(key, {workOrderId: 'wo-1', request: 'the request', response: 'result', status: 0});

    await call(RELAYER, 'workOrderComplete', orderKey, '0', 'result', sig);

    assert.deepEqual(ledger.lastEvent(), {name: 'WorkOrderCompleted', payload: {orders: [
        {orderKey, workOrderId: 'wo-1', workerId: 'worker-1', status: 0, response: 'result'}]}});
    const order = await call(RELAYER, 'workOrderGet', orderKey);
    assert.equal(order.state, 2);
    assert.equal(order.completedAt, NOW);
    await assert.rejects(call(RELAYER, 'workOrderComplete', orderKey, '0', 'result', sig), /already-completed/);
});

test('a signature for other bytes, status, channel or chaincode, or by another key, is refused', async () => {
    const {call, orderKey, key} = await submitted();
    const base = {workOrderId: 'wo-1', request: 'the request', response: 'result', status: 0};
    const attempts = [
        signResult(key, {...base, response: 'other'}),
        signResult(key, {...base, status: 5}),
        signResult(key, {...base, channel: 'otherchannel'}),
        signResult(key, {...base, chaincode: 'othercc'}),
        signResult(workerKey(), base),
        'zz',
    ];

    for (const sig of attempts) {
        await assert.rejects(call(RELAYER, 'workOrderComplete', orderKey, '0', 'result', sig), /bad-signature|malformed/);
    }
    assert.equal((await call(RELAYER, 'workOrderGet', orderKey)).state, 1);
});

test('the chaincode name comes from the invoked proposal, so another name fails the signature', async () => {
    const {ledger, cc, orderKey, key} = await submitted();
    const sig = signResult(key, {workOrderId: 'wo-1', request: 'the request', response: 'r', status: 0});

    await assert.rejects(ledger.invoke(RELAYER, (ctx) => cc.workOrderComplete(ctx, orderKey, '0', 'r', sig),
        {chaincodeName: 'renamed'}), /bad-signature/);
});

test('the verifying key is the one stored at submit: a later key change does not redirect the order', async () => {
    const {call, orderKey, key} = await submitted();
    const newKey = workerKey();
    await call(OPERATOR, 'workerUpdate', 'worker-1', '', newKey.pem);
    const result = {workOrderId: 'wo-1', request: 'the request', response: 'r', status: 0};

    await assert.rejects(call(RELAYER, 'workOrderComplete', orderKey, '0', 'r', signResult(newKey, result)),
        /bad-signature/);
    await call(RELAYER, 'workOrderComplete', orderKey, '0', 'r', signResult(key, result));
});

test('workOrderCancel: requester only, after the deadline, only while pending; then no completion', async () => {
    const {call, callAt, ledger, orderKey, key} = await submitted();
    const later = NOW + 101;

    await assert.rejects(callAt(later, OTHER_REQUESTER, 'workOrderCancel', orderKey), /NotRequester/);
    await assert.rejects(callAt(NOW + 100, REQUESTER, 'workOrderCancel', orderKey), /DeadlineNotPassed/);
    await assert.rejects(call(REQUESTER, 'workOrderCancel', 'missing'), /UnknownOrder/);
    await callAt(later, REQUESTER, 'workOrderCancel', orderKey);

    assert.equal(ledger.lastEvent().name, 'WorkOrderCancelled');
    assert.equal((await call(RELAYER, 'workOrderGet', orderKey)).state, 3);
    const sig = signResult(key, {workOrderId: 'wo-1', request: 'the request', response: 'r', status: 0});
    await assert.rejects(call(RELAYER, 'workOrderComplete', orderKey, '0', 'r', sig), /cancelled/);
    await assert.rejects(callAt(later, REQUESTER, 'workOrderCancel', orderKey), /NotPending/);
});

test('workOrderCompleteBatch completes good items and reports each skipped one with its reason in one event', async () => {
    const {call, callAt, ledger, key} = await withWorker();
    const keysOf = {};
    for (const id of ['ok', 'done', 'gone', 'forged', 'twice']) {
        keysOf[id] = (await call(REQUESTER, 'workOrderSubmit', id, 'worker-1', 'r', `request ${id}`,
            String(NOW + 10))).orderKey;
    }
    const item = (id, response = 'resp') => ({orderKey: keysOf[id], status: 0, response,
        signatureHex: signResult(key, {workOrderId: id, request: `request ${id}`, response, status: 0})});
    await call(RELAYER, 'workOrderComplete', keysOf.done, '0', 'resp', item('done').signatureHex);
    await callAt(NOW + 11, REQUESTER, 'workOrderCancel', keysOf.gone);
    const events = ledger.events.length;

    const result = await call(RELAYER, 'workOrderCompleteBatch', JSON.stringify([
        item('ok'),
        {orderKey: 'missing', status: 0, response: 'x', signatureHex: '00'},
        item('done'),
        item('gone'),
        {...item('forged'), response: 'tampered'},
        item('twice'),
        item('twice'),
        {orderKey: 'bad-status', status: -1, response: 'x', signatureHex: '00'},
        null,
    ]));

    assert.equal(ledger.events.length, events + 1);
    const {name, payload} = ledger.lastEvent();
    assert.equal(name, 'WorkOrderCompleted');
    assert.deepEqual(payload.orders.map((o) => o.workOrderId), ['ok', 'twice']);
    assert.deepEqual(payload.skipped, [
        {orderKey: 'missing', reason: 'unknown-order'},
        {orderKey: keysOf.done, reason: 'already-completed'},
        {orderKey: keysOf.gone, reason: 'cancelled'},
        {orderKey: keysOf.forged, reason: 'bad-signature'},
        {orderKey: keysOf.twice, reason: 'repeated-in-batch'},
        {orderKey: 'bad-status', reason: 'malformed-item'},
        {orderKey: '', reason: 'malformed-item'},
    ]);
    assert.deepEqual(result.completed, [keysOf.ok, keysOf.twice]);
    assert.equal((await call(RELAYER, 'workOrderGet', keysOf.forged)).state, 1);
});

test('a batch that is not a JSON array fails as a whole', async () => {
    const {call} = setup();

    await assert.rejects(call(RELAYER, 'workOrderCompleteBatch', '{"orderKey":"x"}'), /JSON array/);
});

test('a failed transaction leaves no writes and no event behind', async () => {
    const {call, ledger} = await withWorker();
    const before = new Map(ledger.state);
    const events = ledger.events.length;

    await assert.rejects(call(REQUESTER, 'workOrderSubmit', 'x', 'nobody', 'r', 'q', String(NOW + 5)));

    assert.deepEqual(ledger.state, before);
    assert.equal(ledger.events.length, events);
});

test('workOrderGet reports an unknown order', async () => {
    const {call} = setup();

    await assert.rejects(call(RELAYER, 'workOrderGet', 'nope'), /UnknownOrder/);
});
