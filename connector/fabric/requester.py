"""A requester on Fabric: build a work order, submit it, wait, verify, decrypt.

What a Fabric client application does, and what ``tcbridge submit --chain
fabric``, the demo and the end-to-end tests use. The requester calls the
chaincode with its own X.509 identity (the chaincode keys the order by
that identity, so no one can squat another's id). Its EEA requester id
is the hex SHA-256 of its serialized identity, and it signs the EEA
request with a secp256k1 key of its own (a fresh one unless given).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from connector.fabric import events as ev
from connector.fabric.gateway import VALID, FabricGateway
from connector.requester_client import Checked, encode_request
from enclave_bridge.errors import ChainError, TransactionFailed
from enclave_bridge.requester import (
    SentWorkOrder,
    WorkerDetails,
    build_work_order,
    verify_response,
)

# Orders stay cancellable by their requester after this long.
DEFAULT_DEADLINE_S = 3600


@dataclass(frozen=True)
class FabricSubmitted:
    order_key: str
    sent: SentWorkOrder
    worker: WorkerDetails
    tx_id: str
    block: int
    submitted_at: float


@dataclass(frozen=True)
class FabricCompletion:
    order_key: str
    status: int
    response: bytes
    block: int
    tx_id: str


class FabricRequester:
    def __init__(self, gateway: FabricGateway, signing_key: bytes | None = None) -> None:
        self.gateway = gateway
        self.key = signing_key or os.urandom(32)
        self.requester_id = hashlib.sha256(gateway.identity.serialized()).hexdigest()

    @property
    def label(self) -> str:
        return self.gateway.identity.label

    async def worker(self, worker_id: str) -> WorkerDetails:
        """The worker's EEA details as registered in the chaincode."""
        record = json.loads(await self.gateway.evaluate("workerRetrieve", worker_id))
        details = json.loads(record["details"])
        return WorkerDetails.from_json({"details": details}, worker_id=worker_id)

    async def submit(
        self, worker: WorkerDetails, workload: str, inputs: Sequence[bytes | str],
        *, deadline_s: int = DEFAULT_DEADLINE_S,
    ) -> FabricSubmitted:
        sent = build_work_order(
            worker, workload, list(inputs), requester_key=self.key,
            requester_id=self.requester_id,
        )
        params = sent.params
        deadline = str(int(time.time()) + deadline_s)
        proposal = self.gateway.propose(
            "workOrderSubmit", params["workOrderId"], worker.worker_id,
            self.requester_id, encode_request(sent).decode(), deadline,
        )
        prepared = await self.gateway.endorse(proposal)
        await self.gateway.submit(prepared.tx_id, prepared.envelope)
        code, block = await self.gateway.commit_status(prepared.tx_id, timeout=60)
        if code != VALID:
            raise TransactionFailed(
                f"workOrderSubmit {prepared.tx_id} was invalidated with code {code}"
            )
        order_key = json.loads(prepared.result)["orderKey"]
        return FabricSubmitted(order_key, sent, worker, prepared.tx_id, block,
                               time.monotonic())

    async def wait_completion(
        self, submitted: FabricSubmitted, timeout: float = 120.0
    ) -> FabricCompletion:
        """The WorkOrderCompleted event for the order, read from its submit block on."""
        try:
            async with asyncio.timeout(timeout):
                return await self._completion(submitted)
        except TimeoutError:
            raise ChainError(
                f"no completion for order {submitted.order_key} in {timeout:.0f} s:"
                " is the bridge running and are its workers registered?"
            ) from None

    async def _completion(self, submitted: FabricSubmitted) -> FabricCompletion:
        async for block in self.gateway.chaincode_events(submitted.block):
            for event in block.events:
                if event.event_name != ev.COMPLETED:
                    continue
                for order in json.loads(bytes(event.payload)).get("orders", []):
                    if order.get("orderKey") == submitted.order_key:
                        return FabricCompletion(
                            submitted.order_key, int(order["status"]),
                            str(order["response"]).encode(), block.block_number,
                            str(event.tx_id),
                        )
        raise ChainError("the chaincode event stream ended")

    async def check(
        self, submitted: FabricSubmitted, completion: FabricCompletion
    ) -> Checked:
        """Verify the EEA response and that the chaincode stored its hash."""
        verdict = verify_response(
            submitted.sent, json.loads(completion.response), submitted.worker
        )
        record = json.loads(
            await self.gateway.evaluate("workOrderGet", submitted.order_key)
        )
        stored = str(record.get("responseHash", ""))
        hash_ok = stored == hashlib.sha256(completion.response).hexdigest()
        return Checked(verdict, completion.status, hash_ok)

