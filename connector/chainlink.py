"""A Chainlink external adapter in front of the enclave pool.

A Chainlink node's ``bridge`` task POSTs ``{"id": <jobRunID>, "data": {...},
"responseURL": <optional>}`` with the bridge's bearer token. ``data`` holds
either the work-order parameters — ``workload`` (a name), ``inputs`` (a
list of strings, or ``input`` for one), optional ``workerId`` — from which
the adapter builds, encrypts and signs a tcbridge-style work order itself,
or ``request``: a ready EEA WorkOrderSubmit request (JSON-RPC object or
its params) that the caller encrypted for the worker.

A success answers HTTP 200::

    {"jobRunID": id, "statusCode": 200, "result": <first output>,
     "data": {"result": ..., "outputs": [...], "workOrderId": ...,
              "workerId": ..., "workerNonce": ..., "workerSignature": ...,
              "requestHash": ...}}

For built orders the adapter verifies the worker's signature and decrypts
the outputs (``result`` is the first output as UTF-8 text); for ready
requests it cannot decrypt, and ``result`` is the EEA ``result`` object.

A work order still running after ``pending_after_s`` is answered
``{"jobRunID": id, "pending": true}`` when the job gave a ``responseURL``;
the result is then PATCHed there (Chainlink's asynchronous bridge pattern,
the v2 ``/v2/resume/<id>`` body: ``value`` plus a string ``error``), only
if the URL's host is on the ``[guards] url_allowlist``. A repeated ``id``
never runs a second work order: it gets the first one's answer.

Errors never carry a stack trace: ``{"jobRunID", "status": "errored",
"statusCode", "error": {"name", "message"}}`` with one HTTP status per
cause (see :data:`ERRORS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from enclave_bridge.eea import _shallow
from enclave_bridge.errors import (
    ConfigurationError,
    PoolError,
    StoreError,
    TcbridgeError,
)
from enclave_bridge.listener import WorkOrderBackend
from enclave_bridge.listener_schema import body_encoding, url_allowed
from enclave_bridge.pool import PoolJob, PoolResult
from enclave_bridge.requester import (
    SentWorkOrder,
    WorkerDetails,
    build_work_order,
    verify_response,
)

log = logging.getLogger(__name__)

# Error name -> HTTP status (also the answer's statusCode): one per cause.
ERRORS: dict[str, int] = {
    "InvalidJSON": 400,
    "MissingJobRunID": 400,
    "InvalidInput": 400,
    "Unauthorized": 401,
    "ResponseURLNotAllowed": 403,
    "UnknownWorker": 404,
    "PayloadTooLarge": 413,
    "UnsupportedEncoding": 415,
    "WorkOrderRefused": 422,
    "InternalError": 500,
    "ResponseUnverified": 502,
    "WorkerCrashed": 502,
    "PoolUnavailable": 503,
    "WorkOrderTimeout": 504,
}
# Answers kept for repeated job run ids; the oldest are forgotten first.
MAX_REMEMBERED_JOBS = 10_000
MAX_INPUTS = 16


@dataclass(frozen=True)
class AdapterSettings:
    """How the adapter behaves; :meth:`from_config` reads ``[chainlink]``."""

    bridge_token: str | None = field(default=None, repr=False)
    # Sent on the PATCH to responseURL (the node's incoming bridge token).
    callback_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 1024 * 1024
    default_worker_id: str = ""
    pending_after_s: float = 2.0
    callback_timeout_s: float = 10.0
    execution_timeout_s: float = 30.0
    url_allowlist: tuple[str, ...] = ()
    # Where finished jobs' answers are kept, so a repeated id still gets its
    # first answer after a restart or once memory forgot it (None: memory only).
    answers_path: Path | None = None

    @classmethod
    def from_config(
        cls, config: Any, env: Mapping[str, str] | None = None
    ) -> AdapterSettings:
        from connector.config import read_secret

        section = config.chainlink
        callback = None
        if section.callback_token_file or (env or os.environ).get(
            "TCBRIDGE_CHAINLINK_CALLBACK_TOKEN"
        ):
            callback = read_secret(
                "Chainlink callback token",
                section.callback_token_file,
                "TCBRIDGE_CHAINLINK_CALLBACK_TOKEN",
                config,
                env,
            )
        return cls(
            bridge_token=read_secret(
                "Chainlink bridge token",
                section.bridge_token_file,
                "TCBRIDGE_CHAINLINK_BRIDGE_TOKEN",
                config,
                env,
            ),
            callback_token=callback,
            max_body_bytes=section.max_body_bytes,
            default_worker_id=section.default_worker_id,
            pending_after_s=section.pending_after_s,
            callback_timeout_s=section.callback_timeout_s,
            execution_timeout_s=section.execution_timeout_s,
            url_allowlist=tuple(config.guards.url_allowlist),
            answers_path=config.path(config.bridge.data_dir) / "chainlink-answers.db",
        )


class AdapterError(TcbridgeError):
    """One named failure of a job run; becomes the adapter's error answer.

    Its ``name`` says who must act: the caller (4xx names) or the operator
    and the pool (5xx names); it is never raised out of the adapter.
    """

    def __init__(self, name: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        if name not in ERRORS:
            raise ValueError(f"unknown adapter error {name!r}")
        self.name = name
        self.message = message
        self.extra = extra

    @property
    def status(self) -> int:
        return ERRORS[self.name]


@dataclass
class AdapterStats:
    """A cheap snapshot for health checks and metrics."""

    requests: int = 0
    errors: int = 0
    work_orders: int = 0
    repeats: int = 0
    callbacks_sent: int = 0
    callbacks_blocked: int = 0


@dataclass
class _Job:
    task: asyncio.Task[dict[str, Any]]
    response_url: str | None


class ChainlinkAdapter:
    """See the module docstring. Mount :meth:`app` on the ops server."""

    def __init__(self, backend: WorkOrderBackend, settings: AdapterSettings) -> None:
        if not settings.bridge_token:
            raise ConfigurationError(
                "the Chainlink adapter needs the bridge token: set "
                "TCBRIDGE_CHAINLINK_BRIDGE_TOKEN or [chainlink] bridge_token_file"
            )
        self.backend = backend
        self.settings = settings
        self.stats = AdapterStats()
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._callbacks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._answers = (
            _AnswerBook(settings.answers_path)
            if settings.answers_path is not None
            else None
        )

    def metrics(self) -> dict[str, int]:
        """Gauges and counters for the ops server's Prometheus page (no I/O)."""
        stats = self.stats
        return {
            "chainlink_requests_total": stats.requests,
            "chainlink_errors_total": stats.errors,
            "chainlink_work_orders_total": stats.work_orders,
            "chainlink_repeats_total": stats.repeats,
            "chainlink_jobs_running": sum(
                1 for job in self._jobs.values() if not job.task.done()
            ),
            "chainlink_callbacks_sent_total": stats.callbacks_sent,
        }

    def app(self) -> web.Application:
        """An aiohttp app answering POST at its root; closes its client on cleanup."""
        app = web.Application(client_max_size=self.settings.max_body_bytes + 1)
        app.router.add_post("/", self.handle)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, _: web.Application) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = [*(job.task for job in self._jobs.values()), *self._callbacks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._answers is not None:
            self._answers.close()
            self._answers = None

    # --- one job run -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one bridge call; every failure is a named error, never a trace."""
        self.stats.requests += 1
        job_run_id: str | None = None
        try:
            self._authenticate(request)
            body = await self._read_json(request)
            job_run_id = _job_run_id(body)
            data = body.get("data")
            if not isinstance(data, dict):
                raise AdapterError("InvalidInput", '"data" must be a JSON object')
            response_url = body.get("responseURL")
            if response_url is not None and (
                not isinstance(response_url, str)
                or not url_allowed(response_url, self.settings.url_allowlist)
            ):
                raise AdapterError(
                    "ResponseURLNotAllowed",
                    "responseURL's host is not on the operator's URL allow-list",
                )
            answer = await self._run_job(job_run_id, data, response_url)
        except AdapterError as error:
            self.stats.errors += 1
            return _error_response(job_run_id, error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("chainlink adapter: unexpected failure")
            self.stats.errors += 1
            return _error_response(
                job_run_id,
                AdapterError(
                    "InternalError", "internal error; the operator's log has details"
                ),
            )
        status = int(answer.get("statusCode", 200))
        return web.json_response(answer, status=status)

    def _authenticate(self, request: web.Request) -> None:
        sent = request.headers.get("Authorization", "").encode()
        expected = f"Bearer {self.settings.bridge_token}".encode()
        if not hmac.compare_digest(sent, expected):
            raise AdapterError(
                "Unauthorized",
                "send the bridge's token as 'Authorization: Bearer <token>'",
            )

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        encoding = body_encoding(request.headers)
        if encoding is not None:
            raise AdapterError(
                "UnsupportedEncoding",
                f"Content-Encoding {encoding[:32]!r} is not accepted: send the body "
                "uncompressed",
            )
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise AdapterError(
                "PayloadTooLarge", f"the body is larger than {limit} bytes"
            )
        raw = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            raw += chunk
            if len(raw) > limit:
                raise AdapterError(
                    "PayloadTooLarge", f"the body is larger than {limit} bytes"
                )
        if not _shallow(bytes(raw)):
            raise AdapterError("InvalidJSON", "the body nests too deeply")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise AdapterError("InvalidJSON", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise AdapterError("InvalidJSON", "the body is not a JSON object")
        return body

    async def _run_job(
        self, job_run_id: str, data: Mapping[str, Any], response_url: str | None
    ) -> dict[str, Any]:
        job = self._jobs.get(job_run_id)
        stored = (
            self._answers.get(job_run_id)
            if job is None and self._answers is not None
            else None
        )
        if job is not None or stored is not None:
            self.stats.repeats += 1
        if stored is not None:
            return stored
        if job is None:
            order = self._order_for(data)
            task = asyncio.create_task(self._execute(job_run_id, order))
            job = _Job(task, response_url)
            self._remember(job_run_id, job)
            self.stats.work_orders += 1
            if response_url is not None:
                task.add_done_callback(
                    lambda t: self._deliver(job_run_id, t, response_url)
                )

        if response_url is None:
            # Synchronous: the node waits on this connection.
            return await asyncio.shield(job.task)
        done, _ = await asyncio.wait({job.task}, timeout=self.settings.pending_after_s)
        if job.task in done:
            return job.task.result()
        return {"jobRunID": job_run_id, "pending": True, "statusCode": 200}

    def _remember(self, job_run_id: str, job: _Job) -> None:
        self._jobs[job_run_id] = job
        # Forget the oldest finished jobs first; a running job is never forgotten.
        excess = len(self._jobs) - MAX_REMEMBERED_JOBS
        if excess <= 0:
            return
        for old_id in [k for k, v in self._jobs.items() if v.task.done()][:excess]:
            del self._jobs[old_id]

    def _order_for(self, data: Mapping[str, Any]) -> _Order:
        if "request" in data:
            return _ready_order(data["request"])
        workload = data.get("workload")
        if not isinstance(workload, str) or not workload:
            raise AdapterError(
                "InvalidInput", 'data needs "workload" (or a ready "request")'
            )
        inputs = data.get("inputs", [data["input"]] if "input" in data else None)
        if (
            not isinstance(inputs, list)
            or not inputs
            or len(inputs) > MAX_INPUTS
            or not all(isinstance(i, str) for i in inputs)
        ):
            raise AdapterError(
                "InvalidInput",
                f'data needs "inputs": a list of 1 to {MAX_INPUTS} strings (or "input")',
            )
        details = self._worker(data.get("workerId"))
        sent = build_work_order(details, workload, [i.encode() for i in inputs])
        return _Order(sent=sent, details=details, params=sent.params)

    def _worker(self, requested: Any) -> WorkerDetails:
        records = self.backend.worker_records()
        worker_id = requested or self.settings.default_worker_id
        if not worker_id and len(records) == 1:
            worker_id = next(iter(records))
        if not isinstance(worker_id, str) or not worker_id:
            raise AdapterError("InvalidInput", 'name the worker in "workerId"')
        record = records.get(worker_id) or next(
            (r for wid, r in records.items() if wid.lower() == worker_id.lower()), None
        )
        if record is None:
            raise AdapterError(
                "UnknownWorker", f"no worker {worker_id[:80]} in this pool"
            )
        return WorkerDetails.from_json(record.details, record.worker_id)

    async def _execute(self, job_run_id: str, order: _Order) -> dict[str, Any]:
        answer = await self._work(job_run_id, order)
        if self._answers is not None:
            try:
                self._answers.put(job_run_id, answer)
            except StoreError as exc:
                log.error("chainlink job run %s: %s", job_run_id, exc)
        return answer

    async def _work(self, job_run_id: str, order: _Order) -> dict[str, Any]:
        request = json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "WorkOrderSubmit",
                "id": 1,
                "params": order.params,
            },
            separators=(",", ":"),
        ).encode()
        # The request's digest is in the key: a job whose answer was lost with
        # the process (it ran, nobody heard) builds a new request when the
        # node asks again, and must not meet the old, unreadable result.
        key = hashlib.sha256(
            job_run_id.encode("utf-8", "surrogatepass")
            + hashlib.sha256(request).digest()
        ).hexdigest()
        job = PoolJob(
            order_key=f"chainlink:{key}",
            request=request,
            max_seconds=self.settings.execution_timeout_s,
        )
        try:
            result = await self.backend.submit(job)
        except PoolError as exc:
            return _error_answer(job_run_id, AdapterError("PoolUnavailable", str(exc)))
        log.info(
            "chainlink job run %s: work order finished, status %d",
            job_run_id,
            result.status,
        )
        try:
            return _answer(job_run_id, order, result)
        except AdapterError as error:
            return _error_answer(job_run_id, error)

    # --- asynchronous delivery -----------------------------------------------------

    def _deliver(
        self, job_run_id: str, done: asyncio.Task[dict[str, Any]], url: str
    ) -> None:
        if done.cancelled():
            return
        if done.exception() is not None:
            log.error("chainlink job run %s failed: %r", job_run_id, done.exception())
            answer = _error_answer(
                job_run_id,
                AdapterError(
                    "InternalError", "internal error; the operator's log has details"
                ),
            )
        else:
            answer = done.result()
        callback = asyncio.create_task(self._patch(url, job_run_id, answer))
        self._callbacks.add(callback)
        callback.add_done_callback(self._callbacks.discard)

    async def _patch(self, url: str, job_run_id: str, answer: dict[str, Any]) -> None:
        # The allow-list was checked when the job arrived; check again, it is cheap.
        if not url_allowed(url, self.settings.url_allowlist):
            self.stats.callbacks_blocked += 1
            return
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.callback_timeout_s)
            )
        error = answer.get("error")
        body = {
            **answer,
            "value": answer.get("result"),
            "error": f"{error['name']}: {error['message']}"
            if isinstance(error, dict)
            else None,
        }
        headers = {}
        if self.settings.callback_token:
            headers["Authorization"] = f"Bearer {self.settings.callback_token}"
        try:
            async with self._http.patch(
                url, json=body, headers=headers, allow_redirects=False
            ) as reply:
                await reply.content.read(64 * 1024)
            self.stats.callbacks_sent += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error(
                "chainlink job run %s: PATCH to responseURL failed: %s", job_run_id, exc
            )


@dataclass(frozen=True)
class _Order:
    params: Mapping[str, Any]
    sent: SentWorkOrder | None = None
    details: WorkerDetails | None = None


def _ready_order(request: Any) -> _Order:
    if isinstance(request, str):
        if not _shallow(request.encode("utf-8", "surrogatepass")):
            raise AdapterError("InvalidInput", "data.request nests too deeply")
        try:
            request = json.loads(request)
        except (ValueError, RecursionError):
            raise AdapterError("InvalidInput", "data.request is not JSON") from None
    if not isinstance(request, dict):
        raise AdapterError(
            "InvalidInput", "data.request must be a WorkOrderSubmit request"
        )
    params = request.get("params", request)
    if not isinstance(params, dict) or not isinstance(params.get("workOrderId"), str):
        raise AdapterError("InvalidInput", "data.request has no workOrderId")
    return _Order(params=params)


def _answer(job_run_id: str, order: _Order, result: PoolResult) -> dict[str, Any]:
    response = result.response
    work_order_id = order.params.get("workOrderId")
    if result.status != 0:
        if result.pool_failure == "timeout":
            raise AdapterError(
                "WorkOrderTimeout", "the work order ran past its time cap"
            )
        if result.pool_failure == "crashed":
            raise AdapterError(
                "WorkerCrashed", "the worker process crashed on this order"
            )
        error = response.get("error", {})
        raise AdapterError(
            "WorkOrderRefused",
            str(error.get("message", "the worker refused the work order")),
            eeaCode=result.status,
            workOrderId=work_order_id,
        )

    eea = response["result"]
    data: dict[str, Any] = {
        "workOrderId": eea["workOrderId"],
        "workerId": eea["workerId"],
        "workerNonce": eea["workerNonce"],
        "workerSignature": eea["workerSignature"],
        "requestHash": result.request_hash.hex() if result.request_hash else None,
    }
    if order.sent is not None and order.details is not None:
        verdict = verify_response(order.sent, response, order.details)
        if not verdict.accepted:
            raise AdapterError("ResponseUnverified", verdict.reason)
        outputs = [o.data.decode("utf-8", "replace") for o in verdict.outputs]
        data["outputs"] = outputs
        data["result"] = outputs[0]
    else:
        data["result"] = eea
    return {
        "jobRunID": job_run_id,
        "data": data,
        "result": data["result"],
        "statusCode": 200,
    }


def _job_run_id(body: Mapping[str, Any]) -> str:
    value = body.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise AdapterError(
            "MissingJobRunID", 'the request needs an "id" (the job run id)'
        )
    text = str(value)
    if len(text) > 256:
        raise AdapterError("MissingJobRunID", '"id" is longer than 256 characters')
    return text


def _error_answer(job_run_id: str | None, error: AdapterError) -> dict[str, Any]:
    return {
        "jobRunID": job_run_id,
        "status": "errored",
        "statusCode": error.status,
        "error": {"name": error.name, "message": error.message, **error.extra},
    }


def _error_response(job_run_id: str | None, error: AdapterError) -> web.Response:
    return web.json_response(_error_answer(job_run_id, error), status=error.status)


class _AnswerBook:
    """Finished jobs' answers by job run id, in a small SQLite file of their own."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (job_run_id TEXT PRIMARY KEY,"
                " answer TEXT NOT NULL, finished REAL NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the adapter's answers {path}: {exc}"
            ) from exc

    def get(self, job_run_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT answer FROM answers WHERE job_run_id=?", (job_run_id,)
        ).fetchone()
        return dict(json.loads(row[0])) if row is not None else None

    def put(self, job_run_id: str, answer: Mapping[str, Any]) -> None:
        """Keep the first answer of a job run id; a later one never replaces it."""
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO answers (job_run_id, answer, finished)"
                " VALUES (?, ?, ?)",
                (job_run_id, json.dumps(answer), time.time()),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot keep the answer: {exc}") from exc

    def close(self) -> None:
        self._db.close()
