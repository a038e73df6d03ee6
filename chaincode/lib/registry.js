'use strict';

// tcbridge's worker registry and work-order registry on Hyperledger Fabric:
// the same functions, states and checks as contracts/src/WorkerRegistry.sol
// and WorkOrderRegistry.sol, adapted to Fabric identities and events.
//
// Every transaction sets at most ONE chaincode event: Fabric keeps only the
// last event a transaction sets, so batch results travel as arrays.
// Reads see committed state only (Fabric has no read-your-writes inside a
// transaction), which the batch completion accounts for.
// Time is the transaction timestamp, never the clock, so every endorser
// computes the same result.

const {Contract} = require('fabric-contract-api');

const keys = require('./keys');
const {fabricPreimage, parseVerifyingKey, sha256, verifyResultSignature, MAX_STATUS} = require('./result-signature');

const WORKER_ACTIVE = 1;
const WORKER_STATUSES = new Set([1, 2, 3, 4]);

const ORDER_PENDING = 1;
const ORDER_COMPLETED = 2;
const ORDER_CANCELLED = 3;

// Workers per lookup page; the same page size as the Solidity registry's paging.
const LOOKUP_PAGE_SIZE = 50;

// Reasons a batch item is skipped (the Solidity batch's reason codes, named).
const SKIP = {
    malformed: 'malformed-item',
    unknown: 'unknown-order',
    completed: 'already-completed',
    cancelled: 'cancelled',
    badSignature: 'bad-signature',
    repeated: 'repeated-in-batch',
};

class RegistryError extends Error {
    constructor(code, message) {
        super(`${code}: ${message}`);
        this.name = 'RegistryError';
        this.code = code;
    }
}

class Skip extends Error {
    constructor(reason, message) {
        super(message);
        this.reason = reason;
    }
}

function requireText(name, value) {
    if (typeof value !== 'string' || value.length === 0) {
        throw new RegistryError('InvalidArgument', `${name} must be a non-empty string`);
    }
    return value;
}

function parseInteger(name, value, min, max) {
    const text = String(value);
    if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
        throw new RegistryError('InvalidArgument', `${name} must be an integer in [${min}, ${max}], got ${text}`);
    }
    return Number(text);
}

function parseHex(name, value) {
    const text = String(value).replace(/^0x/i, '');
    if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
        throw new RegistryError('InvalidArgument', `${name} must be hex`);
    }
    return Buffer.from(text, 'hex');
}

function checkKey(pem) {
    try {
        parseVerifyingKey(pem);
    } catch (err) {
        throw new RegistryError('InvalidVerifyingKey', err.message);
    }
    return pem;
}

async function readJson(stub, key) {
    const raw = await stub.getState(key);
    return raw && raw.length > 0 ? JSON.parse(raw.toString('utf8')) : null;
}

async function writeJson(stub, key, value) {
    await stub.putState(key, Buffer.from(JSON.stringify(value), 'utf8'));
}

function emit(stub, name, payload) {
    stub.setEvent(name, Buffer.from(JSON.stringify(payload), 'utf8'));
}

class TcbridgeRegistry extends Contract {
    constructor() {
        super('tcbridge');
    }

    // ---- worker registry -------------------------------------------------

    async workerRegister(ctx, workerId, workerType, organizationId, applicationTypeIds, details, verifyingKeyPem) {
        requireText('workerId', workerId);
        const type = parseInteger('workerType', workerType, 1, Number.MAX_SAFE_INTEGER);
        let appIds;
        try {
            appIds = JSON.parse(applicationTypeIds);
        } catch {
            appIds = null;
        }
        if (!Array.isArray(appIds) || !appIds.every((id) => typeof id === 'string' && id.length > 0)) {
            throw new RegistryError('InvalidArgument', 'applicationTypeIds must be a JSON array of non-empty strings');
        }
        checkKey(verifyingKeyPem);
        const stub = ctx.stub;
        const key = keys.workerKey(stub, workerId);
        if (await readJson(stub, key)) {
            throw new RegistryError('WorkerAlreadyRegistered', `worker ${workerId} is already registered`);
        }

        const worker = {
            workerId,
            workerType: type,
            organizationId: organizationId || '',
            applicationTypeIds: [...new Set(appIds)],
            details: details || '',
            verifyingKeyPem,
            status: WORKER_ACTIVE,
            owner: keys.callerOf(ctx),
            registeredAt: keys.txSeconds(stub),
        };
        await writeJson(stub, key, worker);
        for (const indexKey of keys.workerIndexKeys(stub, worker)) {
            await stub.putState(indexKey, Buffer.from(workerId, 'utf8'));
        }
        emit(stub, 'WorkerRegistered', {workerId, workerType: type, organizationId: worker.organizationId,
            applicationTypeIds: worker.applicationTypeIds, owner: worker.owner});

        return JSON.stringify({workerId});
    }

    async workerUpdate(ctx, workerId, details, verifyingKeyPem) {
        checkKey(verifyingKeyPem);
        const {key, worker} = await this._ownedWorker(ctx, workerId);

        worker.details = details || '';
        worker.verifyingKeyPem = verifyingKeyPem;
        await writeJson(ctx.stub, key, worker);
        emit(ctx.stub, 'WorkerUpdated', {workerId});

        return JSON.stringify({workerId});
    }

    async workerSetStatus(ctx, workerId, status) {
        const value = Number(status);
        if (!WORKER_STATUSES.has(value) || String(value) !== String(status)) {
            throw new RegistryError('InvalidWorkerStatus', `status must be 1, 2, 3 or 4, got ${status}`);
        }
        const {key, worker} = await this._ownedWorker(ctx, workerId);

        worker.status = value;
        await writeJson(ctx.stub, key, worker);
        emit(ctx.stub, 'WorkerStatusChanged', {workerId, status: value});

        return JSON.stringify({workerId, status: value});
    }

    async workerRetrieve(ctx, workerId) {
        const worker = await readJson(ctx.stub, keys.workerKey(ctx.stub, requireText('workerId', workerId)));
        if (!worker) {
            throw new RegistryError('UnknownWorker', `no worker ${workerId}`);
        }
        return JSON.stringify(worker);
    }

    // First page of the workers matching the filter: workerType 0, an empty
    // organizationId or an empty applicationTypeId mean "any".
    async workerLookUp(ctx, workerType, organizationId, applicationTypeId) {
        return this._lookUpPage(ctx, workerType, organizationId, applicationTypeId, '');
    }

    // The page after the one that returned `lookupTag` (a ledger bookmark).
    async workerLookUpNext(ctx, workerType, organizationId, applicationTypeId, lookupTag) {
        requireText('lookupTag', lookupTag);
        return this._lookUpPage(ctx, workerType, organizationId, applicationTypeId, lookupTag);
    }

    async _lookUpPage(ctx, workerType, organizationId, applicationTypeId, bookmark) {
        const type = parseInteger('workerType', workerType || '0', 0, Number.MAX_SAFE_INTEGER);
        const attributes = keys.indexAttributes(type, organizationId, applicationTypeId);
        const stub = ctx.stub;

        const {iterator, metadata} = await stub.getStateByPartialCompositeKeyWithPagination(
            keys.WORKER_INDEX, attributes, LOOKUP_PAGE_SIZE, bookmark);
        const ids = [];
        for (let item = await iterator.next(); !item.done; item = await iterator.next()) {
            ids.push(Buffer.from(item.value.value).toString('utf8'));
        }
        await iterator.close();
        // Paged queries run only in read-only transactions, so counting the
        // whole match set here cannot make a write transaction conflict.
        let totalCount = 0;
        const all = await stub.getStateByPartialCompositeKey(keys.WORKER_INDEX, attributes);
        for (let item = await all.next(); !item.done; item = await all.next()) {
            totalCount++;
        }
        await all.close();

        const lookupTag = metadata && metadata.bookmark && ids.length === LOOKUP_PAGE_SIZE ? metadata.bookmark : '';
        return JSON.stringify({totalCount, lookupTag, ids});
    }

    async _ownedWorker(ctx, workerId) {
        const key = keys.workerKey(ctx.stub, requireText('workerId', workerId));
        const worker = await readJson(ctx.stub, key);
        if (!worker) {
            throw new RegistryError('UnknownWorker', `no worker ${workerId}`);
        }
        if (!keys.sameIdentity(worker.owner, keys.callerOf(ctx))) {
            throw new RegistryError('NotWorkerOwner', `worker ${workerId} belongs to another identity`);
        }
        return {key, worker};
    }

    // ---- work orders -----------------------------------------------------

    async workOrderSubmit(ctx, workOrderId, workerId, requesterId, request, deadline) {
        requireText('workOrderId', workOrderId);
        requireText('workerId', workerId);
        requireText('request', request);
        const stub = ctx.stub;
        const now = keys.txSeconds(stub);
        const deadlineAt = parseInteger('deadline', deadline, 0, Number.MAX_SAFE_INTEGER);
        if (deadlineAt <= now) {
            throw new RegistryError('DeadlineNotInFuture', `deadline ${deadlineAt} is not after the transaction time ${now}`);
        }
        const requester = keys.callerOf(ctx);
        const orderKey = keys.orderKeyOf(requester, workOrderId);
        const stateKey = keys.orderStateKey(stub, orderKey);
        if (await readJson(stub, stateKey)) {
            throw new RegistryError('DuplicateOrder', `work order ${workOrderId} was already submitted by this identity`);
        }
        const worker = await readJson(stub, keys.workerKey(stub, workerId));
        if (!worker) {
            throw new RegistryError('UnknownWorker', `no worker ${workerId}`);
        }
        if (worker.status !== WORKER_ACTIVE) {
            throw new RegistryError('WorkerNotActive', `worker ${workerId} has status ${worker.status}`);
        }

        // The key is copied now: a later key change cannot redirect this order.
        const order = {
            orderKey,
            workOrderId,
            workerId,
            requesterId: requesterId || '',
            requester,
            requestHash: sha256(Buffer.from(request, 'utf8')).toString('hex'),
            verifyingKeyPem: worker.verifyingKeyPem,
            state: ORDER_PENDING,
            submittedAt: now,
            deadline: deadlineAt,
            completedAt: 0,
            status: 0,
            responseHash: '',
        };
        await writeJson(stub, stateKey, order);
        emit(stub, 'WorkOrderSubmitted', {orders: [{orderKey, workOrderId, workerId,
            requesterId: order.requesterId, requester, request}]});

        return JSON.stringify({orderKey});
    }

    async workOrderComplete(ctx, orderKey, status, response, signatureHex) {
        let completed;
        try {
            completed = await this._complete(ctx, {orderKey, status, response, signatureHex});
        } catch (err) {
            if (err instanceof Skip) {
                throw new RegistryError(err.reason, err.message);
            }
            throw err;
        }
        emit(ctx.stub, 'WorkOrderCompleted', {orders: [completed]});

        return JSON.stringify({orderKey});
    }

    // itemsJson: a JSON array of {orderKey, status, response, signatureHex}.
    // Each item is checked on its own; one that cannot complete is reported
    // under "skipped" and the rest go on.
    async workOrderCompleteBatch(ctx, itemsJson) {
        let items;
        try {
            items = JSON.parse(itemsJson);
        } catch {
            items = null;
        }
        if (!Array.isArray(items)) {
            throw new RegistryError('InvalidArgument', 'itemsJson must be a JSON array');
        }
        const orders = [];
        const skipped = [];
        // getState does not see this transaction's own writes, so an order
        // repeated in the batch is caught here rather than completed twice.
        const seen = new Set();

        for (const item of items) {
            const orderKey = item && typeof item.orderKey === 'string' ? item.orderKey : '';
            try {
                if (seen.has(orderKey)) {
                    throw new Skip(SKIP.repeated, `order ${orderKey} appears more than once`);
                }
                seen.add(orderKey);
                orders.push(await this._complete(ctx, item || {}));
            } catch (err) {
                if (!(err instanceof Skip)) {
                    throw err;
                }
                skipped.push({orderKey, reason: err.reason});
            }
        }
        emit(ctx.stub, 'WorkOrderCompleted', {orders, skipped});

        return JSON.stringify({completed: orders.map((order) => order.orderKey), skipped});
    }

    async _complete(ctx, item) {
        let statusValue;
        let signature;
        try {
            requireText('orderKey', item.orderKey);
            statusValue = parseInteger('status', item.status, 0, MAX_STATUS);
            if (typeof item.response !== 'string') {
                throw new RegistryError('InvalidArgument', 'response must be a string');
            }
            signature = parseHex('signatureHex', item.signatureHex || '');
        } catch (err) {
            throw new Skip(SKIP.malformed, err.message);
        }
        const stub = ctx.stub;
        const stateKey = keys.orderStateKey(stub, item.orderKey);
        const order = await readJson(stub, stateKey);
        if (!order) {
            throw new Skip(SKIP.unknown, `no work order ${item.orderKey}`);
        }
        if (order.state === ORDER_COMPLETED) {
            throw new Skip(SKIP.completed, `work order ${item.orderKey} is already completed`);
        }
        if (order.state === ORDER_CANCELLED) {
            throw new Skip(SKIP.cancelled, `work order ${item.orderKey} was cancelled`);
        }
        const responseHash = sha256(Buffer.from(item.response, 'utf8'));
        const preimage = fabricPreimage(stub.getChannelID(), keys.chaincodeNameOf(stub), order.workOrderId,
            Buffer.from(order.requestHash, 'hex'), responseHash, statusValue);
        if (!verifyResultSignature(order.verifyingKeyPem, preimage, signature)) {
            throw new Skip(SKIP.badSignature, `the signature is not the worker's over this result`);
        }

        order.state = ORDER_COMPLETED;
        order.status = statusValue;
        order.responseHash = responseHash.toString('hex');
        order.completedAt = keys.txSeconds(stub);
        await writeJson(stub, stateKey, order);

        return {orderKey: order.orderKey, workOrderId: order.workOrderId, workerId: order.workerId,
            status: statusValue, response: item.response};
    }

    async workOrderGet(ctx, orderKey) {
        const order = await readJson(ctx.stub, keys.orderStateKey(ctx.stub, requireText('orderKey', orderKey)));
        if (!order) {
            throw new RegistryError('UnknownOrder', `no work order ${orderKey}`);
        }
        return JSON.stringify(order);
    }

    // Only the requester, only after the deadline, only while pending.
    async workOrderCancel(ctx, orderKey) {
        const stub = ctx.stub;
        const stateKey = keys.orderStateKey(stub, requireText('orderKey', orderKey));
        const order = await readJson(stub, stateKey);
        if (!order) {
            throw new RegistryError('UnknownOrder', `no work order ${orderKey}`);
        }
        if (!keys.sameIdentity(order.requester, keys.callerOf(ctx))) {
            throw new RegistryError('NotRequester', `only the requester may cancel work order ${orderKey}`);
        }
        if (order.state !== ORDER_PENDING) {
            throw new RegistryError('NotPending', `work order ${orderKey} is in state ${order.state}`);
        }
        const now = keys.txSeconds(stub);
        if (now <= order.deadline) {
            throw new RegistryError('DeadlineNotPassed', `deadline ${order.deadline} has not passed (now ${now})`);
        }

        order.state = ORDER_CANCELLED;
        order.completedAt = now;
        await writeJson(stub, stateKey, order);
        emit(stub, 'WorkOrderCancelled', {orders: [{orderKey, workOrderId: order.workOrderId, workerId: order.workerId}]});

        return JSON.stringify({orderKey});
    }
}

module.exports = {TcbridgeRegistry, RegistryError, SKIP, LOOKUP_PAGE_SIZE,
    ORDER_PENDING, ORDER_COMPLETED, ORDER_CANCELLED};
