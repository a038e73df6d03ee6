"""The real chaincode behind the development peer, through the Gateway protocol."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fabric_protos.peer import transaction_pb2

from enclave_bridge.result_signature import FabricDomain, sign_fabric
from tcbridge_devpeer.client import GatewayClient
from tcbridge_devpeer.launcher import DevPeerProcess
from tcbridge_devpeer.msp import Identity
from tcbridge_devpeer.rpc_status import error_details

from .conftest import WorkerKey

VALID = transaction_pb2.TxValidationCode.VALID
DOMAIN = FabricDomain(channel="mychannel", chaincode="tcbridge")

pytestmark = pytest.mark.timeout(60)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def register(client: GatewayClient, key: WorkerKey, worker_id: str) -> int:
    _, code, block = await client.submit(
        "workerRegister", worker_id, "1", "org-a", '["app"]', "details", key.pem
    )
    assert code == VALID
    return block


async def test_work_order_completes_with_a_python_signed_result(
    client: GatewayClient, worker_key: WorkerKey
) -> None:
    """A result signed by the Python worker code is accepted by the Node chaincode."""
    worker_id = unique("worker")
    await register(client, worker_key, worker_id)
    request = '{"jsonrpc":"2.0","method":"WorkOrderSubmit","id":7}'
    deadline = str(int(time.time()) + 3600)
    result, code, _ = await client.submit(
        "workOrderSubmit", "wo-1", worker_id, "req", request, deadline
    )
    assert code == VALID
    order_key = json.loads(result)["orderKey"]
    response = '{"result":"ok"}'
    signature = sign_fabric(
        worker_key.private,
        DOMAIN,
        "wo-1",
        hashlib.sha256(request.encode()).digest(),
        hashlib.sha256(response.encode()).digest(),
        0,
    )

    _, code, block = await client.submit(
        "workOrderComplete", order_key, "0", response, signature.hex()
    )

    assert code == VALID
    order = json.loads(await client.evaluate("workOrderGet", order_key))
    assert order["state"] == 2
    assert order["responseHash"] == hashlib.sha256(response.encode()).hexdigest()
    events = client.events(start_block=block)
    number, event = await anext(aiter(events))
    assert (number, event.event_name) == (block, "WorkOrderCompleted")
    assert json.loads(event.payload)["orders"][0]["response"] == response


async def test_chaincode_errors_come_back_with_their_message(
    client: GatewayClient,
) -> None:
    """An endorsement the chaincode refuses fails with the chaincode's reason."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await client.submit("workerRetrieve", unique("nobody"))

    assert failure.value.code() == grpc.StatusCode.ABORTED
    assert "UnknownWorker" in str(failure.value.details())
    (detail,) = error_details(failure.value)
    assert detail.msp_id == "Org1MSP"
    assert detail.address == client.address
    assert "chaincode response 500, UnknownWorker" in detail.message


async def test_lookup_pages_through_range_queries_with_bookmarks(
    client: GatewayClient, worker_key: WorkerKey
) -> None:
    """workerLookUp/Next page with bookmarks; the unpaged count needs QUERY_STATE_NEXT."""
    org = unique("org")
    total = 105
    proposals = [
        client.propose(
            "workerRegister", f"{org}-{i:03d}", "2", org, '["x"]', "", worker_key.pem
        )
        for i in range(total)
    ]
    prepared = await asyncio.gather(*(client.endorse(p) for p in proposals))
    await asyncio.gather(*(client.submit_prepared(p) for p in prepared))
    codes = await asyncio.gather(*(client.commit_status(p.tx_id) for p in prepared))
    assert {code for code, _ in codes} == {VALID}

    pages = [json.loads(await client.evaluate("workerLookUp", "2", org, "x"))]
    while pages[-1]["lookupTag"]:
        tag = pages[-1]["lookupTag"]
        page = await client.evaluate("workerLookUpNext", "2", org, "x", tag)
        pages.append(json.loads(page))

    assert [len(page["ids"]) for page in pages] == [50, 50, 5]
    assert {page["totalCount"] for page in pages} == {total}
    ids = sorted(i for page in pages for i in page["ids"])
    assert ids == [f"{org}-{i:03d}" for i in range(total)]


async def test_events_resume_from_a_block_and_after_a_transaction(
    client: GatewayClient, worker_key: WorkerKey
) -> None:
    """ChaincodeEvents replays from a given block and honours after_transaction_id."""
    ids = [unique("resume") for _ in range(3)]
    blocks = []
    tx_ids = []
    for worker_id in ids:
        prepared = await client.endorse(
            client.propose(
                "workerRegister", worker_id, "1", "o", "[]", "", worker_key.pem
            )
        )
        await client.submit_prepared(prepared)
        _, block = await client.commit_status(prepared.tx_id)
        blocks.append(block)
        tx_ids.append(prepared.tx_id)

    async def first_two(start: int, after: str = "") -> list[str]:
        seen = []
        async for _, event in client.events(start_block=start, after_tx_id=after):
            seen.append(json.loads(event.payload)["workerId"])
            if len(seen) == 2:
                return seen
        return seen

    assert await first_two(blocks[1]) == ids[1:]
    assert await first_two(blocks[0], after=tx_ids[0]) == ids[1:]
    assert await first_two(blocks[0]) == ids[:2]


async def test_a_forged_proposal_signature_is_refused(devpeer: DevPeerProcess) -> None:
    """A proposal signed with a key that does not match its certificate is refused."""
    real = devpeer.identity("user1")
    forged = Identity(
        real.msp_id, real.cert_pem, ec.generate_private_key(ec.SECP256R1())
    )
    client = GatewayClient(devpeer.address, forged, "mychannel", "tcbridge")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.evaluate("workerLookUp", "0", "", "")
    finally:
        await client.close()

    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_identity_from_an_unknown_ca_is_refused(
    devpeer: DevPeerProcess, tmp_path: object
) -> None:
    """A certificate not issued by the MSP's CA cannot endorse, even if well signed."""
    from pathlib import Path

    from tcbridge_devpeer.msp import generate_msp, msp_identity

    folder = Path(str(tmp_path))
    generate_msp(folder, "Org1MSP", ["mallory"])
    client = GatewayClient(
        devpeer.address,
        msp_identity(folder, "Org1MSP", "mallory"),
        "mychannel",
        "tcbridge",
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.submit("workerLookUp", "0", "", "")
    finally:
        await client.close()

    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not issued by the CA" in str(failure.value.details())


async def test_a_submitted_envelope_with_a_forged_signature_is_refused(
    client: GatewayClient, devpeer: DevPeerProcess, worker_key: WorkerKey
) -> None:
    """Submit refuses an endorsed transaction its creator did not sign."""
    from fabric_protos.common import common_pb2
    from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc

    worker_id = unique("forged-submit")
    prepared = await client.endorse(
        client.propose("workerRegister", worker_id, "1", "o", "[]", "", worker_key.pem)
    )
    other = devpeer.identity("user2")
    envelope = common_pb2.Envelope(
        payload=prepared.envelope.payload,
        signature=other.sign(prepared.envelope.payload),
    )
    async with grpc.aio.insecure_channel(devpeer.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Submit(
                gateway_pb2.SubmitRequest(
                    transaction_id=prepared.tx_id,
                    channel_id="mychannel",
                    prepared_transaction=envelope,
                )
            )

    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError):
        await client.evaluate("workerRetrieve", worker_id)
