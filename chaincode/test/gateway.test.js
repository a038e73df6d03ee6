'use strict';

// The development peer held to the real protocol: Hyperledger's own Node
// Gateway client evaluates, endorses, submits, waits for commit status and
// reads chaincode events through it.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const {connect, signers, hash} = require('@hyperledger/fabric-gateway');

const {fabricPreimage, sha256} = require('../lib/result-signature');
const {workerKey} = require('../test-support/mock-ledger');
const {available, startDevPeer} = require('../test-support/devpeer');

const decoder = new TextDecoder();

function gatewayFor(client, identity, signingKey) {
    return connect({
        client,
        identity: {mspId: identity.mspId, credentials: fs.readFileSync(identity.certPath)},
        signer: signers.newPrivateKeySigner(signingKey || crypto.createPrivateKey(fs.readFileSync(identity.keyPath))),
        hash: hash.sha256,
        evaluateOptions: () => ({deadline: Date.now() + 10000}),
        endorseOptions: () => ({deadline: Date.now() + 10000}),
        submitOptions: () => ({deadline: Date.now() + 10000}),
        commitStatusOptions: () => ({deadline: Date.now() + 20000}),
    });
}

test('the official Fabric Gateway client works against the development peer', {skip: !available() && 'no .venv'},
    async (t) => {
        const peer = await startDevPeer();
        const client = new grpc.Client(peer.info.gatewayAddress, grpc.credentials.createInsecure());
        const gateway = gatewayFor(client, peer.info.identities.user1);
        t.after(async () => {
            gateway.close();
            client.close();
            await peer.stop();
        });
        const network = gateway.getNetwork(peer.info.channel);
        const contract = network.getContract(peer.info.chaincode);
        const key = workerKey();

        await t.test('submitTransaction endorses, submits and waits for a valid commit', async () => {
            const result = await contract.submitTransaction('workerRegister', 'node-worker', '1', 'org', '["app"]', 'd',
                key.pem);
            assert.deepEqual(JSON.parse(decoder.decode(result)), {workerId: 'node-worker'});
        });

        await t.test('evaluateTransaction reads committed state', async () => {
            const worker = JSON.parse(decoder.decode(await contract.evaluateTransaction('workerRetrieve', 'node-worker')));
            assert.equal(worker.owner.mspId, 'Org1MSP');
            assert.equal(worker.status, 1);
        });

        let submitBlock;
        let orderKey;
        const request = 'node request';
        await t.test('the endorse / submit / getStatus steps report the block and code', async () => {
            const deadline = String(Math.floor(Date.now() / 1000) + 600);
            const proposal = contract.newProposal('workOrderSubmit',
                {arguments: ['wo-node', 'node-worker', 'req', request, deadline]});
            const transaction = await proposal.endorse();
            orderKey = JSON.parse(decoder.decode(transaction.getResult())).orderKey;
            const commit = await transaction.submit();
            const status = await commit.getStatus();

            assert.equal(status.successful, true);
            assert.equal(status.code, 0);
            assert.equal(status.transactionId, transaction.getTransactionId());
            submitBlock = status.blockNumber;
            assert.ok(submitBlock >= 2n);
        });

        await t.test('a worker-signed completion is accepted and both events stream in order', async () => {
            const response = 'node response';
            const preimage = fabricPreimage(peer.info.channel, peer.info.chaincode, 'wo-node',
                sha256(Buffer.from(request)), sha256(Buffer.from(response)), 0);
            await contract.submitTransaction('workOrderComplete', orderKey, '0', response,
                key.sign(preimage).toString('hex'));

            const events = await network.getChaincodeEvents(peer.info.chaincode, {startBlock: submitBlock});
            const seen = [];
            try {
                for await (const event of events) {
                    seen.push([event.eventName, JSON.parse(decoder.decode(event.payload)).orders[0].workOrderId]);
                    if (seen.length === 2) {
                        break;
                    }
                }
            } finally {
                events.close();
            }
            assert.deepEqual(seen, [['WorkOrderSubmitted', 'wo-node'], ['WorkOrderCompleted', 'wo-node']]);
        });

        await t.test('a chaincode refusal surfaces as an EndorseError with the reason', async () => {
            await assert.rejects(contract.submitTransaction('workerRegister', 'node-worker', '1', 'org', '[]', '', key.pem),
                (err) => err.name === 'EndorseError' && err.code === grpc.status.ABORTED
                    && err.details.length === 1 && err.details[0].mspId === 'Org1MSP'
                    && err.details[0].address === peer.info.gatewayAddress
                    && /chaincode response 500, WorkerAlreadyRegistered/.test(err.details[0].message));
        });

        await t.test('a signature by a key that does not match the certificate is refused', async () => {
            const forgedKey = crypto.generateKeyPairSync('ec', {namedCurve: 'P-256'}).privateKey;
            const forged = gatewayFor(client, peer.info.identities.user1, forgedKey);
            try {
                await assert.rejects(forged.getNetwork(peer.info.channel).getContract(peer.info.chaincode)
                    .evaluateTransaction('workerLookUp', '0', '', ''),
                (err) => err.code === grpc.status.PERMISSION_DENIED);
            } finally {
                forged.close();
            }
        });
    });
