"""The EEA direct model: a JSON-RPC listener in front of the enclave pool.

Requesters POST EEA v1.1 JSON-RPC calls to the listener's root path, as
Avalon's listener served them: worker registry calls (``WorkerLookUp``,
``WorkerLookUpNext``, ``WorkerRetrieve``, and the administrative
``WorkerRegister``, ``WorkerUpdate``, ``WorkerSetStatus``), work orders
(``WorkOrderSubmit``, ``WorkOrderGetResult``), ``EncryptionKeyGet``, and
the receipt calls (see :mod:`enclave_bridge.listener_receipts`).

Answers, always HTTP 200 with a JSON-RPC body:

* A refused call gets ``error: {code, message, data: {workOrderId}}`` with
  the EEA code (2 invalid parameter, 3 access denied, 4 invalid
  signature, ...) and the standard JSON-RPC code in ``data.jsonrpcCode``.
  Nothing the requester sends produces a 500 or a stack trace.
* ``WorkOrderSubmit`` waits for the result up to ``responseTimeoutMSecs``
  (capped by ``max_sync_wait_s``); with 0, or when the wait runs out, it
  answers error code 6 (*scheduled*) and the requester polls
  ``WorkOrderGetResult``, which answers 5 (*pending*) until the signed
  result or error result exists. A second order with a known
  ``workOrderId`` is refused; past the in-flight caps (overall and per
  ``requesterId``) a submit answers 8 (*busy*) instead of queueing.
* Generic answers of the registry and receipt calls are EEA's: an
  ``error`` object with code 0 on success (as Avalon's listener answered).

``EncryptionKeyGet`` answers the worker's key with a real signature by the
worker's signing key: upper-case hex DER ECDSA secp256k1 (low S) over
SHA-256 of the ``encryptionKey`` PEM text exactly as returned (trailing
newline included) — the same bytes as ``encryptionKeySignature`` in the
worker's details, made inside the pool process that holds the key. The
listener holds no private key, so it cannot sign per-request nonces:
``encryptionKeyNonce`` is empty and ``tag`` is echoed unsigned.

Proxy-model extension (tcbridge listeners only, proxy bearer token
required): ``WorkOrderSubmit`` with ``tcbridge*`` parameters runs a bridge's
order for an on-chain target and answers the exact response bytes with the
result signature; see :mod:`enclave_bridge.listener_proxy`. Receipts are in
:mod:`enclave_bridge.listener_receipts`, the order book in
:mod:`enclave_bridge.listener_book`, request checks in
:mod:`enclave_bridge.listener_schema`.
``TcbridgeInfo`` tells such a client it talks to a tcbridge listener.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from enclave_bridge.eea import (
    EeaError,
    Limits,
    LoadedRequest,
    WorkOrderStatus,
    parse_request,
)
from enclave_bridge.errors import (
    ConfigurationError,
    PoolError,
    StoreError,
    WorkOrderError,
)
from enclave_bridge.identity import verify_encryption_key_signature
from enclave_bridge.listener_book import OrderBook, OrderRow
from enclave_bridge.listener_proxy import (
    check_binding,
    proxy_extension,
    target_from_json,
)
from enclave_bridge.listener_receipts import ReceiptDesk
from enclave_bridge.listener_schema import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    JSONRPC_CODE_FOR_EEA,
    METHOD_NOT_FOUND,
    SCHEMAS,
    SERVER_ERROR,
    RpcCall,
    RpcFailure,
    body_encoding,
    check_params,
    invalid_params,
    parse_envelope,
    url_allowed,
)
from enclave_bridge.pool import PoolJob, PoolResult, Target, WorkerPublicRecord

log = logging.getLogger(__name__)

# EEA worker status values.
WORKER_ACTIVE = 1
WORKER_STATUSES = (1, 2, 3, 4)  # active, offline, decommissioned, compromised
# EEA worker type of the pool's workers: a TEE (simulated attestation says so
# in the details' proofDataType).
TEE_WORKER_TYPE = 1
# Bound on what a notifyUri answer may make us read.
NOTIFY_READ_BYTES = 64 * 1024
# Answers are written to the book together, at most this late (_schedule_flush).
FLUSH_DELAY_S = 0.02
# A call whose order is not yet written waits at most this long for the
# write: a few orders share each commit, and the caller barely notices.
DURABLE_FLUSH_DELAY_S = 0.003
# More buffered orders and answers than this are written at once.
FLUSH_BATCH = 256
# How often answered orders past [listener] keep_answered_days are dropped.
PRUNE_INTERVAL_S = 3600.0
# Room for a call's envelope and its other parameters next to a work order.
ENVELOPE_BYTES = 64 * 1024
PROXY_FIELDS = ("tcbridgeRequest", "tcbridgeTarget", "tcbridgeOrderKey")
EXTENSION_VERSION = 1


class WorkOrderBackend(Protocol):
    """What the listener needs from a pool: local (EnclavePool) or remote."""

    async def submit(self, job: PoolJob) -> PoolResult: ...

    def worker_records(self) -> Mapping[str, WorkerPublicRecord]: ...


@dataclass(frozen=True)
class ListenerSettings:
    """How one listener behaves; :meth:`from_config` reads ``[listener]``."""

    name: str = "tcbridge"
    max_body_bytes: int = 4 * 1024 * 1024
    max_sync_wait_s: float = 60.0
    # Execution cap per order when the request names no responseTimeoutMSecs.
    default_max_seconds: float = 30.0
    lookup_page_size: int = 100
    notify_timeout_s: float = 5.0
    # Past these, WorkOrderSubmit answers BUSY (8) instead of queueing.
    max_running_orders: int = 4096
    max_in_flight_per_requester: int = 64
    url_allowlist: tuple[str, ...] = ()
    organization_id: str = ""
    application_type_id: str = ""
    admin_token: str | None = field(default=None, repr=False)
    proxy_token: str | None = field(default=None, repr=False)
    # The caps of the pool behind the listener: an order over them is refused
    # here, before it is stored. None: the body limit only.
    work_order_limits: Limits | None = None
    # Answered orders leave the book this long after their answer (0: never).
    keep_answered_s: float = 7 * 86400.0

    @classmethod
    def from_config(
        cls, config: Any, env: Mapping[str, str] | None = None
    ) -> ListenerSettings:
        from connector.config import read_secret

        def secret(what: str, file_setting: str, env_name: str) -> str | None:
            try:
                return read_secret(what, file_setting, env_name, config, env)
            except ConfigurationError:
                if file_setting:
                    raise
                return None

        section = config.listener
        return cls(
            name=section.name,
            max_body_bytes=section.max_body_bytes,
            max_sync_wait_s=section.max_sync_wait_s,
            default_max_seconds=config.pool.execution_timeout_s,
            lookup_page_size=section.lookup_page_size,
            max_in_flight_per_requester=config.limits.max_in_flight_per_requester,
            work_order_limits=config.limits.work_order_limits(),
            keep_answered_s=section.keep_answered_days * 86400.0,
            notify_timeout_s=section.notify_timeout_s,
            url_allowlist=tuple(config.guards.url_allowlist),
            organization_id=section.organization_id,
            application_type_id=section.application_type_id,
            admin_token=secret(
                "listener admin token",
                section.admin_token_file,
                "TCBRIDGE_LISTENER_ADMIN_TOKEN",
            ),
            proxy_token=secret(
                "listener proxy token",
                section.proxy_token_file,
                "TCBRIDGE_LISTENER_PROXY_TOKEN",
            ),
        )


@dataclass
class ListenerStats:
    """A cheap snapshot for health checks and metrics."""

    requests: int = 0
    refused: int = 0
    orders_submitted: int = 0
    orders_running: int = 0
    notifications_sent: int = 0
    notifications_blocked: int = 0


# A handler answers a JSON-RPC object, or the exact bytes to send (a pool answer).
Answer = dict[str, Any] | bytes
Handler = Callable[[RpcCall, web.Request], Awaitable[Answer]]


class EeaListener:
    """See the module docstring. Serve it with :func:`serve_listener`."""

    def __init__(
        self,
        backend: WorkOrderBackend,
        book: OrderBook,
        settings: ListenerSettings = ListenerSettings(),
    ) -> None:
        self.backend = backend
        self.book = book
        self.settings = settings
        self.stats = ListenerStats()
        limits = settings.work_order_limits or Limits(
            max_request_bytes=settings.max_body_bytes
        )
        self._limits = dataclasses.replace(
            limits,
            max_request_bytes=min(settings.max_body_bytes, limits.max_request_bytes),
        )
        # No call needs more than the largest work order, base64-encoded for
        # the proxy extension, plus room for the envelope: a body past that is
        # refused before the event loop spends time decoding it.
        self._body_limit = min(
            settings.max_body_bytes,
            self._limits.max_request_bytes * 4 // 3 + ENVELOPE_BYTES,
        )
        # Running orders by book key; each task finishes its order in the book.
        self._running: dict[str, asyncio.Task[PoolResult]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._notifications: set[asyncio.Task[None]] = set()
        # Worker id (lower case) -> EEA status, mirrored from the book for the
        # hot path; every write to a worker record goes through _put_worker.
        self._worker_status: dict[str, int] = {}
        # Running orders per requesterId (lower case; "" for bridge orders).
        self._per_requester: dict[str, int] = {}
        self._receipts = ReceiptDesk(book, self._known_worker)
        # The book's next write (see _schedule_flush) and what waits for it.
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_at = 0.0
        self._flushed: asyncio.Future[None] | None = None
        self._closing = False
        self._pruner: asyncio.Task[None] | None = None
        # Lower-case ids of the workers the backend serves (set at start).
        self._pool_workers: set[str] = set()
        self._methods: dict[str, Handler] = {
            "WorkerLookUp": self._worker_lookup,
            "WorkerLookUpNext": self._worker_lookup,
            "WorkerRetrieve": self._worker_retrieve,
            "WorkerRegister": self._worker_register,
            "WorkerUpdate": self._worker_update,
            "WorkerSetStatus": self._worker_set_status,
            "WorkOrderSubmit": self._work_order_submit,
            "WorkOrderGetResult": self._work_order_get_result,
            "EncryptionKeyGet": self._encryption_key_get,
            "WorkOrderReceiptCreate": self._receipt_create,
            "WorkOrderReceiptUpdate": self._receipt_update,
            "WorkOrderReceiptRetrieve": self._receipt_retrieve,
            "WorkOrderReceiptUpdateRetrieve": self._receipt_update_retrieve,
            "WorkOrderReceiptLookUp": self._receipt_lookup,
            "WorkOrderReceiptLookUpNext": self._receipt_lookup,
            "TcbridgeInfo": self._info,
        }

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Publish the pool's workers and hand unfinished orders to the pool again."""
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.notify_timeout_s)
        )
        for worker_id, record in self.backend.worker_records().items():
            self._pool_workers.add(worker_id.lower())
            stored = self.book.worker(worker_id) or {}
            # Keys and evidence always come from the pool; the rest of the
            # details and the status keep what the operator set through the API.
            details = {
                **dict(stored.get("details", {})),
                **{
                    k: v
                    for k, v in record.details.items()
                    if k not in stored.get("details", {})
                },
                "workerTypeData": record.details.get("workerTypeData", {}),
            }
            self._put_worker(
                worker_id,
                {
                    "workerType": TEE_WORKER_TYPE,
                    "organizationId": self.settings.organization_id,
                    "applicationTypeId": [self.settings.application_type_id]
                    if self.settings.application_type_id
                    else [],
                    "details": details,
                    "status": stored.get("status", WORKER_ACTIVE),
                    "pool": True,
                },
            )
        for worker_id, stored_record in self.book.workers():
            status = stored_record.get("status", WORKER_ACTIVE)
            self._worker_status[worker_id] = int(status)
        for row in self.book.pending_orders():
            log.info("resuming direct work order %s", row.work_order_id)
            self._launch(row, target_from_json(row.target), None)
        if self.settings.keep_answered_s > 0:
            self._pruner = asyncio.create_task(self._prune_every(PRUNE_INTERVAL_S))

    async def _prune_every(self, interval: float) -> None:
        """Drop answered orders older than keep_answered_s, now and every interval.

        Anyone may submit in the direct model, so an unpruned book only grows.
        """
        while True:
            cutoff = time.time() - self.settings.keep_answered_s
            try:
                dropped = self.book.prune_answered(cutoff)
            except StoreError as exc:
                log.error("listener: pruning the order book failed: %s", exc)
            else:
                if dropped:
                    log.info("listener: dropped %d answered orders", dropped)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """Stop running orders (they resume on the next start) and notifications."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._closing = True
        self._flush()
        if self._pruner is not None:
            self._pruner.cancel()
        tasks = [*self._running.values(), *self._notifications]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._http is not None:
            await self._http.close()

    def metrics(self) -> dict[str, int]:
        """Gauges and counters for the ops server's Prometheus page (no I/O)."""
        stats = self.stats
        return {
            "listener_requests_total": stats.requests,
            "listener_refused_total": stats.refused,
            "listener_orders_submitted_total": stats.orders_submitted,
            "listener_orders_running": len(self._running),
            "listener_notifications_sent_total": stats.notifications_sent,
            "listener_notifications_blocked_total": stats.notifications_blocked,
        }

    def app(self) -> web.Application:
        """The aiohttp application: POST JSON-RPC to its root."""
        app = web.Application(client_max_size=self._body_limit + 1)
        app.router.add_post("/", self.handle)
        app.router.add_route("*", "/{tail:.*}", self._elsewhere)
        return app

    async def _elsewhere(self, request: web.Request) -> web.Response:
        """Any other method or path: a JSON-RPC error too, not an HTML page."""
        failure = RpcFailure(
            EeaError.INVALID_PARAMETER,
            f"{request.method} {request.path[:64]} is not served: POST JSON-RPC to /",
            jsonrpc_code=INVALID_REQUEST,
        )
        return web.Response(
            body=json.dumps(_error_body(None, failure)).encode(),
            content_type="application/json",
        )

    # --- one HTTP request ------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one JSON-RPC call; never raises, never answers 500."""
        self.stats.requests += 1
        rpc_id: int | str | None = None
        call: RpcCall | None = None
        try:
            encoding = body_encoding(request.headers)
            if encoding is not None:
                raise RpcFailure(
                    EeaError.INVALID_PARAMETER,
                    f"Content-Encoding {encoding[:32]!r} is not accepted: send the "
                    "JSON-RPC body uncompressed",
                    jsonrpc_code=INVALID_REQUEST,
                )
            raw = await self._read_body(request)
            call = parse_envelope(raw)
            rpc_id = call.rpc_id
            handler = self._methods.get(call.method)
            if handler is None:
                raise RpcFailure(
                    EeaError.INVALID_PARAMETER,
                    f"unknown method {call.method[:64]!r}",
                    jsonrpc_code=METHOD_NOT_FOUND,
                )
            body = await handler(call, request)
        except RpcFailure as failure:
            self.stats.refused += 1
            if failure.work_order_id is None and call is not None:
                failure.work_order_id = _short(call.params.get("workOrderId"))
            body = _error_body(
                rpc_id if failure.rpc_id is None else failure.rpc_id, failure
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("listener: unexpected failure answering a call")
            body = _error_body(
                rpc_id,
                RpcFailure(
                    EeaError.UNKNOWN_ERROR,
                    "internal error; the operator's log has details",
                    jsonrpc_code=INTERNAL_ERROR,
                ),
            )
        if not isinstance(body, bytes):
            body = json.dumps(body, separators=(",", ":")).encode()
        return web.Response(
            body=body,
            content_type="application/json",
        )

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._body_limit
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _too_large(declared, limit)
        chunks: list[bytes] = []
        size = 0
        # Content-Length can be absent (chunked) or lie: count what arrives.
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_token(self, request: web.Request, token: str | None, what: str) -> None:
        if token is None:
            raise RpcFailure(
                EeaError.ACCESS_DENIED,
                f"{what} is disabled on this listener: no token is configured",
            )
        sent = request.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise RpcFailure(
                EeaError.ACCESS_DENIED,
                f"{what} needs the operator's bearer token (Authorization header)",
            )

    def _put_worker(self, worker_id: str, record: Mapping[str, Any]) -> None:
        self.book.put_worker(worker_id, record)
        self._worker_status[worker_id.lower()] = int(record["status"])

    # --- workers -----------------------------------------------------------------

    async def _worker_lookup(self, call: RpcCall, _: web.Request) -> dict[str, Any]:
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        ids = []
        for worker_id, record in self.book.workers():
            if (
                "workerType" in params
                and record.get("workerType") != params["workerType"]
            ):
                continue
            org = params.get("organizationId")
            if (
                org is not None
                and str(record.get("organizationId", "")).lower() != org.lower()
            ):
                continue
            app_id = params.get("applicationTypeId")
            if app_id is not None and app_id.lower() not in [
                str(a).lower() for a in record.get("applicationTypeId", [])
            ]:
                continue
            ids.append(worker_id)
        return _result(call, self._page(ids, params.get("lookUpTag")))

    def _page(self, ids: list[str], after: str | None) -> dict[str, Any]:
        """One page of sorted ids; ``lookupTag`` is the last id when more remain."""
        total = len(ids)
        if after is not None:
            ids = [i for i in ids if i > after.lower()]
        page = ids[: self.settings.lookup_page_size]
        more = len(ids) > len(page)
        return {"totalCount": total, "lookupTag": page[-1] if more else "", "ids": page}

    def _known_worker(self, worker_id: str) -> dict[str, Any]:
        record = self.book.worker(worker_id)
        if record is None:
            raise invalid_params(f"workerId {worker_id} is not registered here")
        return record

    async def _worker_retrieve(self, call: RpcCall, _: web.Request) -> dict[str, Any]:
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        record = self._known_worker(params["workerId"])
        return _result(
            call,
            {
                "workerType": record["workerType"],
                "organizationId": record.get("organizationId", ""),
                "applicationTypeId": record.get("applicationTypeId", []),
                "details": record["details"],
                "status": record["status"],
            },
        )

    async def _worker_register(
        self, call: RpcCall, request: web.Request
    ) -> dict[str, Any]:
        self._check_token(request, self.settings.admin_token, "WorkerRegister")
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        record = {
            "workerType": params["workerType"],
            "organizationId": params.get("organizationId", ""),
            "applicationTypeId": params.get("applicationTypeId", []),
            "details": params["details"],
            "status": WORKER_ACTIVE,
            "pool": False,
        }
        if not self.book.add_worker(params["workerId"], record):
            raise invalid_params(f"workerId {params['workerId']} is already registered")
        self._worker_status[params["workerId"].lower()] = WORKER_ACTIVE
        log.info("worker %s registered through the listener", params["workerId"])
        return _generic(call, "worker registered")

    async def _worker_update(
        self, call: RpcCall, request: web.Request
    ) -> dict[str, Any]:
        self._check_token(request, self.settings.admin_token, "WorkerUpdate")
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        record = self._known_worker(params["workerId"])
        details = dict(params["details"])
        if record.get("pool"):
            # A pool worker's keys and evidence come from the pool, never a caller.
            details["workerTypeData"] = record["details"].get("workerTypeData", {})
        record["details"] = details
        self._put_worker(params["workerId"], record)
        return _generic(call, "worker details updated")

    async def _worker_set_status(
        self, call: RpcCall, request: web.Request
    ) -> dict[str, Any]:
        self._check_token(request, self.settings.admin_token, "WorkerSetStatus")
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        if params["status"] not in WORKER_STATUSES:
            raise invalid_params("WorkerSetStatus: status must be 1, 2, 3 or 4")
        record = self._known_worker(params["workerId"])
        record["status"] = params["status"]
        self._put_worker(params["workerId"], record)
        log.info("worker %s status set to %d", params["workerId"], params["status"])
        return _generic(call, "worker status set")

    async def _encryption_key_get(
        self, call: RpcCall, _: web.Request
    ) -> dict[str, Any]:
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        record = self._known_worker(params["workerId"])
        type_data = record["details"].get("workerTypeData", {})
        key = type_data.get("encryptionKey")
        signature = type_data.get("encryptionKeySignature")
        verification = type_data.get("verificationKey")
        if not all(isinstance(v, str) for v in (key, signature, verification)):
            raise invalid_params(
                f"worker {params['workerId']} publishes no encryption key"
            )
        if not verify_encryption_key_signature(verification, key, signature):
            raise RpcFailure(
                EeaError.INVALID_SIGNATURE,
                f"worker {params['workerId']}'s encryption key is not signed by its "
                "verification key; do not use it",
            )
        return _result(
            call,
            {
                "workerId": params["workerId"],
                "encryptionKey": key,
                "encryptionKeyNonce": "",
                "tag": params.get("tag", ""),
                "signature": signature,
            },
        )

    async def _info(self, call: RpcCall, _: web.Request) -> dict[str, Any]:
        check_params(call.params, SCHEMAS[call.method], method=call.method)
        return _result(
            call,
            {
                "implementation": "tcbridge",
                "extensionVersion": EXTENSION_VERSION,
                "extensions": ["tcbridgeTarget"],
                "name": self.settings.name,
            },
        )

    # --- work orders ---------------------------------------------------------------

    async def _work_order_submit(self, call: RpcCall, request: web.Request) -> Answer:
        if any(name in call.params for name in PROXY_FIELDS):
            return await self._proxy_submit(call, request)

        limit = self._limits.max_request_bytes
        if len(call.raw) > limit:
            # The body goes to the pool as it is: its own cap decides.
            raise RpcFailure(
                EeaError.INVALID_PARAMETER,
                f"the work order is {len(call.raw)} bytes; this worker service "
                f"takes at most {limit} bytes per work order",
                work_order_id=_short(call.params.get("workOrderId")),
                jsonrpc_code=INVALID_REQUEST,
            )
        try:
            # The envelope as decoded, its size checked above: the request is
            # not encoded again to measure it.
            parsed = parse_request(LoadedRequest(call.document), self._limits)
        except WorkOrderError as exc:
            raise RpcFailure(
                exc.code, str(exc), work_order_id=_short(call.params.get("workOrderId"))
            ) from None
        work_order_id = parsed.work_order_id
        # Avalon's clients send a notifyUri (" " when they have none), so one
        # off the allow-list is not a reason to refuse the order: it is never
        # called, and a "scheduled" answer says so.
        notify_uri = (parsed.notify_uri or "").strip() or None
        unnotified = notify_uri is not None and not url_allowed(
            notify_uri, self.settings.url_allowlist
        )
        self._check_capacity(parsed.requester_id.lower(), work_order_id)
        if parsed.worker_id.lower() not in self._pool_workers:
            raise invalid_params(
                f"workerId {parsed.worker_id} is not a worker of this service; "
                "WorkerLookUp lists them",
                work_order_id,
            )
        status = self._worker_status.get(parsed.worker_id.lower())
        if status is not None and status != WORKER_ACTIVE:
            raise invalid_params(
                f"worker {parsed.worker_id} is not active (status {status})",
                work_order_id,
            )

        # The body as received is the request: the pool parses it again in its
        # own process, and its answer then carries this call's id unchanged.
        body = call.raw
        # responseTimeoutMSecs bounds how long the caller waits, not how long the
        # order may run: past it the order goes on and the answer is "scheduled".
        timeout_ms = parsed.response_timeout_msecs or 0
        max_seconds = self.settings.default_max_seconds
        row = OrderRow(
            key=f"wo:{work_order_id.lower()}",
            work_order_id=work_order_id,
            request=body,
            request_sha256=hashlib.sha256(body).digest(),
            requester_id=parsed.requester_id.lower(),
            verifying_key=parsed.verifying_key or "",
            target=None,
            max_seconds=max_seconds,
            state="pending",
            status=None,
            response=None,
            extension=None,
        )
        if not self.book.add_order(row):
            raise invalid_params(
                f"workOrderId {work_order_id} was already submitted; use a new id "
                "or ask WorkOrderGetResult",
                work_order_id,
            )
        self.stats.orders_submitted += 1
        task = self._launch(row, None, notify_uri)
        return await self._answer_when_done(
            call,
            task,
            row,
            timeout_ms / 1000,
            scheduled_note=(
                "; notifyUri is not on this listener's URL allow-list and will "
                "not be called: poll WorkOrderGetResult"
                if unnotified
                else ""
            ),
        )

    async def _proxy_submit(self, call: RpcCall, request: web.Request) -> Answer:
        self._check_token(
            request, self.settings.proxy_token, "the proxy-model extension"
        )
        params = check_params(
            call.params,
            {
                "tcbridgeRequest": ("b64", True),
                "tcbridgeTarget": ("object", False),
                "tcbridgeOrderKey": ("str", True),
                "tcbridgeMaxSeconds": ("num", False),
                "responseTimeoutMSecs": ("int", False),
            },
            method="WorkOrderSubmit (tcbridge extension)",
        )
        raw = base64.b64decode(params["tcbridgeRequest"])
        if len(raw) > self._limits.max_request_bytes:
            raise _too_large(len(raw), self._limits.max_request_bytes)
        target_json = params.get("tcbridgeTarget")
        target = target_from_json(json.dumps(target_json)) if target_json else None
        if target is not None:
            check_binding(target, raw)
        key = f"bridge:{params['tcbridgeOrderKey']}"
        digest = hashlib.sha256(raw).digest()
        existing = self.book.order(key)
        if existing is not None and existing.request_sha256 != digest:
            raise invalid_params(
                f"order key {params['tcbridgeOrderKey']} was used for another request"
            )
        row = existing or OrderRow(
            key=key,
            work_order_id=_short(_peek(raw, "workOrderId")) or "",
            request=raw,
            request_sha256=digest,
            requester_id="",
            verifying_key="",
            target=json.dumps(target_json) if target_json else None,
            max_seconds=float(
                params.get("tcbridgeMaxSeconds", self.settings.default_max_seconds)
            ),
            state="pending",
            status=None,
            response=None,
            extension=None,
        )
        created = existing is None and self.book.add_order(row)
        if created:
            self.stats.orders_submitted += 1
        task = self._running.get(key)
        launched = created or (row.state == "pending" and task is None)
        if launched:
            task = self._launch(row, target, None)
        wait = params.get(
            "responseTimeoutMSecs", int(self.settings.max_sync_wait_s * 1000)
        )
        answer = await self._answer_when_done(call, task, row, wait / 1000)
        if not launched and isinstance(answer, dict) and "tcbridge" in answer:
            # As EnclavePool reports a retry: this call ran nothing.
            answer["tcbridge"]["executed"] = False
        return answer

    def _schedule_flush(self, delay: float = FLUSH_DELAY_S) -> None:
        """Write the book's buffer within ``delay``: one commit for many orders.

        An answer lost with the process before its write is not lost work:
        the order is still pending in the book, the next start hands it to the
        pool again, and the pool answers the committed result of its order key.
        An order's own row is written before any call about it is answered
        (:meth:`_durable`), so an accepted order survives a crash.
        """
        loop = asyncio.get_running_loop()
        if self.book.buffered() >= FLUSH_BATCH:
            delay = 0.0
        due = loop.time() + delay
        if self._flush_timer is not None:
            if self._flush_at <= due:
                return
            self._flush_timer.cancel()
        self._flush_at = due
        self._flush_timer = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        waiters, self._flushed = self._flushed, None
        try:
            self.book.flush()
        except StoreError as exc:
            log.error("listener: %s; retrying", exc)
            if waiters is not None:
                waiters.set_exception(exc)
            if not self._closing:
                self._schedule_flush()
            return
        if waiters is not None:
            waiters.set_result(None)

    async def _durable(self, key: str) -> None:
        """Return once the order's row is in the book's database."""
        if self.book.written(key):
            return
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
            # A flush that fails with no call left waiting is logged, not raised.
            self._flushed.add_done_callback(_consume)
        flushed = self._flushed
        self._schedule_flush(DURABLE_FLUSH_DELAY_S)
        await asyncio.shield(flushed)

    def _check_capacity(self, requester_id: str, work_order_id: str) -> None:
        """Refuse with BUSY rather than queue without bound.

        requesterId is self-declared in the direct model, so the per-requester
        cap only keeps honest heavy users fair; the overall cap bounds memory.
        """
        if len(self._running) >= self.settings.max_running_orders:
            raise RpcFailure(
                WorkOrderStatus.BUSY,
                "the worker service is busy; submit again later",
                work_order_id=work_order_id,
            )
        if self._per_requester.get(requester_id, 0) >= (
            self.settings.max_in_flight_per_requester
        ):
            raise RpcFailure(
                WorkOrderStatus.BUSY,
                f"requester {requester_id} has "
                f"{self.settings.max_in_flight_per_requester} work orders in flight; "
                "submit again when one finished",
                work_order_id=work_order_id,
            )

    def _launch(
        self, row: OrderRow, target: Target, notify_uri: str | None
    ) -> asyncio.Task[PoolResult]:
        # Hashed: book keys carry requester-chosen ids of any length. The
        # request's digest is in it too, so an id used again once its order
        # left the book (see prune) never meets the old order's result.
        digest = hashlib.sha256(
            row.key.encode("utf-8", "surrogatepass") + row.request_sha256
        ).hexdigest()
        job = PoolJob(
            order_key=f"eea:{self.settings.name}:{digest}",
            request=row.request,
            target=target,
            max_seconds=row.max_seconds,
        )
        task = asyncio.create_task(self._run(row, job, notify_uri))
        # A failed run is logged in _run and retried on the next start.
        task.add_done_callback(_consume)
        self._running[row.key] = task
        self.stats.orders_running = len(self._running)
        requester = row.requester_id
        self._per_requester[requester] = self._per_requester.get(requester, 0) + 1
        return task

    async def _run(
        self, row: OrderRow, job: PoolJob, notify_uri: str | None
    ) -> PoolResult:
        try:
            result = await self.backend.submit(job)
        except PoolError as exc:
            # The order stays pending in the book; the next start resubmits it.
            log.error("work order %s: the pool failed: %s", row.work_order_id, exc)
            raise
        finally:
            self._running.pop(row.key, None)
            self.stats.orders_running = len(self._running)
            left = self._per_requester.pop(row.requester_id, 1) - 1
            if left > 0:
                self._per_requester[row.requester_id] = left
        extension = None
        if job.target is not None:
            extension = json.dumps(proxy_extension(result))
        self.book.finish_order(row.key, result.status, result.response_bytes, extension)
        self._schedule_flush()
        log.info(
            "direct work order %s finished with status %d",
            row.work_order_id,
            result.status,
        )
        if notify_uri:
            self._notify(notify_uri, row.work_order_id, result.status)
        return result

    async def _answer_when_done(
        self,
        call: RpcCall,
        task: asyncio.Task[PoolResult] | None,
        row: OrderRow,
        wait_s: float,
        *,
        scheduled_note: str = "",
    ) -> Answer:
        wait_s = min(wait_s, self.settings.max_sync_wait_s)
        done: set[asyncio.Task[PoolResult]] = set()
        if task is not None and wait_s > 0:
            done, _ = await asyncio.wait({task}, timeout=wait_s)
        finished = task if task is not None and task in done else None
        try:
            # The answer is what is known now ...
            return self._answer_now(call, finished, row, scheduled_note)
        finally:
            # ... and it goes out once the order it is about would survive a crash.
            await self._durable(row.key)

    def _answer_now(
        self,
        call: RpcCall,
        finished: asyncio.Task[PoolResult] | None,
        row: OrderRow,
        scheduled_note: str,
    ) -> Answer:
        if finished is not None:
            if finished.exception() is not None:
                raise RpcFailure(
                    EeaError.UNKNOWN_ERROR,
                    "the enclave pool could not run the work order; it will be "
                    "retried, ask WorkOrderGetResult later",
                    work_order_id=row.work_order_id,
                )
            if row.request == call.raw and row.target is None:
                # The pool answered this very body: its bytes carry this call's id.
                return finished.result().response_bytes
        stored = self.book.order(row.key)
        if stored is not None and stored.state == "done":
            if stored.request == call.raw and stored.response and not stored.extension:
                return stored.response
            return _stored_answer(call, stored)
        raise RpcFailure(
            WorkOrderStatus.SCHEDULED,
            "work order scheduled; ask WorkOrderGetResult for its result"
            + scheduled_note,
            work_order_id=row.work_order_id or None,
        )

    async def _work_order_get_result(
        self, call: RpcCall, request: web.Request
    ) -> dict[str, Any]:
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        work_order_id = params["workOrderId"]
        if "tcbridgeOrderKey" in params:
            self._check_token(
                request, self.settings.proxy_token, "the proxy-model extension"
            )
            key = f"bridge:{params['tcbridgeOrderKey']}"
        else:
            key = f"wo:{work_order_id.lower()}"
        stored = self.book.order(key)
        if stored is None:
            raise invalid_params(
                f"no work order {work_order_id} was submitted here", work_order_id
            )
        if stored.state != "done":
            raise RpcFailure(
                WorkOrderStatus.PENDING,
                "work order pending; ask again later",
                work_order_id=work_order_id,
            )
        return _stored_answer(call, stored)

    def _notify(self, url: str, work_order_id: str, status: int) -> None:
        if not url_allowed(url, self.settings.url_allowlist):
            self.stats.notifications_blocked += 1
            log.debug(
                "notifyUri of %s is not on the allow-list: not called", work_order_id
            )
            return
        task = asyncio.create_task(self._post_notification(url, work_order_id, status))
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    async def _post_notification(
        self, url: str, work_order_id: str, status: int
    ) -> None:
        assert self._http is not None
        body = {"workOrderId": work_order_id, "status": status}
        try:
            async with self._http.post(url, json=body, allow_redirects=False) as answer:
                await answer.content.read(NOTIFY_READ_BYTES)
            self.stats.notifications_sent += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("notifying %s about %s failed: %s", url, work_order_id, exc)

    # --- receipts -----------------------------------------------------------------

    async def _receipt_create(self, call: RpcCall, _: web.Request) -> dict[str, Any]:
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        self._known_worker(params["workerId"])
        self._receipts.create(params)
        return _generic(call, "receipt created", params["workOrderId"])

    async def _receipt_update(self, call: RpcCall, _: web.Request) -> dict[str, Any]:
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        self._receipts.update(params)
        return _generic(call, "receipt updated", params["workOrderId"])

    async def _receipt_retrieve(self, call: RpcCall, _: web.Request) -> dict[str, Any]:
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        return _result(call, self._receipts.retrieve(params["workOrderId"]))

    async def _receipt_update_retrieve(
        self, call: RpcCall, _: web.Request
    ) -> dict[str, Any]:
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        update = self._receipts.retrieve_update(
            params["workOrderId"], params.get("updaterId"), params["updateIndex"]
        )
        return _result(call, update)

    async def _receipt_lookup(self, call: RpcCall, _: web.Request) -> dict[str, Any]:
        params = check_params(call.params, SCHEMAS[call.method], method=call.method)
        ids = self.book.receipt_ids(
            params.get("workerServiceId"),
            params.get("workerId"),
            params.get("requesterId"),
            params.get("receiptStatus"),
        )
        return _result(call, self._page(ids, params.get("lastLookUpTag")))


@contextlib.asynccontextmanager
async def serve_listener(
    listener: EeaListener, listen: str = "127.0.0.1:0"
) -> AsyncIterator[str]:
    """Start the listener and its HTTP server; yields the base URL (127.0.0.1 by default)."""
    host, _, port = listen.rpartition(":")
    await listener.start()
    # No decompression: see body_encoding.
    runner = web.AppRunner(listener.app(), access_log=None, auto_decompress=False)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host or "127.0.0.1", int(port or 0))
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()  # type: ignore[attr-defined]
        yield f"http://{bound[0]}:{bound[1]}/"
    finally:
        await runner.cleanup()
        await listener.close()


@contextlib.asynccontextmanager
async def serve_from_config(
    config: Any, backend: WorkOrderBackend, env: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """The listener ``[listener]`` describes, in front of ``backend``; yields its URL."""
    section = config.listener
    book = OrderBook(config.path(section.book))
    listener = EeaListener(backend, book, ListenerSettings.from_config(config, env))
    try:
        async with serve_listener(listener, section.listen) as url:
            log.info("EEA listener %s serving on %s", section.name, url)
            yield url
    finally:
        book.close()


# --- helpers -------------------------------------------------------------------------


def _result(call: RpcCall, result: Mapping[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call.rpc_id, "result": dict(result)}


def _generic(
    call: RpcCall, message: str, work_order_id: str | None = None
) -> dict[str, Any]:
    """EEA's generic success answer: an error object with code 0."""
    data = {"workOrderId": work_order_id} if work_order_id else {}
    return {
        "jsonrpc": "2.0",
        "id": call.rpc_id,
        "error": {"code": int(EeaError.SUCCESS), "message": message, "data": data},
    }


def _error_body(rpc_id: int | str | None, failure: RpcFailure) -> dict[str, Any]:
    jsonrpc_code = failure.jsonrpc_code
    if jsonrpc_code is None:
        jsonrpc_code = JSONRPC_CODE_FOR_EEA.get(failure.code, SERVER_ERROR)
    data: dict[str, Any] = {
        "workOrderId": failure.work_order_id,
        "jsonrpcCode": jsonrpc_code,
    }
    return {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "error": {"code": failure.code, "message": failure.message, "data": data},
    }


def _stored_answer(call: RpcCall, stored: OrderRow) -> dict[str, Any]:
    assert stored.response is not None
    answer = dict(json.loads(stored.response))
    answer["id"] = call.rpc_id
    if stored.extension is not None:
        answer["tcbridge"] = json.loads(stored.extension)
    return answer


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _too_large(size: int, limit: int) -> RpcFailure:
    return RpcFailure(
        EeaError.INVALID_PARAMETER,
        f"the request body is {size} bytes or more; this listener takes at most "
        f"{limit} bytes",
        jsonrpc_code=-32600,
    )


def _short(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= 256 else None


def _peek(raw: bytes, name: str) -> Any:
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    params = document.get("params", document)
    return params.get(name) if isinstance(params, dict) else None
