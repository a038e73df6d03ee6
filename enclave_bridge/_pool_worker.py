"""One enclave pool process: unseals the worker keys, serves work orders.

Started by :class:`enclave_bridge.pool.EnclavePool` as
``python -m enclave_bridge._pool_worker CMD_FD RESULT_FD LIFELINE_FD PARENT_PID
MARKER_FD``. The keys exist in this process's memory only; nothing here
sends a private key back.

Group commit: while more orders wait in the command pipe, the results of
stateless orders are held (at most :data:`MAX_HELD`) and committed together
in one transaction, then sent in order. One SQLite write transaction per
order cost more than anything but the RSA decryption once two processes
share the database (each commit finds its page cache stale), measured here.
A held result that was never committed was never sent either: if the
process dies, the parent sends the order again and it runs anew.

The marker (``MARKER_FD``, a small shared memory file) says which order
runs now and since when, so the parent blames a hang or a crash on that
order, not on the earlier orders whose results are held.

Dying with the parent, whatever killed it:

1. ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills this process when
   the thread that started it exits; a parent that died before the call is
   caught by comparing ``getppid()`` with the pid we were given.
2. a watchdog thread blocks reading the lifeline pipe, whose only write end
   is the parent's; end of file means the parent is gone, and the process
   exits at once even if a work order is running.

Wire format, both ways: a 4-byte big-endian length, then the message. The
parent's messages are pickles (the first carries the processor policy); ours
are a fixed binary layout for results and, for start-up messages, pickles
of built-in types, which the parent unpickles refusing every global.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import mmap
import os
import pickle
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from enclave_bridge.eea import LoadedRequest, peek_field
from enclave_bridge.errors import BugError
from enclave_bridge.identity import (
    encryption_key_pem,
    unseal,
    verification_key_pem,
    worker_record,
)
from enclave_bridge.keys import WorkerKeys
from enclave_bridge.processor import (
    EthereumTarget,
    FabricTarget,
    OracleTarget,
    PreparedRequest,
    ProcessorPolicy,
    WorkOrderProcessor,
)
from enclave_bridge.result_signature import EthereumDomain, FabricDomain
from enclave_bridge.workload import WorkloadRegistry
from enclave_bridge.workload_state import (
    CommitOutcome,
    Execution,
    SqliteWorkloadStateStore,
    StateSnapshot,
    StoredResult,
    execute_once,
)

PR_SET_PDEATHSIG = 1
# A frame larger than this is a broken parent, not a work order.
MAX_FRAME_BYTES = 256 * 1024 * 1024
# Results held for one group commit, at most: eight orders add up to ~6 ms
# to an answer on the machine measured, and only while more orders wait.
MAX_HELD = 8

# The marker: a sequence number, then the job id (0: no order running) and
# its start, time.monotonic(). The sequence is odd while the process writes:
# the parent reads the two fields from another process and must never pair
# one order's id with another's start (a start of 0.0 would be a timeout).
MARKER = struct.Struct("=QQd")
_SEQUENCE = struct.Struct("=Q")
_FIELDS = struct.Struct("=Qd")
# A writer is never paused for long between its two stores; a reader that
# keeps finding it mid-write reports no order running and looks again later.
_READ_TRIES = 1000


class Marker:
    """The shared page the parent reads to know which order runs."""

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, MARKER.size)
        os.close(fd)
        self._sequence = 0

    def running(self, job_id: int) -> None:
        self._write(job_id, time.monotonic())

    def idle(self) -> None:
        self._write(0, 0.0)

    def _write(self, job_id: int, started: float) -> None:
        _SEQUENCE.pack_into(self._map, 0, self._sequence + 1)
        _FIELDS.pack_into(self._map, _SEQUENCE.size, job_id, started)
        self._sequence += 2
        _SEQUENCE.pack_into(self._map, 0, self._sequence)


def read_marker(view: mmap.mmap) -> tuple[int, float]:
    """(job id, started at) as the process last wrote it; job id 0: none."""
    for _ in range(_READ_TRIES):
        (before,) = _SEQUENCE.unpack_from(view, 0)
        job_id, started = _FIELDS.unpack_from(view, _SEQUENCE.size)
        (after,) = _SEQUENCE.unpack_from(view, 0)
        if before == after and not before % 2:
            return int(job_id), float(started)
    return 0, 0.0


Target = EthereumTarget | FabricTarget | OracleTarget | None


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGKILL when the parent goes; exit if it already went."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(0)


def watch_lifeline(fd: int) -> None:
    """Exit the process as soon as the parent's end of the lifeline closes."""

    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os._exit(0)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def read_frame(stream: BinaryIO) -> Any | None:
    """The next message from the parent, or None at end of file."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes")
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


def write_frame(fd: int, body: bytes) -> None:
    write_all(fd, _framed(body))


def _framed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# Messages to the parent start with a kind byte: DONE frames are a fixed
# binary layout (the hot path: no pickle either way), the rare others a
# pickle of built-in types.
DONE, PICKLED = b"D", b"P"
_DONE_HEADER = struct.Struct(">QiBIHH")
_ABSENT = 0xFFFF


def encode_done(
    job_id: int,
    status: int,
    response: bytes,
    request_hash: bytes | None,
    signature: bytes | None,
    executed: bool,
) -> bytes:
    header = _DONE_HEADER.pack(
        job_id,
        status,
        int(executed),
        len(response),
        _ABSENT if request_hash is None else len(request_hash),
        _ABSENT if signature is None else len(signature),
    )
    return b"".join((DONE, header, response, request_hash or b"", signature or b""))


def decode_done(
    body: bytes,
) -> tuple[int, int, bytes, bytes | None, bytes | None, bool]:
    """(job id, status, response, request hash, result signature, executed)."""
    job_id, status, executed, n_response, n_hash, n_sig = _DONE_HEADER.unpack_from(
        body, 1
    )
    at = 1 + _DONE_HEADER.size
    response = body[at : at + n_response]
    at += n_response
    request_hash = None if n_hash == _ABSENT else body[at : at + n_hash]
    at += 0 if n_hash == _ABSENT else n_hash
    signature = None if n_sig == _ABSENT else body[at : at + n_sig]
    return job_id, status, response, request_hash, signature, bool(executed)


def target_to_wire(target: Target) -> tuple[Any, ...] | None:
    """A target as a tuple of built-in types: a tenth of a dataclass's pickling cost."""
    if target is None:
        return None
    if isinstance(target, OracleTarget):
        return (
            "oracle",
            target.domain.chain_id,
            target.domain.verifying_contract,
            target.request_id,
            target.request_hash,
        )
    if isinstance(target, EthereumTarget):
        domain = target.domain
        return (
            "ethereum",
            domain.chain_id,
            domain.verifying_contract,
            target.order_key,
            target.request_hash,
        )
    return (
        "fabric",
        target.domain.channel,
        target.domain.chaincode,
        target.work_order_id,
        target.request_hash,
    )


def target_from_wire(wire: tuple[Any, ...] | None) -> Target:
    if wire is None:
        return None
    kind, first, second, third, request_hash = wire
    if kind == "ethereum":
        return EthereumTarget(EthereumDomain(first, second), third, request_hash)
    if kind == "oracle":
        return OracleTarget(EthereumDomain(first, second), third, request_hash)
    return FabricTarget(FabricDomain(first, second), third, request_hash)


ID_FIELDS = ("workOrderId", "workerId", "requesterId")


def ids_to_wire(ids: Mapping[str, str] | None) -> tuple[str, str, str] | None:
    """Expected ids as a tuple of strings, in :data:`ID_FIELDS` order."""
    if ids is None:
        return None
    return (ids["workOrderId"], ids["workerId"], ids["requesterId"])


def ids_from_wire(wire: tuple[str, str, str] | None) -> dict[str, str] | None:
    return None if wire is None else dict(zip(ID_FIELDS, wire, strict=True))


def encode_pickled(message: tuple[Any, ...]) -> bytes:
    return PICKLED + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def load_registry(spec: str) -> WorkloadRegistry:
    """``module:function`` naming a function that returns a WorkloadRegistry."""
    module_name, _, attr = spec.partition(":")
    factory: Callable[[], WorkloadRegistry] = getattr(
        importlib.import_module(module_name), attr
    )
    return factory()


class Server:
    """Runs work orders for the parent; one at a time, in arrival order."""

    def __init__(self, init: Mapping[str, Any]) -> None:
        self.pid = os.getpid()
        keys = [unseal(blob, init["passphrase"]) for blob in init["identities"]]
        self.keys: dict[str, WorkerKeys] = {k.worker_id.lower(): k for k in keys}
        self.registry = load_registry(init["registry"])
        policy = init.get("policy") or ProcessorPolicy()
        self.processor = WorkOrderProcessor(self.keys, self.registry, policy)
        self.store = SqliteWorkloadStateStore(init["state_path"], create=False)
        self.attester = init["attester"]
        audit = init.get("audit_log")
        self.audit_fd = (
            os.open(audit, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if audit
            else None
        )

    def records(self) -> list[dict[str, Any]]:
        """Public records (id, address, details) of every identity served."""
        out = []
        for keys in self.keys.values():
            evidence = self.attester.evidence(
                verification_key_pem(keys), encryption_key_pem(keys)
            )
            record = worker_record(keys, evidence)
            out.append(
                {
                    "workerId": record.worker_id,
                    "signingAddress": record.signing_address,
                    "details": dict(record.details),
                }
            )
        return out

    def run(
        self,
        order_key: str,
        request: bytes,
        target: Target,
        expected_ids: Mapping[str, str] | None = None,
    ) -> Answer:
        """Run one order to a committed answer."""
        return self.finish(self.begin(order_key, request, target, expected_ids))

    def begin(
        self,
        order_key: str,
        request: bytes,
        target: Target,
        expected_ids: Mapping[str, str] | None = None,
    ) -> _Order:
        """Decode, route, parse and hash an order: what its store lookup needs."""
        # Decoded once: for routing here and for the processor's checks.
        loaded = self.processor.load(request)
        worker_id, workload_name = _routing(loaded)
        if expected_ids is not None:
            # The registry's worker owns the order, its state and its claims.
            worker_id = expected_ids["workerId"].lower()
        workload = self.registry.get(workload_name) if workload_name else None
        return _Order(
            order_key,
            worker_id,
            workload_name,
            bool(workload is not None and workload.stateful),
            target,
            self.processor.prepare(
                loaded if loaded is not None else request, expected_ids
            ),
        )

    def finish(
        self,
        order: _Order,
        *,
        known: tuple[StoredResult | None, str | None] | None = None,
        stage: Callable[[StoredResult, bool], None] | None = None,
    ) -> Answer:
        """Run a begun order; with ``stage``, a stateless result is staged, not committed.

        ``known`` is the order's store lookup, read before. A staged answer
        is provisional until :meth:`_Session.flush` commits it.
        """
        order_key, target, prepared = order.order_key, order.target, order.prepared

        def execute(
            snapshot: StateSnapshot | None, claim: Callable[[bytes], bool]
        ) -> Execution:
            outcome = self.processor.process(
                prepared,
                state=snapshot.state if snapshot is not None else None,
                target=target,
                claim_request=claim,
            )
            return Execution(
                status=outcome.status,
                response=outcome.response_bytes,
                request_hash=outcome.request_hash,
                result_signature=outcome.result_signature,
                new_state=outcome.new_state,
            )

        def on_start(request_hash: bytes) -> None:
            self.audit("start", order_key, request_hash)

        done = execute_once(
            self.store,
            worker_id=order.worker_id,
            order_key=order_key,
            workload=order.workload,
            stateful=order.stateful,
            execute=execute,
            on_start=on_start,
            request_hash=prepared.request_hash,
            stage=stage,
            known=known,
        )
        if stage is None or order.stateful:
            self.audit_commit(order_key, done.result, done.executed)

        return _answer(done.result, done.executed)

    def audit_commit(
        self, order_key: str, result: StoredResult, executed: bool
    ) -> None:
        if executed and result.request_hash is not None:
            self.audit("commit", order_key, result.request_hash)

    def fail(
        self,
        order_key: str,
        request: bytes,
        target: Target,
        code: int,
        message: str,
        expected_ids: Mapping[str, str] | None = None,
    ) -> Answer:
        """Commit and sign an error result decided outside the processor.

        The pool decides on some (timeout, crashes), the bridge on others
        (``PoolJob.refuse``). Nothing runs; an order that already has a
        committed result keeps it.
        """
        stored = self.store.result(order_key)
        if stored is not None:
            return _answer(stored, False)

        if expected_ids is not None:
            worker_id = expected_ids["workerId"].lower()
        else:
            worker_id = _lower_str(peek_field(request, "workerId"))
        outcome = self.processor.refusal(
            request, code, message, target=target, expected_ids=expected_ids
        )
        result = StoredResult(
            order_key=order_key,
            worker_id=worker_id,
            status=outcome.status,
            response=outcome.response_bytes,
            request_hash=None,
            result_signature=outcome.result_signature,
        )
        self.store.commit(result, claim=False)
        committed = self.store.result(order_key) or result

        return _answer(committed, False)

    def audit(self, event: str, order_key: str, request_hash: bytes) -> None:
        if self.audit_fd is None:
            return
        # Built by hand (two lines per order; json.dumps of the dict cost
        # more): only the order key needs JSON escaping.
        line = (
            f'{{"event": "{event}", "orderKey": {json.dumps(order_key)}, '
            f'"requestHash": "{request_hash.hex()}", "pid": {self.pid}}}\n'
        )
        # One write of one short line with O_APPEND: lines from several
        # processes never interleave.
        os.write(self.audit_fd, line.encode())


Answer = tuple[int, bytes, bytes | None, bytes | None, bool]


@dataclass(frozen=True, slots=True)
class _Order:
    """An order parsed and hashed by :meth:`Server.begin`, not run yet."""

    order_key: str
    # The worker that owns its state and claims (lower case).
    worker_id: str
    workload: str | None
    stateful: bool
    target: Target
    prepared: PreparedRequest

    def lookup_key(self) -> tuple[str, str, bytes] | None:
        """What the store looks up for it before the run, None if nothing."""
        hash_ = self.prepared.request_hash
        # A stateful order reads under its state lock, not ahead of it.
        if hash_ is None or self.stateful:
            return None
        return (self.order_key, self.worker_id, hash_)


def _answer(result: StoredResult, executed: bool) -> Answer:
    return (
        result.status,
        result.response,
        result.request_hash,
        result.result_signature,
        executed,
    )


def _routing(loaded: LoadedRequest | None) -> tuple[str, str | None]:
    """(worker id, workload name) of a request, as far as it says."""
    document = loaded.document if loaded is not None else None
    params = document.get("params", document) if isinstance(document, dict) else None
    if not isinstance(params, dict):
        # The processor refuses such a request with a proper error result.
        return "", None
    return _lower_str(params.get("workerId")), _workload_name(params.get("workloadId"))


def _lower_str(value: Any) -> str:
    return value.lower() if isinstance(value, str) else ""


def _workload_name(workload_id: Any) -> str | None:
    if not isinstance(workload_id, str):
        return None
    try:
        return bytes.fromhex(workload_id).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(slots=True)
class _Held:
    """An answer not sent yet; ``staged`` is set while its commit is pending."""

    job_id: int
    order_key: str
    answer: Answer
    # The order as begun (None for an error result decided outside).
    order: _Order | None = None
    staged: tuple[StoredResult, bool] | None = None


class _Session:
    """The command loop of one pool process, with its held answers."""

    def __init__(
        self,
        server: Server,
        commands: BinaryIO,
        cmd_fd: int,
        result_fd: int,
        marker: Marker,
    ) -> None:
        self.server = server
        self.commands = commands
        self.cmd_fd = cmd_fd
        self.result_fd = result_fd
        self.marker = marker
        self.held: list[_Held] = []

    def serve(self) -> None:
        while True:
            messages = self.read_waiting()
            if not messages:
                # The parent stopped sending: answer what is held, then go.
                self.flush()
                return
            self.handle(messages)
            if len(self.held) >= MAX_HELD or not self.more_waiting():
                self.flush()

    def read_waiting(self) -> list[tuple[Any, ...]]:
        """The next command (waiting for it), and those already waiting behind it.

        No more than the held answers have room for; empty at end of file.
        """
        messages: list[tuple[Any, ...]] = []
        while True:
            message = read_frame(self.commands)
            if message is None:
                break
            messages.append(message)
            if len(self.held) + len(messages) >= MAX_HELD or not self.more_waiting():
                break
        return messages

    def handle(self, messages: list[tuple[Any, ...]]) -> None:
        """Run the commands in order; the orders' store lookups in one read first."""
        server = self.server
        begun: dict[int, _Order] = {}
        for message in messages:
            if message[0] == "run":
                # No try/finally around marked work: a process that dies
                # there must leave the marker naming that order.
                self.marker.running(message[1])
                begun[message[1]] = server.begin(
                    message[2],
                    message[3],
                    target_from_wire(message[4]),
                    ids_from_wire(message[5]),
                )
                self.marker.idle()
        keyed = [(job_id, order.lookup_key()) for job_id, order in begun.items()]
        wanted = [(job_id, key) for job_id, key in keyed if key is not None]
        found = server.store.lookup_many([key for _, key in wanted])
        known = dict(zip((job_id for job_id, _ in wanted), found, strict=True))

        for message in messages:
            kind, job_id = message[0], message[1]
            if kind == "run":
                self.run(job_id, begun[job_id], known.get(job_id))
            elif kind == "fail":
                self.fail(message)
            else:
                raise ValueError(f"unknown message kind {kind!r}")

    def run(
        self,
        job_id: int,
        order: _Order,
        known: tuple[StoredResult | None, str | None] | None,
    ) -> None:
        staged: list[tuple[StoredResult, bool]] = []

        def stage(result: StoredResult, claim: bool) -> None:
            staged.append((result, claim))

        self.marker.running(job_id)
        answer = self.server.finish(order, known=known, stage=stage)
        self.marker.idle()
        self.held.append(
            _Held(job_id, order.order_key, answer, order, staged[0] if staged else None)
        )

    def fail(self, message: tuple[Any, ...]) -> None:
        # Decided outside; it reads committed results, so commit first.
        self.flush()
        job_id = message[1]
        self.marker.running(job_id)
        answer = self.server.fail(
            message[2],
            message[3],
            target_from_wire(message[4]),
            message[5],
            message[6],
            ids_from_wire(message[7]),
        )
        self.marker.idle()
        self.held.append(_Held(job_id, message[2], answer))

    def more_waiting(self) -> bool:
        """True when a command is already buffered or in the pipe (never blocks)."""
        os.set_blocking(self.cmd_fd, False)
        try:
            return bool(self.commands.peek(1))  # type: ignore[attr-defined]
        except BlockingIOError:
            return False
        finally:
            os.set_blocking(self.cmd_fd, True)

    def flush(self) -> None:
        """Commit the staged results in one transaction, then send every held answer."""
        if not self.held:
            return
        server = self.server
        staged = [(held, held.staged) for held in self.held if held.staged]
        outcomes = server.store.commit_many([item for _, item in staged])
        for (held, (result, _)), outcome in zip(staged, outcomes, strict=True):
            if outcome is CommitOutcome.COMMITTED:
                server.audit_commit(held.order_key, result, held.answer[4])
            elif outcome is CommitOutcome.ALREADY_COMMITTED:
                # Another process answered this order first: its answer stands.
                stored = server.store.result(held.order_key)
                if stored is None:
                    raise BugError(f"order {held.order_key}: committed result vanished")
                held.answer = _answer(stored, False)
            else:
                # Its request hash was claimed for another order meanwhile:
                # run it again, now to a "duplicate request" answer.
                assert held.order is not None  # only run orders are staged
                held.answer = server.finish(held.order)
        frames = b"".join(
            _framed(encode_done(held.job_id, *held.answer)) for held in self.held
        )
        self.held.clear()
        write_all(self.result_fd, frames)


def serve(cmd_fd: int, result_fd: int, marker: Marker) -> None:
    commands = os.fdopen(cmd_fd, "rb", buffering=1 << 16)
    init = read_frame(commands)
    if init is None:
        return
    try:
        server = Server(init)
    except Exception as exc:
        write_frame(
            result_fd, encode_pickled(("failed", f"{type(exc).__name__}: {exc}"))
        )
        return
    write_frame(result_fd, encode_pickled(("ready", server.pid, server.records())))
    _Session(server, commands, cmd_fd, result_fd, marker).serve()


def main(argv: list[str]) -> None:
    cmd_fd, result_fd, lifeline_fd, parent_pid, marker_fd = (
        int(arg) for arg in argv[1:6]
    )
    die_with_parent(parent_pid)
    watch_lifeline(lifeline_fd)
    # The parent handles Ctrl-C and stops us by closing the pipe or by PID.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(cmd_fd, result_fd, Marker(marker_fd))


if __name__ == "__main__":
    main(sys.argv)
