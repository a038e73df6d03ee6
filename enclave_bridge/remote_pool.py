"""A pool on another host, reached through its EEA JSON-RPC listener.

:class:`RemotePool` has the shape of :class:`~enclave_bridge.pool.EnclavePool`
(``await submit(PoolJob) -> PoolResult``, ``worker_records()``, ``stats()``),
so a bridge can send each worker's orders to a local pool or to a remote
one. Two kinds of listener answer:

* **A tcbridge listener** (it answers ``TcbridgeInfo``): both models. For
  a job with a target (the proxy model) the client sends the exact request
  bytes, the EIP-712 / Fabric target and the job's order key through the
  ``tcbridge*`` extension, with the listener's proxy bearer token, and gets
  back the exact response bytes with the on-chain result signature.
* **Any other EEA listener** (Avalon's): the direct model only. A worker
  service that does not know tcbridge's result-signature domain cannot sign
  a result a registry contract accepts, so :func:`open_remote_pool` with
  ``proxy=True`` refuses it, and a job with a target fails the same way.

Work orders are submitted with ``WorkOrderSubmit`` and, while the answer
is "scheduled" or "pending", polled with ``WorkOrderGetResult`` until the
job's cap runs out. Transport failures are retried a bounded number of
times with backoff, then surface as :class:`~enclave_bridge.errors.PoolError`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from enclave_bridge import crypto
from enclave_bridge.eea import WorkOrderStatus, _shallow, parse_request
from enclave_bridge.errors import (
    ConfigurationError,
    CryptoError,
    PoolError,
    WorkOrderError,
)
from enclave_bridge.listener_proxy import target_to_json
from enclave_bridge.pool import PoolJob, PoolResult, PoolStats, WorkerPublicRecord
from enclave_bridge.processor import encode_response
from enclave_bridge.result_signature import address_of_public_key

log = logging.getLogger(__name__)

# A remote order gets this long beyond its own cap: queueing and the network.
DEFAULT_MAX_SECONDS = 30.0
# Orders kept in flight at one remote listener; its own pool queues the rest.
DEFAULT_CONCURRENCY = 8
QUEUE_SLACK_SECONDS = 30.0
# Transport retries per call; each waits twice as long as the last.
CALL_ATTEMPTS = 3
FIRST_BACKOFF_SECONDS = 0.2
# Polling starts fast for short workloads and slows down for long ones.
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 1.0
# One synchronous wait per submit; longer waits go through polling.
SYNC_WAIT_MSECS = 10_000
WAITING_CODES = (int(WorkOrderStatus.PENDING), int(WorkOrderStatus.SCHEDULED))
# A remote answer holds at most a few outputs of a work order; bigger is hostile.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# Pool-side PIDs do not cross hosts; a remote result reports this one.
REMOTE_PID = 0

AVALON_PROXY_REFUSAL = (
    "the listener at {url} is not a tcbridge listener (it does not answer "
    "TcbridgeInfo): it can serve the direct model through RemotePool, but not "
    "the proxy model, because it cannot sign on-chain results. Point the proxy "
    "model at a tcbridge listener, or use this one for direct-model work only."
)


@dataclass
class _Counters:
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    timeouts: int = 0
    transport_retries: int = 0


class RemotePool:
    """See the module docstring. Use :func:`open_remote_pool`."""

    def __init__(
        self,
        url: str,
        *,
        proxy_token: str | None = None,
        default_max_seconds: float = DEFAULT_MAX_SECONDS,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.url = url
        # What the bridge sizes its dispatch by (EnclavePool's size x depth):
        # orders this client keeps in flight at the remote listener.
        self.size = max(1, concurrency)
        self.depth = 1
        self.proxy_token = proxy_token
        self.default_max_seconds = default_max_seconds
        self.is_tcbridge = False
        self._records: dict[str, WorkerPublicRecord] = {}
        self._http: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._counters = _Counters()

    async def start(self) -> None:
        """Learn what the listener is and which workers it serves."""
        self._http = aiohttp.ClientSession()
        info = await self._call("TcbridgeInfo", {})
        self.is_tcbridge = info.get("result", {}).get("implementation") == "tcbridge"
        await self._load_workers()
        log.info(
            "remote pool %s: %s listener, %d workers",
            self.url,
            "tcbridge" if self.is_tcbridge else "generic EEA",
            len(self._records),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def require_proxy(self) -> None:
        """Raise unless this listener can serve the proxy model for us."""
        if not self.is_tcbridge:
            raise ConfigurationError(AVALON_PROXY_REFUSAL.format(url=self.url))
        if not self.proxy_token:
            raise ConfigurationError(
                f"the proxy model through {self.url} needs the listener's proxy "
                "token (its [listener] proxy_token_file); none was given"
            )

    def worker_records(self) -> dict[str, WorkerPublicRecord]:
        return dict(self._records)

    def stats(self) -> PoolStats:
        """EnclavePool's snapshot; the remote side's queue is not visible here."""
        c = self._counters
        return PoolStats(
            processes=self.size,
            queued=0,
            in_flight=c.in_flight,
            done=c.done,
            failed=c.failed,
            oldest_queued_age=0.0,
            crashes=0,
            timeouts=c.timeouts,
            replacements=0,
        )

    @property
    def transport_retries(self) -> int:
        return self._counters.transport_retries

    # --- work orders ------------------------------------------------------------

    async def submit(self, job: PoolJob) -> PoolResult:
        """Run one work order on the remote pool; its result or error result."""
        counters = self._counters
        counters.in_flight += 1
        try:
            if job.target is not None:
                self.require_proxy()
                result = await self._submit_proxy(job)
            else:
                result = await self._submit_direct(job)
        finally:
            counters.in_flight -= 1
        # Counted as EnclavePool counts: every answer is done, error answers failed.
        counters.done += 1
        if result.status != 0:
            counters.failed += 1
        if result.pool_failure == "timeout":
            counters.timeouts += 1

        return result

    async def _submit_proxy(self, job: PoolJob) -> PoolResult:
        assert job.target is not None
        cap = (
            job.max_seconds if job.max_seconds is not None else self.default_max_seconds
        )
        params: dict[str, Any] = {
            "tcbridgeRequest": base64.b64encode(job.request).decode(),
            "tcbridgeTarget": target_to_json(job.target),
            "tcbridgeOrderKey": job.order_key,
            "tcbridgeMaxSeconds": cap,
            "responseTimeoutMSecs": SYNC_WAIT_MSECS,
        }
        answer = await self._call("WorkOrderSubmit", params, auth=True)
        poll = {"workOrderId": "00", "tcbridgeOrderKey": job.order_key}
        answer = await self._until_done(answer, poll, cap, auth=True)
        extension = answer.get("tcbridge")
        if not isinstance(extension, Mapping):
            raise PoolError(
                f"the listener at {self.url} refused the order: {_why(answer)}"
            )

        try:
            signature = extension.get("resultSignature")
            request_hash = extension.get("requestHash")
            return PoolResult(
                order_key=job.order_key,
                status=int(extension["status"]),
                response_bytes=base64.b64decode(
                    extension["responseBytes"], validate=True
                ),
                request_hash=bytes.fromhex(request_hash) if request_hash else None,
                result_signature=bytes.fromhex(signature) if signature else None,
                pid=REMOTE_PID,
                executed=bool(extension.get("executed", False)),
                pool_failure=extension.get("poolFailure"),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise PoolError(
                f"the listener at {self.url} sent a malformed tcbridge extension: {exc}"
            ) from exc

    async def _submit_direct(self, job: PoolJob) -> PoolResult:
        try:
            document = json.loads(job.request)
            params = document.get("params", document)
            request_hash: bytes | None = crypto.request_hash(parse_request(params))
        except (ValueError, AttributeError, WorkOrderError):
            raise PoolError(
                "a direct-model job for a remote pool must hold a WorkOrderSubmit "
                "request that parses; the remote listener would refuse it"
            ) from None
        cap = (
            job.max_seconds if job.max_seconds is not None else self.default_max_seconds
        )
        answer = await self._call("WorkOrderSubmit", params)
        error = answer.get("error")
        retried = isinstance(error, Mapping) and "already" in str(
            error.get("message", "")
        )
        if retried:
            # Submitted before (a retry of this job): its stored answer is the
            # result. Only tcbridge's message is known; other listeners answer
            # their own refusal, which this job then reports.
            answer = _pending(params["workOrderId"])
        poll = {"workOrderId": params["workOrderId"]}
        answer = await self._until_done(answer, poll, cap, auth=False)

        answer.pop("tcbridge", None)
        # As a local pool answers: with the id of the request in the job.
        answer = {"jsonrpc": "2.0", **answer, "id": _request_id(document)}
        error = answer.get("error")
        if "result" in answer:
            status = 0
        elif isinstance(error, Mapping) and isinstance(error.get("code"), int):
            status = int(error["code"])
        else:
            status = 1
        return PoolResult(
            order_key=job.order_key,
            status=status,
            response_bytes=encode_response(answer),
            request_hash=request_hash,
            result_signature=None,
            pid=REMOTE_PID,
            # The remote side alone knows whether its workload ran; a fresh
            # result is the best sign this client has.
            executed=status == 0 and not retried,
        )

    async def _until_done(
        self, answer: dict[str, Any], poll: dict[str, Any], cap: float, *, auth: bool
    ) -> dict[str, Any]:
        deadline = time.monotonic() + cap + QUEUE_SLACK_SECONDS
        delay = FIRST_POLL_SECONDS
        while _waiting(answer):
            if time.monotonic() > deadline:
                raise PoolError(
                    f"the listener at {self.url} gave no result for work order "
                    f"{poll['workOrderId']} within {cap + QUEUE_SLACK_SECONDS:g} s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL_SECONDS)
            answer = await self._call("WorkOrderGetResult", poll, auth=auth)
        return answer

    # --- workers -------------------------------------------------------------------

    async def _load_workers(self) -> None:
        lookup = await self._call("WorkerLookUp", {})
        result = lookup.get("result")
        if not isinstance(result, Mapping):
            raise PoolError(f"WorkerLookUp at {self.url} failed: {_why(lookup)}")
        ids = list(result.get("ids", []))
        tag = result.get("lookupTag")
        while tag:
            more = (await self._call("WorkerLookUpNext", {"lookUpTag": tag})).get(
                "result", {}
            )
            ids += list(more.get("ids", []))
            tag = more.get("lookupTag")
        for worker_id in ids:
            retrieved = (
                await self._call("WorkerRetrieve", {"workerId": worker_id})
            ).get("result")
            record = _record(worker_id, retrieved)
            if record is not None:
                self._records[worker_id] = record

    # --- transport -------------------------------------------------------------------

    async def _call(
        self, method: str, params: Mapping[str, Any], *, auth: bool = False
    ) -> dict[str, Any]:
        assert self._http is not None, "RemotePool.start() was not called"
        body = {
            "jsonrpc": "2.0",
            "method": method,
            "id": next(self._ids),
            "params": params,
        }
        headers = {"Authorization": f"Bearer {self.proxy_token}"} if auth else {}
        delay = FIRST_BACKOFF_SECONDS
        for attempt in range(1, CALL_ATTEMPTS + 1):
            try:
                async with self._http.post(
                    self.url, json=body, headers=headers
                ) as answer:
                    raw = await answer.content.read(MAX_ANSWER_BYTES + 1)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == CALL_ATTEMPTS:
                    raise PoolError(
                        f"calling {method} at {self.url} failed {attempt} times: {exc}"
                    ) from exc
                self._counters.transport_retries += 1
                log.info(
                    "calling %s at %s failed (%s); retry %d in %.1f s",
                    method,
                    self.url,
                    exc,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                delay *= 2
                continue
            return self._decode(method, raw)
        raise AssertionError("unreachable")

    def _decode(self, method: str, raw: bytes) -> dict[str, Any]:
        """One answer, refused when it is too large, too deep or not an object."""
        if len(raw) > MAX_ANSWER_BYTES:
            raise PoolError(
                f"{self.url} answered {method} with more than {MAX_ANSWER_BYTES} bytes"
            )
        if not _shallow(raw):
            raise PoolError(f"{self.url} answered {method} with JSON nested too deeply")
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):
            raise PoolError(
                f"{self.url} answered {method} with something not JSON"
            ) from None
        if not isinstance(document, dict):
            raise PoolError(f"{self.url} answered {method} with a non-object")
        return document


@contextlib.asynccontextmanager
async def open_remote_pool(
    url: str,
    *,
    proxy: bool = False,
    proxy_token: str | None = None,
    default_max_seconds: float = DEFAULT_MAX_SECONDS,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> AsyncIterator[RemotePool]:
    """Connect to a remote listener; ``proxy=True`` refuses one that cannot sign results."""
    pool = RemotePool(
        url,
        proxy_token=proxy_token,
        default_max_seconds=default_max_seconds,
        concurrency=concurrency,
    )
    try:
        await pool.start()
        if proxy:
            pool.require_proxy()
        yield pool
    finally:
        await pool.close()


def _waiting(answer: Mapping[str, Any]) -> bool:
    error = answer.get("error")
    return isinstance(error, Mapping) and error.get("code") in WAITING_CODES


def _pending(work_order_id: str) -> dict[str, Any]:
    return {
        "error": {
            "code": int(WorkOrderStatus.PENDING),
            "data": {"workOrderId": work_order_id},
        }
    }


def _request_id(document: Any) -> int | str | None:
    rpc_id = document.get("id") if isinstance(document, dict) else None
    if isinstance(rpc_id, bool) or not isinstance(rpc_id, int | str):
        return None
    return rpc_id


def _why(answer: Mapping[str, Any]) -> str:
    error = answer.get("error")
    if isinstance(error, Mapping):
        return f"code {error.get('code')}: {error.get('message')}"
    return "no result in the answer"


def _record(worker_id: str, retrieved: Any) -> WorkerPublicRecord | None:
    if not isinstance(retrieved, Mapping) or not isinstance(
        retrieved.get("details"), Mapping
    ):
        return None
    details = retrieved["details"]
    type_data = details.get("workerTypeData", {})
    try:
        key = crypto.load_verifying_key(type_data.get("verificationKey", ""))
    except (CryptoError, AttributeError):
        log.info("remote worker %s publishes no verification key; skipped", worker_id)
        return None
    address = address_of_public_key(key.format(compressed=False))
    return WorkerPublicRecord(
        worker_id=worker_id, signing_address=address, details=details
    )
