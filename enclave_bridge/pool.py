"""The enclave pool: N worker processes that every worker identity can use.

``await pool.submit(job)`` hands one work order to a pool process and
returns its signed :class:`PoolResult`. Design, in the order a job meets it:

* **Processes.** ``processes`` (default ``os.cpu_count()``) long-lived OS
  processes (:mod:`enclave_bridge._pool_worker`), each holding every
  identity's keys, unsealed in its own memory from the sealed blobs and the
  passphrase the parent sends once at start. The parent holds what the
  operator's configuration holds (sealed blobs, passphrase) but never
  unseals, and its API returns no private key; it learns each worker's
  public record (details, signing address) from the processes.
* **Hand-over.** One pair of non-blocking pipes per process, watched by the
  event loop (``add_reader``/``add_writer``), length-prefixed frames: no
  per-order process spawn, thread hop or executor. Each process has up to
  ``depth`` orders outstanding, so it never waits for the parent between
  orders; it serves them in arrival order. It reads the orders already
  waiting together, looks up their committed results and claims in one read,
  and commits the results of up to ``_pool_worker.MAX_HELD`` stateless
  orders that ran back to back in one transaction before sending them (only
  while more orders wait: an idle pool answers each order at once). A
  shared marker page says which order a process runs, so a hang or crash
  is blamed on that order, never on the held ones before it.
* **Scheduling.** With ``batch_scheduling`` (the default) the event-loop
  thread, and the processes it starts, run under SCHED_BATCH: a woken
  parent no longer preempts a busy pool process for every result. Measured
  here with both cores busy: 0.9 involuntary context switches per order
  became 0.1, and the parent's CPU per order went from 0.09 ms to 0.04 ms
  (against about 1.1 ms in the pool process, 0.7 ms of it the RSA
  decryption). An unloaded machine wakes the parent as fast as before.
* **Exactly-once effects.** Inside the process, the processor runs between
  a load of the workload state and ONE commit of (state, result keyed by
  order key, request-hash claim) in the shared SQLite state store
  (:mod:`enclave_bridge.workload_state`). A retried order returns its
  committed result; a copy of a request served for another order gets a
  "duplicate request" error result.
* **Execution cap.** A process running one order past its cap
  (``job.max_seconds`` or ``default_max_seconds``) is killed (SIGKILL by
  PID) and replaced; the order is answered with a signed error result.
* **Crashes.** A process that dies (segfault, SIGKILL, ``os._exit``) is
  replaced; the order it was running is retried once, then answered with a
  signed error result. Orders queued behind it go back to the queue
  unharmed. Error results are made and committed by a healthy process,
  so a crash that happened after a commit still answers with that commit.
* **Registry ids and refusals.** ``job.expected_ids`` (the ids in the
  registry's event topics) travel to the process: a request that names
  other ids is answered with a signed error result and never runs, and
  every answer is signed by the identity the registry names. A job with
  ``refuse`` is answered with that error, committed like any result,
  without running anything (an order with a committed result keeps it).
* **No orphans.** Children die with the parent even when it is SIGKILLed
  (see :mod:`enclave_bridge._pool_worker`). Start the pool from the thread
  that runs the event loop and keeps running: the kernel's parent-death
  signal follows the thread that spawned a child.

The optional audit log gets one JSON line per execution start and per
committed execution (``event``, ``orderKey``, ``requestHash``, ``pid``),
written by the processes themselves with O_APPEND.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import mmap
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave_bridge import _pool_worker as wire
from enclave_bridge.attestation import Attester, SimulatedAttester
from enclave_bridge.eea import EeaError
from enclave_bridge.errors import BugError, ConfigurationError, PoolError, StoreError
from enclave_bridge.identity import SealedIdentity
from enclave_bridge.processor import (
    EthereumTarget,
    FabricTarget,
    OracleTarget,
    ProcessorPolicy,
    normalise_expected_ids,
)
from enclave_bridge.workload_state import SqliteWorkloadStateStore, checkpoint_wal

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = "enclave_bridge.workload:default_registry"
# Long enough for any built-in workload on a loaded machine; the bridge sets
# a cap per order from the request's responseTimeoutMSecs where it has one.
DEFAULT_MAX_SECONDS = 30.0
# Outstanding orders per process: enough that a process holding results
# for a group commit (_pool_worker.MAX_HELD) still has orders waiting while
# the parent takes the results and refills it.
DEFAULT_DEPTH = 12
# Unsealing costs about 0.1 s per identity; Python start-up about 0.5 s.
START_TIMEOUT_SECONDS = 60.0
# After close() stops sending, running orders get this long to finish.
CLOSE_GRACE_SECONDS = 5.0
# A crash while running an order is retried this many times, then answered.
CRASH_RETRIES = 1
# Replacement processes that die before they are ready, in a row, before the
# pool gives up (a broken installation, not bad luck).
MAX_START_FAILURES = 3
# Signing an error result takes milliseconds; this only catches a process
# that hangs doing it, and is long enough for a loaded machine.
ERROR_RESULT_CAP_SECONDS = 5.0
# How often the parent copies the state store's WAL into the database file,
# so that no pool process stalls a work order doing it.
CHECKPOINT_INTERVAL_SECONDS = 1.0
# A checkpoint that found at least this many pages (64 MiB at 4 KiB) in the
# WAL is followed by the next after a tenth of the interval: a machine with
# many cores writes enough in one interval to reach the processes' own
# fallback mark, where a work order waits for the copy.
CHECKPOINT_BUSY_PAGES = 16_384

Target = EthereumTarget | FabricTarget | OracleTarget | None


@dataclass(frozen=True, slots=True)
class PoolJob:
    """One work order for the pool; ``order_key`` is unique across all sources."""

    order_key: str
    request: bytes
    target: Target = None
    max_seconds: float | None = None
    # The ids the registry named (``workOrderId``, ``workerId``,
    # ``requesterId``; hex): a request that says otherwise is refused, and
    # every answer is signed by the ``workerId`` identity.
    expected_ids: Mapping[str, str] | None = None
    # (EEA code, message): answer with this signed error result, run nothing.
    refuse: tuple[int, str] | None = None

    def __post_init__(self) -> None:
        # Checked here, in the caller's process: a pool process must not
        # die on a malformed job.
        normalise_expected_ids(self.expected_ids)
        if self.refuse is not None:
            code, message = self.refuse
            if not (isinstance(code, int) and 0 < code < 2**31) or not isinstance(
                message, str
            ):
                raise BugError(
                    "PoolJob.refuse takes (EEA error code > 0, message), "
                    f"got {self.refuse!r}"
                )


@dataclass(frozen=True, slots=True)
class PoolResult:
    """A work order's signed answer (a result or an EEA error result)."""

    order_key: str
    # 0 for a result, else the EEA error code.
    status: int
    # The exact JSON-RPC response bytes to post; see ``response``.
    response_bytes: bytes
    request_hash: bytes | None
    result_signature: bytes | None
    # The pool process that answered.
    pid: int
    # True when this call ran the workload and committed its result; False for
    # a retry answered from an earlier commit, a refusal, or a pool failure.
    executed: bool
    # Why the pool itself answered with an error ("timeout", "crashed"), else None.
    pool_failure: str | None = None

    @property
    def response(self) -> dict[str, Any]:
        value = json.loads(self.response_bytes)
        if not isinstance(value, dict):
            raise BugError("a pool response is not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A cheap snapshot for health checks and metrics."""

    processes: int
    queued: int
    in_flight: int
    done: int
    failed: int
    oldest_queued_age: float
    crashes: int
    timeouts: int
    replacements: int


@dataclass(frozen=True, slots=True)
class WorkerPublicRecord:
    worker_id: str
    signing_address: str
    details: Mapping[str, Any]


@dataclass(eq=False)
class _Pending:
    job: PoolJob
    future: asyncio.Future[PoolResult]
    enqueued_at: float
    job_id: int
    # Crashes of a process while it ran this order.
    crashes: int = 0
    # Set when the pool decided to answer with an error result.
    failure: str | None = None
    failure_message: str = ""
    # Whether the process was last asked to run it or to sign its failure.
    sent_as_failure: bool = False


@dataclass(eq=False)
class _Process:
    popen: subprocess.Popen[bytes]
    writer: _PipeWriter
    lifeline_fd: int
    ready: asyncio.Future[None]
    outstanding: deque[_Pending] = field(default_factory=deque)
    # When the order now running must be done (loop time), None when idle.
    head_deadline: float | None = None
    # One timer per process, moved only when a deadline comes earlier: a
    # timer per order would cost more than the hand-over itself.
    timer: asyncio.TimerHandle | None = None
    # The process's marker page: which order it runs now (see _pool_worker).
    marker: mmap.mmap | None = None
    # The order a timeout was blamed on, once the process is being killed for it.
    culprit: _Pending | None = None
    # The timer found no order running once already (a flush or a stall).
    idle_seen: bool = False
    # Set once we decided this process must go (killed for a timeout, closing).
    retired: bool = False
    # Set when its result pipe closed: the process is gone or going.
    exited: bool = False
    reaper: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid


class EnclavePool:
    """See the module docstring. Use :func:`open_pool`, or start() and close()."""

    def __init__(
        self,
        identities: Sequence[SealedIdentity],
        passphrase: bytes | str,
        state_path: Path | str,
        *,
        processes: int | None = None,
        default_max_seconds: float = DEFAULT_MAX_SECONDS,
        depth: int = DEFAULT_DEPTH,
        audit_log: Path | str | None = None,
        registry: str = DEFAULT_REGISTRY,
        policy: ProcessorPolicy | None = None,
        attester: Attester | None = None,
        clock: Callable[[], float] = time.monotonic,
        checkpoint_interval: float = CHECKPOINT_INTERVAL_SECONDS,
        batch_scheduling: bool = True,
    ) -> None:
        if not identities:
            raise ConfigurationError(
                "the enclave pool needs at least one worker identity"
            )
        self._init = {
            "identities": [identity.blob for identity in identities],
            "passphrase": passphrase,
            "state_path": str(state_path),
            "registry": registry,
            "policy": policy,
            "attester": attester or SimulatedAttester(),
            "audit_log": str(audit_log) if audit_log is not None else None,
        }
        self.state_path = Path(state_path)
        self.size = processes or os.cpu_count() or 1
        self.default_max_seconds = default_max_seconds
        self.depth = max(1, depth)
        self._clock = clock
        self._checkpoint_interval = checkpoint_interval
        self._checkpointer: asyncio.Task[None] | None = None
        self._batch_scheduling = batch_scheduling
        # The loop thread's scheduling policy before start(), restored by close().
        self._saved_policy: int | None = None
        self._queue: deque[_Pending] = deque()
        self._processes: list[_Process] = []
        self._records: dict[str, WorkerPublicRecord] = {}
        self._next_job = 0
        self._done = self._failed = self._crashes = self._timeouts = 0
        self._replacements = 0
        self._start_failures = 0
        self._closing = False
        self._started = False
        self._broken: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Tasks waiting for dead processes to be reaped; close() awaits them.
        self._reapers: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Create the state tables and start every process; wait until all are ready."""
        if self._started:
            raise BugError("the pool was started twice")
        self._started = True
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(_create_state_tables, self.state_path)
        if self._batch_scheduling:
            self._saved_policy = _enter_batch_scheduling()

        started = [self._spawn() for _ in range(self.size)]
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                await asyncio.gather(*(p.ready for p in started))
        except BaseException:
            await self.close()
            raise
        self._checkpointer = asyncio.ensure_future(self._checkpoints())
        log.info("enclave pool started: %d processes, pids %s", self.size, self.pids())

    async def _checkpoints(self) -> None:
        """Checkpoint the state store's WAL every interval (sooner when busy), in a thread."""
        delay = self._checkpoint_interval
        while True:
            await asyncio.sleep(delay)
            delay = self._checkpoint_interval
            # A failed checkpoint is logged and tried again next time; the
            # processes checkpoint for themselves past the fallback mark.
            try:
                _, pages, _ = await asyncio.to_thread(checkpoint_wal, self.state_path)
            except StoreError as exc:
                log.warning("workload-state checkpoint failed: %s", exc)
            except Exception:
                log.exception("workload-state checkpoint failed unexpectedly")
            else:
                if pages >= CHECKPOINT_BUSY_PAGES:
                    delay = self._checkpoint_interval / 10

    async def close(self) -> None:
        """Stop taking work, let running orders finish briefly, stop every process by PID."""
        if self._closing:
            return
        self._closing = True
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            # Closing goes on whatever ended the checkpointer: the processes
            # must be stopped.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._checkpointer
        for pending in self._queue:
            _reject(
                pending, PoolError("the enclave pool closed before this work order ran")
            )
        self._queue.clear()

        for process in self._processes:
            process.retired = True
            process.writer.close()
            if not process.ready.done():
                # Still importing or unsealing: it holds no work, waiting is pointless.
                _kill(process.pid)
        deadline = time.monotonic() + CLOSE_GRACE_SECONDS
        for process in list(self._processes):
            await self._stop(process, deadline)
        for process in list(self._processes):
            self._forget(
                process,
                PoolError(
                    "the enclave pool closed before this work order was answered"
                ),
            )
        await asyncio.gather(*self._reapers)
        if self._saved_policy is not None:
            _leave_batch_scheduling(self._saved_policy)
            self._saved_policy = None
        log.info("enclave pool closed")

    async def _stop(self, process: _Process, deadline: float) -> None:
        while not process.exited and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not process.exited:
            _kill(process.pid)
        while process.reaper is None:
            await asyncio.sleep(0.01)
        await process.reaper

    # --- the API ------------------------------------------------------------------

    async def submit(self, job: PoolJob) -> PoolResult:
        """Run one work order; returns its signed result or error result."""
        if self._closing or not self._started:
            raise PoolError("the enclave pool is not running; open it with open_pool()")
        if self._broken is not None:
            raise PoolError(f"the enclave pool is broken: {self._broken}")
        loop = self._loop
        assert loop is not None
        pending = _Pending(
            job=job,
            future=loop.create_future(),
            enqueued_at=self._clock(),
            job_id=self._new_job_id(),
        )
        self._queue.append(pending)
        self._pump()

        return await pending.future

    def stats(self) -> PoolStats:
        now = self._clock()
        oldest = now - self._queue[0].enqueued_at if self._queue else 0.0
        return PoolStats(
            processes=sum(1 for p in self._processes if not p.retired),
            queued=len(self._queue),
            in_flight=sum(len(p.outstanding) for p in self._processes),
            done=self._done,
            failed=self._failed,
            oldest_queued_age=max(0.0, oldest),
            crashes=self._crashes,
            timeouts=self._timeouts,
            replacements=self._replacements,
        )

    def pids(self) -> list[int]:
        """PIDs of the live pool processes (for operators and tests)."""
        return [p.pid for p in self._processes if not p.exited]

    def worker_records(self) -> dict[str, WorkerPublicRecord]:
        """Public record of every identity, as its pool processes reported it."""
        return dict(self._records)

    # --- processes -------------------------------------------------------------

    def _spawn(self) -> _Process:
        loop = self._loop
        assert loop is not None
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        life_r, life_w = os.pipe()
        marker_fd = os.memfd_create("tcbridge-pool-marker", os.MFD_CLOEXEC)
        os.ftruncate(marker_fd, wire.MARKER.size)
        marker = mmap.mmap(marker_fd, wire.MARKER.size)
        argv = [
            sys.executable,
            "-m",
            "enclave_bridge._pool_worker",
            str(cmd_r),
            str(res_w),
            str(life_r),
            str(os.getpid()),
            str(marker_fd),
        ]
        try:
            popen = subprocess.Popen(
                argv,
                pass_fds=(cmd_r, res_w, life_r, marker_fd),
                stdin=subprocess.DEVNULL,
            )
        finally:
            for fd in (cmd_r, res_w, life_r, marker_fd):
                os.close(fd)

        ready: asyncio.Future[None] = loop.create_future()
        # Replacements have no one awaiting their start: never leave an
        # exception unretrieved.
        ready.add_done_callback(_consume)
        process = _Process(
            popen=popen,
            writer=_PipeWriter(loop, cmd_w),
            lifeline_fd=life_w,
            ready=ready,
            marker=marker,
        )
        _FrameReader(
            loop,
            res_r,
            on_message=lambda message: self._on_message(process, message),
            on_eof=lambda: self._on_exit(process),
        )
        self._processes.append(process)
        process.writer.send(self._init)
        log.debug("pool process %d started", popen.pid)

        return process

    def _on_message(self, process: _Process, message: Any) -> None:
        kind = message[0]
        if kind == "done":
            self._on_done(process, message)
        elif kind == "ready":
            for record in message[2]:
                self._records[record["workerId"]] = WorkerPublicRecord(
                    worker_id=record["workerId"],
                    signing_address=record["signingAddress"],
                    details=record["details"],
                )
            if not process.ready.done():
                process.ready.set_result(None)
            self._start_failures = 0
            self._pump()
        elif kind == "failed":
            error = ConfigurationError(f"a pool process could not start: {message[1]}")
            if not process.ready.done():
                process.ready.set_exception(error)
            self._break(str(error))
        else:
            raise BugError(f"unknown message from pool process: {kind!r}")

    def _on_done(self, process: _Process, message: Any) -> None:
        _, job_id, status, response, request_hash, signature, executed = message
        if not process.outstanding or process.outstanding[0].job_id != job_id:
            raise BugError(f"pool process {process.pid} answered out of order")
        pending = process.outstanding.popleft()
        process.idle_seen = False
        self._head_started(process)

        result = PoolResult(
            order_key=pending.job.order_key,
            status=status,
            response_bytes=response,
            request_hash=request_hash,
            result_signature=signature,
            pid=process.pid,
            executed=executed,
            # A result that raced its own timeout is a genuine result.
            pool_failure=pending.failure if pending.sent_as_failure else None,
        )
        self._done += 1
        if status != 0:
            self._failed += 1
        if not pending.future.done():
            pending.future.set_result(result)
        self._pump()

    def _on_exit(self, process: _Process) -> None:
        """The process's result pipe closed: it exited, crashed or was killed."""
        process.exited = True
        if process.timer is not None:
            process.timer.cancel()
        process.writer.close()
        # Whatever closed the pipe, the process must not linger (by PID).
        _kill(process.pid)
        process.reaper = asyncio.ensure_future(_reap(process))
        self._reapers.add(process.reaper)
        process.reaper.add_done_callback(self._reapers.discard)
        if self._closing:
            return
        if not process.retired:
            self._crashes += 1
            log.error(
                "pool process %d died; replacing it (%d work orders were on it)",
                process.pid,
                len(process.outstanding),
            )
        if not process.ready.done():
            process.ready.set_exception(
                PoolError(f"pool process {process.pid} exited during start-up")
            )
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                self._break(
                    f"{self._start_failures} pool processes in a row exited during "
                    "start-up; see their error output"
                )

        outstanding = list(process.outstanding)
        process.outstanding.clear()
        self._processes.remove(process)
        if outstanding:
            # One order was running; the others either never started or
            # finished with their results held uncommitted: back to the
            # queue as they were, unharmed.
            running = self._running(process, outstanding)
            culprit = process.culprit or (running[0] if running else outstanding[0])
            for pending in reversed(outstanding):
                if pending is culprit:
                    self._requeue_head(pending, timed_out=process.culprit is not None)
                else:
                    self._queue.appendleft(pending)
        if self._broken is None:
            self._replacements += 1
            self._spawn()
        self._pump()

    def _requeue_head(self, pending: _Pending, *, timed_out: bool) -> None:
        """The order that was running when its process died goes back, or fails."""
        if timed_out:
            # _on_timeout set the failure: a healthy process signs the error result.
            self._queue.appendleft(pending)
            return
        pending.crashes += 1
        if pending.failure is None and pending.crashes > CRASH_RETRIES:
            pending.failure = "crashed"
            pending.failure_message = (
                "the pool process running this work order crashed "
                f"{pending.crashes} times; the order is not retried again"
            )
        elif pending.failure is not None and pending.crashes > CRASH_RETRIES + 2:
            # Even signing an error result kills processes: give up on this order.
            _reject(pending, PoolError("pool processes keep dying on this work order"))
            return
        self._queue.appendleft(pending)

    def _running(
        self, process: _Process, outstanding: Sequence[_Pending]
    ) -> tuple[_Pending, float] | None:
        """The order the process's marker says it runs, and since when (monotonic)."""
        if process.marker is None:
            return None
        # One read for both: the process may move to its next order meanwhile.
        job_id, started = wire.read_marker(process.marker)
        pending = next((p for p in outstanding if p.job_id == job_id), None)
        return None if pending is None else (pending, started)

    def _on_timeout(self, process: _Process, head: _Pending) -> None:
        if process.exited or not process.outstanding:
            return
        process.culprit = head
        cap = self._cap(head)
        self._timeouts += 1
        log.error(
            "work order %s ran past its %.1f s cap in pool process %d; killing it",
            head.job.order_key,
            cap,
            process.pid,
        )
        head.failure = "timeout"
        head.failure_message = (
            f"execution exceeded the {cap:g} s cap for one work order and was stopped"
        )
        process.retired = True
        _kill(process.pid)

    def _head_started(self, process: _Process) -> None:
        """The first outstanding order (if any) starts running now."""
        if not process.outstanding:
            process.head_deadline = None
            return
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + self._cap(process.outstanding[0])
        process.head_deadline = deadline
        if process.timer is not None and process.timer.when() <= deadline:
            return
        if process.timer is not None:
            process.timer.cancel()
        process.timer = loop.call_at(deadline, self._on_timer, process)

    def _on_timer(self, process: _Process) -> None:
        """Check the order running now against its own cap.

        The head's deadline is when to look; the marker says which order
        runs and since when (results held for a group commit come back
        after the orders behind them ran).
        """
        process.timer = None
        deadline = process.head_deadline
        if process.exited or deadline is None or not process.outstanding:
            return
        loop = self._loop
        assert loop is not None
        now = loop.time()
        culprit = process.outstanding[0]
        running = self._running(process, process.outstanding)
        if running is not None:
            process.idle_seen = False
            culprit, started = running
            # The marker holds time.monotonic(); the loop's clock may differ.
            deadline = started + self._cap(culprit) - time.monotonic() + now
        elif not process.idle_seen:
            # Between orders (committing, sending): look again one cap later.
            process.idle_seen = True
            deadline = now + self._cap(culprit)
        if now >= deadline:
            self._on_timeout(process, culprit)
        else:
            process.timer = loop.call_at(deadline, self._on_timer, process)

    def _cap(self, pending: _Pending) -> float:
        if pending.job.max_seconds is not None:
            cap = pending.job.max_seconds
        else:
            cap = self.default_max_seconds
        if pending.failure is not None or pending.job.refuse is not None:
            # Only an error result to sign: no workload runs, so the order's
            # own cap (even 0 s) must not kill the process doing it.
            cap = max(cap, ERROR_RESULT_CAP_SECONDS)
        return cap

    def _pump(self) -> None:
        """Send queued orders to ready processes with room, least loaded first."""
        if self._closing:
            return
        while self._queue:
            ready = [
                p
                for p in self._processes
                if not p.retired
                and not p.exited
                and p.ready.done()
                and p.ready.exception() is None
                and len(p.outstanding) < self.depth
            ]
            if not ready:
                return
            process = min(ready, key=lambda p: len(p.outstanding))
            pending = self._queue.popleft()
            if pending.future.done():
                continue
            was_idle = not process.outstanding
            process.outstanding.append(pending)
            job = pending.job
            pending.sent_as_failure = pending.failure is not None
            ids = wire.ids_to_wire(job.expected_ids)
            if pending.failure is not None:
                message: tuple[Any, ...] = (
                    "fail",
                    pending.job_id,
                    job.order_key,
                    job.request,
                    wire.target_to_wire(job.target),
                    int(EeaError.UNKNOWN_ERROR),
                    pending.failure_message,
                    ids,
                )
            elif job.refuse is not None:
                message = (
                    "fail",
                    pending.job_id,
                    job.order_key,
                    job.request,
                    wire.target_to_wire(job.target),
                    job.refuse[0],
                    job.refuse[1],
                    ids,
                )
            else:
                message = (
                    "run",
                    pending.job_id,
                    job.order_key,
                    job.request,
                    wire.target_to_wire(job.target),
                    ids,
                )
            process.writer.send(message)
            if was_idle:
                self._head_started(process)

    def _break(self, reason: str) -> None:
        if self._broken is not None:
            return
        self._broken = reason
        log.error("enclave pool broken: %s", reason)
        for pending in self._queue:
            _reject(pending, PoolError(f"the enclave pool is broken: {reason}"))
        self._queue.clear()

    def _forget(self, process: _Process, error: Exception) -> None:
        for pending in process.outstanding:
            _reject(pending, error)
        process.outstanding.clear()

    def _new_job_id(self) -> int:
        self._next_job += 1
        return self._next_job


@contextlib.asynccontextmanager
async def open_pool(
    identities: Sequence[SealedIdentity],
    passphrase: bytes | str,
    state_path: Path | str,
    **options: Any,
) -> AsyncIterator[EnclavePool]:
    """Start an :class:`EnclavePool`; stop every process on the way out."""
    pool = EnclavePool(identities, passphrase, state_path, **options)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


# --- plumbing ----------------------------------------------------------------------


def _enter_batch_scheduling() -> int | None:
    """Put the calling thread under SCHED_BATCH; its previous policy, or None.

    A woken SCHED_BATCH thread waits for the running task's time slice
    instead of preempting it (sched(7)). For the pool this means a busy
    process is no longer interrupted by the parent on every result it
    writes: the parent wakes once per slice and takes every result waiting
    by then. Measured here with both cores busy: 0.9 involuntary context
    switches per order became 0.1, and the parent's CPU per order halved.
    A thread that finds a core idle still runs at once, so an unloaded
    pool answers as fast as before. Threads and processes started later
    inherit the policy (the pool processes are batch work too).
    """
    try:
        previous = os.sched_getscheduler(0)
        if previous == os.SCHED_BATCH:
            return None
        if previous != os.SCHED_OTHER:
            # Real-time or idle policies were the operator's choice: keep them.
            return None
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        log.info("enclave pool: SCHED_BATCH not available (%s); continuing", exc)
        return None
    return previous


def _leave_batch_scheduling(previous: int) -> None:
    try:
        os.sched_setscheduler(0, previous, os.sched_param(0))
    except OSError as exc:
        log.warning("enclave pool: could not restore the scheduling policy: %s", exc)


class _PipeWriter:
    """Frames written to a non-blocking pipe, buffered while the pipe is full.

    Frames sent during one turn of the event loop go out in one write at
    the start of the next: a process answers a group of orders at once, and
    refilling it took one write (and one wake-up of the process) per order.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._buffer = bytearray()
        self._closed = False
        self._loop = loop
        self._writing = False
        self._flush_due = False

    def send(self, message: Any) -> None:
        if self._closed:
            return
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._buffer += len(body).to_bytes(4, "big") + body
        if not self._writing and not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._due)

    def _due(self) -> None:
        self._flush_due = False
        if not self._closed and not self._writing:
            self._flush()

    def _flush(self) -> None:
        try:
            while self._buffer:
                written = os.write(self.fd, self._buffer)
                del self._buffer[:written]
        except BlockingIOError:
            if not self._writing:
                self._writing = True
                self._loop.add_writer(self.fd, self._on_writable)
            return
        except (BrokenPipeError, OSError):
            # The process is gone; its exit is handled when its result pipe closes.
            self._buffer.clear()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self.fd)

    def _on_writable(self) -> None:
        self._flush()

    def close(self) -> None:
        if self._closed:
            return
        if self._flush_due:
            # What was sent this turn still goes out, as far as the pipe takes it.
            self._flush()
        self._closed = True
        if self._writing:
            self._loop.remove_writer(self.fd)
        _close_fd(self.fd)


class _FrameReader:
    """Parses length-prefixed frames from a non-blocking pipe on the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        on_message: Callable[[Any], None],
        on_eof: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._on_message = on_message
        self._on_eof = on_eof
        self._buffer = bytearray()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self._fd)
            _close_fd(self._fd)
            self._on_eof()
            return
        self._buffer += chunk
        while len(self._buffer) >= 4:
            size = int.from_bytes(self._buffer[:4], "big")
            if len(self._buffer) < 4 + size:
                break
            body = bytes(self._buffer[4 : 4 + size])
            del self._buffer[: 4 + size]
            self._on_message(_decode(body))


def _decode(body: bytes) -> tuple[Any, ...]:
    if body[:1] == wire.DONE:
        return ("done", *wire.decode_done(body))
    if body[:1] == wire.PICKLED:
        return tuple(_ChildUnpickler(io.BytesIO(body[1:])).load())
    raise PoolError("a pool process sent a message of unknown kind")


class _ChildUnpickler(pickle.Unpickler):
    """Pool processes send built-in types only; refuse anything else."""

    def find_class(self, module: str, name: str) -> Any:
        raise PoolError(f"a pool process sent an object of type {module}.{name}")


async def _reap(process: _Process) -> None:
    await asyncio.to_thread(process.popen.wait)
    _close_fd(process.lifeline_fd)


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _reject(pending: _Pending, error: Exception) -> None:
    if not pending.future.done():
        pending.future.set_exception(error)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _create_state_tables(path: Path) -> None:
    SqliteWorkloadStateStore(path, create=True).close()
