"""Workloads for the listener tests: the pool's test workloads plus one that returns nothing.

Pool processes load them through ``registry="tests.listener.listener_workloads:registry"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from enclave_bridge.workload import (
    WorkloadContext,
    WorkloadInput,
    WorkloadRegistry,
    WorkloadResult,
)
from tests.pool.pool_workloads import registry as pool_registry


class Nothing:
    """Returns no outputs at all (a broken workload)."""

    name = "test-nothing"
    stateful = False

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        return WorkloadResult(outputs=[])


def registry() -> WorkloadRegistry:
    out = pool_registry()
    out.register(Nothing())
    return out
