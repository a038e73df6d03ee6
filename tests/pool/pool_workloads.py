"""Workloads that misbehave on purpose, for the pool's crash and timeout tests.

The pool processes load them through ``registry="tests.pool.pool_workloads:registry"``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from enclave_bridge.workload import (
    WorkloadContext,
    WorkloadInput,
    WorkloadOutput,
    WorkloadRegistry,
    WorkloadResult,
    default_registry,
)


def _crash(how: str) -> None:
    if how == "exit":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segv":
        ctypes.string_at(0)
    raise ValueError(f"unknown crash {how!r}")


class Crash:
    """Input: {"how": ..., "marker": path or null}; crashes unless the marker exists."""

    name = "test-crash"
    stateful = False

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        order = json.loads(inputs[0].data)
        marker = order.get("marker")
        if marker is not None and Path(marker).exists():
            return WorkloadResult(outputs=[WorkloadOutput(0, b"survived")])
        if marker is not None:
            Path(marker).touch()
        _crash(order["how"])
        raise AssertionError("unreachable")


class Sleep:
    """Input: seconds to sleep, as text."""

    name = "test-sleep"
    stateful = False

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        time.sleep(float(inputs[0].data))
        return WorkloadResult(outputs=[WorkloadOutput(0, b"slept")])


class Pid:
    """Answers with the serving process's PID, after a short pause."""

    name = "test-pid"
    stateful = False

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        time.sleep(0.01)
        return WorkloadResult(outputs=[WorkloadOutput(0, str(os.getpid()).encode())])


def registry() -> WorkloadRegistry:
    out = default_registry()
    for workload in (Crash(), Sleep(), Pid()):
        out.register(workload)
    return out
