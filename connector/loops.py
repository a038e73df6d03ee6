"""The bridges' step loops: bounded exponential backoff, health reporting, clean stop.

A step that meets a chain, node or store failure is logged with its
attempt number and the delay before the next try, marks the bridge
unhealthy when the node is unreachable, and is retried; any other error
propagates (to the bridge's TaskGroup, which ends the bridge loudly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from connector.ops import HealthSnapshot
from enclave_bridge.errors import ChainError, NodeUnavailable, StoreError

log = logging.getLogger("tcbridge.bridge")

# Backoff after a failed step: doubles from the first value to the cap.
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 15.0

RETRIED = (NodeUnavailable, ChainError, StoreError)


def backoff_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row."""
    return float(min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2.0 ** (failures - 1)))


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, waking early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class StepLoops:
    """Runs named steps forever; failures per step name feed one health snapshot."""

    def __init__(self, health: HealthSnapshot, poll_interval_s: float) -> None:
        self.health = health
        self.poll_interval_s = poll_interval_s
        self.failures: dict[str, int] = {}

    def failed(self, name: str, exc: Exception) -> float:
        """Record a failure of ``name``; return the delay before the next try."""
        failures = self.failures.get(name, 0) + 1
        self.failures[name] = failures
        delay = backoff_delay(failures)
        if isinstance(exc, NodeUnavailable):
            self.health.node_reachable = False
            self.health.node_error = str(exc)
        else:
            # The node answered; what fails is this step (a reorg too deep,
            # a refused transaction, the database): say that instead.
            self.health.failing[name] = str(exc)
            if isinstance(exc, ChainError) and not isinstance(exc, StoreError):
                self.health.node_reachable = True
                self.health.node_error = ""
        log.warning("%s step failed (attempt %d, retry in %.1f s): %s", name, failures, delay, exc)
        return delay

    def succeeded(self, name: str) -> None:
        self.health.failing.pop(name, None)
        if self.failures.pop(name, 0):
            log.info("%s recovered", name)
        if not self.failures:
            self.health.node_reachable = True
            self.health.node_error = ""

    async def run(
        self, name: str, step: Callable[[], Awaitable[None]], stop: asyncio.Event,
        *, interval: float | None = None,
    ) -> None:
        interval = self.poll_interval_s if interval is None else interval
        while not stop.is_set():
            try:
                await step()
            except RETRIED as exc:
                await sleep_unless(stop, self.failed(name, exc))
                continue
            self.succeeded(name)
            await sleep_unless(stop, interval)
