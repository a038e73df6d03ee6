"""What a workload is, and the registry that finds one by name.

A workload is plain Python that turns plaintext inputs into plaintext
outputs. It never sees keys or ciphertext: the work-order processor
decrypts before and encrypts after. A workload that keeps running state
(heart-disease-eval keeps totals) receives the state committed so far for
its worker identity and returns the new state; the pool commits that state
together with the signed result, keyed by work order, so a retried work
order never counts twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class WorkloadInput:
    """One decrypted inData item."""

    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class WorkloadOutput:
    """One plaintext output; the processor places it into an outData slot.

    ``index`` is used when the requester supplied no outData slots; with
    slots, output i goes into the requester's i-th slot (Avalon's rule).
    """

    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class WorkloadContext:
    """What a workload may know about the order it serves."""

    worker_id: str
    work_order_id: str
    requester_id: str
    # State committed so far for (worker identity, workload); None if none yet.
    state: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WorkloadResult:
    outputs: Sequence[WorkloadOutput]
    # The state to commit with this result; None leaves the state unchanged.
    new_state: Mapping[str, Any] | None = None


class WorkloadFailed(Exception):
    """A workload refused its input; the message goes back in the error result."""


class Workload(Protocol):
    name: str
    stateful: bool

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult: ...


@dataclass
class WorkloadRegistry:
    """Workloads by name. ``default_registry()`` holds the built-in ones."""

    _by_name: dict[str, Workload] = field(default_factory=dict)

    def register(self, workload: Workload) -> None:
        if workload.name in self._by_name:
            raise ValueError(f"workload {workload.name!r} is already registered")
        self._by_name[workload.name] = workload

    def get(self, name: str) -> Workload | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)


_factories: list[Callable[[], Workload]] = []


def default_registry() -> WorkloadRegistry:
    """A registry with the built-in workloads (echo-result, heart-disease-eval, ...)."""
    from enclave_bridge import workloads  # noqa: F401  (registers the built-ins)

    registry = WorkloadRegistry()
    for make in _factories:
        registry.register(make())
    return registry


def builtin(factory: Callable[[], Workload]) -> Callable[[], Workload]:
    """Decorator for a built-in workload's factory."""
    _factories.append(factory)
    return factory
