"""Oracle-contract mode: TrustedOracle requests served by the same bridge.

A consumer contract calls ``TrustedOracle.request`` with a worker, a
workload name and plain parameters (``{"inputs": ["...", ...]}``). A
contract cannot encrypt for the worker, so **oracle inputs are public
on-chain and so are the results**: oracle mode gives authenticity (the
worker's signature, checked by the oracle contract), not secrecy.

The path of one request:

1. The oracle's ``LogWatcher`` (its own checkpoint, ``ORACLE_TOPICS``,
   ``decode_oracle_log``) hands ``OracleRequested`` to
   :class:`OracleWatcherSink`, which records it in the work-order store
   under the oracle's address, keyed by the request id, with the hash the
   oracle stored (``keccak256(workload ‖ params)``).
2. **The bridge acts as the requester.** :class:`OracleOrderBuilder` turns
   the plain request into an EEA work order encrypted for the worker and
   signed with a requester key the operator holds (derived from the relayer
   key). Its randomness (session key, IVs, nonces) is derived from that key
   and the request id, so the bridge re-derives the session key after a
   restart instead of storing it. (RSA-OAEP padding stays random, so two
   builds differ in ``encryptedSessionKey``; the store keeps the first.)
3. The dispatcher runs it with an ``OracleTarget``: the worker signs
   ``keccak256`` of its plain first output (or of its error message) for the
   request id, in the oracle's EIP-712 domain.
4. :class:`OracleSubmitterAdapter` decrypts the output with the session key
   and hands the plain result to a ``Submitter`` that encodes ``fulfill``
   (:func:`encode_fulfill_call`). The oracle checks the signature over the
   bytes it is given and calls the consumer back.

Parameters that are not the expected JSON still become an order: the pool
answers them with a signed error result, so no consumer waits forever.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence

import rlp
from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak

from connector.ethereum import events as ev
from connector.ethereum.adapters import ContractSink, StoreSubmitterAdapter
from connector.ethereum.submitter import PendingTx, ReadyResult
from connector.ethereum.transactions import Completion
from connector.store import NewOrder, WorkOrderStore
from connector.store.records import Settlement
from enclave_bridge.errors import BugError, WorkOrderError
from enclave_bridge.pool import WorkerPublicRecord
from enclave_bridge.requester import (
    SentWorkOrder,
    WorkerDetails,
    build_work_order,
    verify_response,
)

log = logging.getLogger("tcbridge.oracle")

ORACLE_CONTRACT = "TrustedOracle"
FULFILL = keccak(b"fulfill(bytes32,uint256,bytes,bytes)")[:4]
# The oracle's inputs are small by design (they are paid for as calldata).
MAX_INPUTS = 16
SESSION_KEY_BYTES = 32


def oracle_request_hash(workload: bytes, params: bytes) -> bytes:
    """What TrustedOracle stores and the worker signs: keccak256(workload ‖ params)."""
    return keccak(workload + params)


def workload_name(workload: bytes) -> str:
    """The workload name of a left-aligned, zero-padded bytes32."""
    return workload.rstrip(b"\0").decode("ascii", errors="replace")


def encode_fulfill_call(items: Sequence[Completion]) -> bytes:
    """``fulfill(requestId, status, result, signature)``; there is no batch call."""
    if len(items) != 1:
        raise BugError("the oracle submitter must run with max_items=1")
    item = items[0]
    return FULFILL + abi_encode(
        ["bytes32", "uint256", "bytes", "bytes"],
        [item.order_key, item.status, item.response, item.signature],
    )


def parse_params(params: bytes) -> list[str]:
    """The inputs of ``{"inputs": [...]}``; WorkOrderError when they are not that."""
    try:
        document = json.loads(params)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkOrderError(2, f"oracle params are not JSON: {exc}") from None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if (
        not isinstance(inputs, list)
        or not 0 < len(inputs) <= MAX_INPUTS
        or not all(isinstance(item, str) for item in inputs)
    ):
        raise WorkOrderError(
            2, f'oracle params must be {{"inputs": [1..{MAX_INPUTS} strings]}}'
        )
    return inputs


class OracleOrderBuilder:
    """Builds (and re-derives) the EEA work order for each oracle request.

    ``secret`` is an operator-held 32-byte key: the requester key and every
    order's randomness (session key, IVs, nonce) are derived from it, so it
    must stay the same across restarts while requests are open.
    """

    def __init__(
        self,
        secret: bytes,
        chain_id: int,
        oracle: str,
        workers: Mapping[str, WorkerPublicRecord],
    ) -> None:
        self._secret = _derive(secret, b"tcbridge oracle order stream")
        self._requester_key = _derive(secret, b"tcbridge oracle requester key")
        self._scope = chain_id.to_bytes(32, "big") + bytes.fromhex(oracle[2:])
        self.workers = {
            worker_id.lower(): WorkerDetails.from_json(record.details, worker_id)
            for worker_id, record in workers.items()
        }

    def session_key(self, request_id: bytes) -> bytes:
        return self._stream(request_id)(SESSION_KEY_BYTES)

    def build(self, event: ev.OracleRequested) -> bytes:
        """The request bytes the pool runs; raw params when they do not parse.

        Unparseable params go to the pool as they are: it refuses them with
        a signed error result that the oracle then delivers.
        """
        worker = self.workers.get(event.worker_id.hex())
        try:
            inputs = parse_params(event.params)
        except WorkOrderError:
            return event.params
        if worker is None:
            return event.params
        sent = build_work_order(
            worker,
            workload_name(event.workload),
            inputs,
            requester_key=self._requester_key,
            requester_id=event.requester.lower()[2:].rjust(64, "0"),
            work_order_id=event.request_id.hex(),
            rng=self._stream(event.request_id),
        )
        # The session key is re-derived later instead of stored: fail loudly
        # if build_work_order ever draws its randomness in another order.
        if sent.session_key != self.session_key(event.request_id):
            raise BugError("build_work_order no longer draws the session key first")
        return json.dumps(sent.request, separators=(",", ":")).encode()

    def plain_result(
        self,
        request_id: bytes,
        worker_id: str,
        request: bytes,
        status: int,
        response: bytes,
    ) -> bytes:
        """The bytes the worker signed: output 0 in plain, or the error message."""
        answer = json.loads(response)
        if status != 0:
            return str(answer["error"]["message"]).encode()
        worker = self.workers.get(worker_id.lower())
        if worker is None:
            raise BugError(f"a result for worker {worker_id}, which the pool lacks")
        sent = SentWorkOrder.from_request(
            json.loads(request), self.session_key(request_id)
        )
        verdict = verify_response(sent, answer, worker)
        if not verdict.accepted or not verdict.outputs:
            raise BugError(
                f"the pool's answer to oracle request {request_id.hex()} does not"
                f" verify: {verdict.reason}"
            )
        return verdict.outputs[0].data

    def _stream(self, request_id: bytes) -> Callable[[int], bytes]:
        """A deterministic byte stream for one request (HMAC-SHA256 in counter mode)."""
        seed = hmac.new(self._secret, self._scope + request_id, hashlib.sha256).digest()
        counter = 0

        def draw(n: int) -> bytes:
            nonlocal counter
            out = b""
            while len(out) < n:
                counter += 1
                out += hmac.new(
                    seed, counter.to_bytes(8, "big"), hashlib.sha256
                ).digest()
            return out[:n]

        return draw


def _derive(secret: bytes, label: bytes) -> bytes:
    return hmac.new(secret, label, hashlib.sha256).digest()


class OracleWatcherSink(ContractSink):
    """Writes one TrustedOracle's confirmed events into the store with its checkpoint.

    A request for a worker the pool does not serve is recorded SKIPPED.
    """

    def __init__(
        self,
        store: WorkOrderStore,
        chain_id: int,
        oracle: str,
        builder: OracleOrderBuilder,
        our_workers: Collection[str],
    ) -> None:
        self.store = store
        self.chain_id = chain_id
        self.oracle = oracle
        self.contract = oracle
        self.builder = builder
        self.our_workers = {w.lower() for w in our_workers}
        self.recorded = 0

    def translate(self, event: ev.AnyEvent) -> NewOrder | Settlement | None:
        ref = event.ref
        if isinstance(event, ev.OracleRequested):
            return self._new_order(event)
        if isinstance(event, ev.OracleFulfilled):
            return Settlement(event.request_id, "completed", ref.block_number, status=event.status)
        if isinstance(event, ev.OracleCancelled):
            return Settlement(event.request_id, "cancelled", ref.block_number)
        return None

    def _new_order(self, event: ev.OracleRequested) -> NewOrder:
        worker = event.worker_id.hex()
        ours = worker in self.our_workers
        return NewOrder(
            order_key=event.request_id,
            work_order_id=event.request_id.hex(),
            worker_id=worker,
            requester_id=event.requester.lower()[2:].rjust(64, "0"),
            request=self.builder.build(event) if ours else event.params,
            request_keccak=oracle_request_hash(event.workload, event.params),
            block_number=event.ref.block_number,
            block_hash=event.ref.block_hash,
            tx_hash=event.ref.tx_hash,
            log_index=event.ref.log_index,
            requester_address=event.requester,
            deadline=event.expiry,
            callback_gas=event.callback_gas,
            skipped=not ours,
        )


class ContractSubmitterAdapter(StoreSubmitterAdapter):
    """A submitter's store view that tracks only transactions sent to its contract.

    The registry's and the oracle's submitters share the relayer account and
    its nonces (the store allocates them per account), so each must leave
    the other's transactions alone: a fee bump re-signs a transaction to the
    bumping submitter's contract.
    """

    async def pending_transactions(self, sender: str) -> list[PendingTx]:
        pending = await super().pending_transactions(sender)
        return [tx for tx in pending if sent_to(tx.raw) == self.registry.lower()]


def sent_to(raw: bytes) -> str:
    """The ``to`` address of a signed type-2 transaction, lower-case hex."""
    fields = rlp.decode(raw[1:])
    return "0x" + bytes(fields[5]).hex()


class OracleSubmitterAdapter(ContractSubmitterAdapter):
    """The submitter's store view of one oracle: results become plain result bytes."""

    def __init__(
        self,
        store: WorkOrderStore,
        chain_id: int,
        oracle: str,
        builder: OracleOrderBuilder,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store, chain_id, oracle, clock)
        self.builder = builder
        # Plain results by request id: decrypting costs one AES-GCM and one
        # signature check, worth doing once per order, not once per poll.
        self._plain: dict[bytes, bytes] = {}

    async def ready_results(self, limit: int) -> list[ReadyResult]:
        ready = await super().ready_results(limit)
        out = []
        for item in ready:
            plain = self._plain.get(item.order_key)
            if plain is None:
                plain = await self._plain_result(item)
                self._plain[item.order_key] = plain
            out.append(
                ReadyResult(
                    item.order_key,
                    item.status,
                    plain,
                    item.signature,
                    item.requester,
                    item.ready_at,
                    item.callback_gas,
                )
            )
        live = {item.order_key for item in ready}
        for key in [k for k in self._plain if k not in live]:
            del self._plain[key]
        return out

    async def _plain_result(self, item: ReadyResult) -> bytes:
        order = await self.store.get_order(self._ref(item.order_key))
        if order is None:
            raise BugError(f"oracle request {item.order_key.hex()} is not stored")
        return self.builder.plain_result(
            item.order_key, order.worker_id, order.request, item.status, item.response
        )
