"""One enclave pool process: unseals the worker keys, serves work orders.

Started by :class:`enclave_bridge.pool.EnclavePool` as
``python -m enclave_bridge._pool_worker CMD_FD RESULT_FD LIFELINE_FD PARENT_PID``.
The keys exist in this process's memory only; nothing here sends a private
key back.

Dying with the parent, whatever killed it:

1. ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills this process when
   the thread that started it exits; a parent that died before the call is
   caught by comparing ``getppid()`` with the pid we were given.
2. a watchdog thread blocks reading the lifeline pipe, whose only write end
   is the parent's; end of file means the parent is gone, and the process
   exits at once even if a work order is running.

Wire format, both ways: a 4-byte big-endian length, then a pickle. The
parent's messages may carry dataclasses (policy, targets); ours carry only
built-in types, and the parent unpickles them refusing every global.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from enclave_bridge.eea import WorkOrderErrorBody, peek_field
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
    ProcessorPolicy,
    WorkOrderProcessor,
    encode_response,
    result_signature,
)
from enclave_bridge.workload import WorkloadRegistry
from enclave_bridge.workload_state import (
    Execution,
    SqliteWorkloadStateStore,
    StateSnapshot,
    StoredResult,
    execute_once,
)

PR_SET_PDEATHSIG = 1
# A frame larger than this is a broken parent, not a work order.
MAX_FRAME_BYTES = 256 * 1024 * 1024

Target = EthereumTarget | FabricTarget | None


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


def read_frame(fd: int) -> Any | None:
    """The next message, or None at end of file."""
    header = _read_exact(fd, 4)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes")
    body = _read_exact(fd, size)
    if body is None:
        return None
    return pickle.loads(body)


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def write_frame(fd: int, message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(body).to_bytes(4, "big") + body)
    while view:
        written = os.write(fd, view)
        view = view[written:]


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

    def run(self, order_key: str, request: bytes, target: Target) -> tuple[Any, ...]:
        worker_id = _lower_str(peek_field(request, "workerId"))
        workload_name = _workload_name(peek_field(request, "workloadId"))
        workload = self.registry.get(workload_name) if workload_name else None
        stateful = bool(workload is not None and workload.stateful)

        def execute(
            snapshot: StateSnapshot | None, claim: Callable[[bytes], bool]
        ) -> Execution:
            outcome = self.processor.process(
                request,
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
            worker_id=worker_id,
            order_key=order_key,
            workload=workload_name,
            stateful=stateful,
            execute=execute,
            on_start=on_start,
        )
        if done.executed and done.result.request_hash is not None:
            self.audit("commit", order_key, done.result.request_hash)

        return _answer(done.result, done.executed)

    def fail(
        self, order_key: str, request: bytes, target: Target, code: int, message: str
    ) -> tuple[Any, ...]:
        """Commit and sign an error result the pool decided on (timeout, crashes)."""
        stored = self.store.result(order_key)
        if stored is not None:
            return _answer(stored, False)

        worker_id = _lower_str(peek_field(request, "workerId"))
        rpc_id = peek_field(request, "id")
        if isinstance(rpc_id, bool) or not isinstance(rpc_id, int | str):
            rpc_id = None
        work_order_id = peek_field(request, "workOrderId")
        body = WorkOrderErrorBody(
            code, message, work_order_id if isinstance(work_order_id, str) else None
        )
        response = encode_response(
            {"jsonrpc": "2.0", "id": rpc_id, "error": body.to_json()}
        )
        signer = self.keys.get(worker_id)
        if signer is None and len(self.keys) == 1:
            signer = next(iter(self.keys.values()))
        signature = None
        if target is not None and signer is not None:
            signature = result_signature(signer.signing_key, target, response, code)
        result = StoredResult(
            order_key=order_key,
            worker_id=worker_id,
            status=code,
            response=response,
            request_hash=None,
            result_signature=signature,
        )
        self.store.commit(result, claim=False)
        committed = self.store.result(order_key) or result

        return _answer(committed, False)

    def audit(self, event: str, order_key: str, request_hash: bytes) -> None:
        if self.audit_fd is None:
            return
        line = {
            "event": event,
            "orderKey": order_key,
            "requestHash": request_hash.hex(),
            "pid": self.pid,
        }
        # One write of one short line with O_APPEND: lines from several
        # processes never interleave.
        os.write(self.audit_fd, (json.dumps(line) + "\n").encode())


def _answer(result: StoredResult, executed: bool) -> tuple[Any, ...]:
    return (
        result.status,
        result.response,
        result.request_hash,
        result.result_signature,
        executed,
    )


def _lower_str(value: Any) -> str:
    return value.lower() if isinstance(value, str) else ""


def _workload_name(workload_id: Any) -> str | None:
    if not isinstance(workload_id, str):
        return None
    try:
        return bytes.fromhex(workload_id).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def serve(cmd_fd: int, result_fd: int) -> None:
    init = read_frame(cmd_fd)
    if init is None:
        return
    try:
        server = Server(init)
    except Exception as exc:
        write_frame(result_fd, ("failed", f"{type(exc).__name__}: {exc}"))
        return
    write_frame(result_fd, ("ready", server.pid, server.records()))

    while True:
        message = read_frame(cmd_fd)
        if message is None:
            return
        kind, job_id = message[0], message[1]
        if kind == "run":
            answer = server.run(message[2], message[3], message[4])
        elif kind == "fail":
            answer = server.fail(
                message[2], message[3], message[4], message[5], message[6]
            )
        else:
            raise ValueError(f"unknown message kind {kind!r}")
        write_frame(result_fd, ("done", job_id, *answer))


def main(argv: list[str]) -> None:
    cmd_fd, result_fd, lifeline_fd, parent_pid = (int(arg) for arg in argv[1:5])
    die_with_parent(parent_pid)
    watch_lifeline(lifeline_fd)
    # The parent handles Ctrl-C and stops us by closing the pipe or by PID.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(cmd_fd, result_fd)


if __name__ == "__main__":
    main(sys.argv)
