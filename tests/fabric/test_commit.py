"""Commit-time behaviour of the development peer: MVCC, endorsements, persistence."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import grpc
import pytest
from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import proposal_pb2, proposal_response_pb2, transaction_pb2

from tcbridge_devpeer.client import GatewayClient, Prepared
from tcbridge_devpeer.launcher import DevPeerProcess
from tcbridge_devpeer.ledger import Ledger
from tcbridge_devpeer.protocol import transactions_filter

from .conftest import WorkerKey

Code = transaction_pb2.TxValidationCode

pytestmark = pytest.mark.timeout(90)


async def registered(client: GatewayClient, key: WorkerKey) -> str:
    worker_id = f"w-{uuid.uuid4().hex[:10]}"
    _, code, _ = await client.submit(
        "workerRegister", worker_id, "1", "o", "[]", "", key.pem
    )
    assert code == Code.VALID
    return worker_id


async def test_concurrent_endorsements_of_one_key_commit_one_and_mark_the_other(
    client: GatewayClient, devpeer: DevPeerProcess, worker_key: WorkerKey
) -> None:
    """Two endorsements that read the same key: one VALID, one MVCC_READ_CONFLICT, same block."""
    worker_id = await registered(client, worker_key)
    first, second = await asyncio.gather(
        client.endorse(client.propose("workerSetStatus", worker_id, "2")),
        client.endorse(client.propose("workerSetStatus", worker_id, "4")),
    )

    await client.submit_prepared(first)
    await client.submit_prepared(second)
    (code_a, block_a), (code_b, block_b) = await asyncio.gather(
        client.commit_status(first.tx_id), client.commit_status(second.tx_id)
    )

    assert (code_a, code_b) == (Code.VALID, Code.MVCC_READ_CONFLICT)
    assert block_a == block_b
    worker = json.loads(await client.evaluate("workerRetrieve", worker_id))
    assert worker["status"] == 2

    ledger = Ledger(devpeer.folder / "ledger.sqlite")
    try:
        block = ledger.block(block_a)
    finally:
        ledger.close()
    assert block is not None
    assert list(transactions_filter(block)) == [Code.VALID, Code.MVCC_READ_CONFLICT]

    marker = await registered(client, worker_key)
    streamed = []
    async for number, event in client.events(start_block=block_a):
        payload = json.loads(event.payload)
        if payload["workerId"] == marker:
            break
        streamed.append((number, event.event_name, payload))
    assert streamed == [
        (block_a, "WorkerStatusChanged", {"workerId": worker_id, "status": 2})
    ]


async def test_a_client_cannot_alter_the_endorsed_writes(
    client: GatewayClient, worker_key: WorkerKey
) -> None:
    """Writes changed after endorsement fail the endorsement check and are not applied."""
    worker_id = await registered(client, worker_key)
    prepared = await client.endorse(client.propose("workerSetStatus", worker_id, "2"))

    tampered = _with_status_write(prepared, worker_id, status=1)
    await client.submit_prepared(tampered)
    code, _ = await client.commit_status(tampered.tx_id)

    assert code == Code.ENDORSEMENT_POLICY_FAILURE
    assert json.loads(await client.evaluate("workerRetrieve", worker_id))["status"] == 1


async def test_a_resubmitted_transaction_is_a_duplicate(
    client: GatewayClient, devpeer: DevPeerProcess, worker_key: WorkerKey
) -> None:
    """The same transaction submitted twice commits once; the copy is DUPLICATE_TXID."""
    worker_id = f"dup-{uuid.uuid4().hex[:10]}"
    prepared = await client.endorse(
        client.propose("workerRegister", worker_id, "1", "o", "[]", "", worker_key.pem)
    )
    await client.submit_prepared(prepared)
    assert (await client.commit_status(prepared.tx_id))[0] == Code.VALID

    _, first_block = await client.commit_status(prepared.tx_id)

    await client.submit_prepared(prepared)
    _, _, later_block = await client.submit("workerLookUp", "0", "", "")

    assert await client.commit_status(prepared.tx_id) == (Code.VALID, first_block)
    ledger = Ledger(devpeer.folder / "ledger.sqlite")
    try:
        copies = [
            code
            for number in range(first_block + 1, later_block + 1)
            for code, tx_id in _codes_and_ids(ledger, number)
            if tx_id == prepared.tx_id
        ]
    finally:
        ledger.close()
    assert copies == [Code.DUPLICATE_TXID]


async def test_the_peer_keeps_its_ledger_across_a_restart(
    tmp_path: Path, worker_key: WorkerKey
) -> None:
    """Stopping and restarting the peer on the same folder keeps state, blocks and events."""
    peer = DevPeerProcess.start(tmp_path / "peer")
    try:
        client = GatewayClient(
            peer.address, peer.identity("user1"), "mychannel", "tcbridge"
        )
        worker_id = await registered(client, worker_key)
        await client.close()
    finally:
        peer.stop()

    peer = DevPeerProcess.start(tmp_path / "peer")
    try:
        client = GatewayClient(
            peer.address, peer.identity("user1"), "mychannel", "tcbridge"
        )
        worker = json.loads(await client.evaluate("workerRetrieve", worker_id))
        async for number, event in client.events(start_block=0):
            replayed = (number, event.event_name)
            break
        _, code, block = await client.submit("workerSetStatus", worker_id, "2")
        await client.close()
    finally:
        peer.stop()

    assert worker["workerId"] == worker_id
    assert replayed == (1, "WorkerRegistered")
    assert (code, block) == (Code.VALID, 2)


def _codes_and_ids(ledger: Ledger, number: int) -> list[tuple[int, str]]:
    block = ledger.block(number)
    assert block is not None
    ids = []
    for raw in block.data.data:
        payload = common_pb2.Payload.FromString(
            common_pb2.Envelope.FromString(raw).payload
        )
        ids.append(
            common_pb2.ChannelHeader.FromString(payload.header.channel_header).tx_id
        )
    return list(zip(transactions_filter(block), ids, strict=True))


def _with_status_write(prepared: Prepared, worker_id: str, status: int) -> Prepared:
    """A copy of ``prepared`` whose write set sets the worker's status to ``status``."""
    payload = common_pb2.Payload.FromString(prepared.envelope.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    action_payload = transaction_pb2.ChaincodeActionPayload.FromString(
        tx.actions[0].payload
    )
    response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
        action_payload.action.proposal_response_payload
    )
    action = proposal_pb2.ChaincodeAction.FromString(response_payload.extension)
    rwset = rwset_pb2.TxReadWriteSet.FromString(action.results)
    kv = kv_rwset_pb2.KVRWSet.FromString(rwset.ns_rwset[0].rwset)
    for write in kv.writes:
        record = json.loads(write.value)
        if record.get("workerId") == worker_id:
            record["status"] = status
            write.value = json.dumps(record).encode()
    rwset.ns_rwset[0].rwset = kv.SerializeToString()
    action.results = rwset.SerializeToString()
    response_payload.extension = action.SerializeToString()
    action_payload.action.proposal_response_payload = (
        response_payload.SerializeToString()
    )
    tx.actions[0].payload = action_payload.SerializeToString()
    payload.data = tx.SerializeToString()
    envelope = common_pb2.Envelope(payload=payload.SerializeToString())
    return Prepared(prepared.tx_id, envelope, prepared.result)


async def test_a_dead_chaincode_fails_calls_at_once(tmp_path: Path) -> None:
    """When the chaincode server dies, calls fail UNAVAILABLE instead of hanging."""
    peer = DevPeerProcess.start(tmp_path / "peer")
    try:
        os.kill(int(peer.info["chaincodePid"]), signal.SIGKILL)
        client = GatewayClient(
            peer.address, peer.identity("user1"), "mychannel", "tcbridge"
        )
        try:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                for _ in range(50):
                    await client.evaluate("workerLookUp", "0", "", "")
                    await asyncio.sleep(0.1)
        finally:
            await client.close()
    finally:
        peer.stop()

    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 10
