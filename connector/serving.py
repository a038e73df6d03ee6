"""What ``tcbridge run`` serves beside the bridge's loops.

The ops server always runs. Two optional front doors share the bridge's
enclave pool:

- ``[listener] enabled``: the EEA direct-model JSON-RPC listener on its own
  address (``[listener] listen``); its order book is its own SQLite file
  (``[listener] book``), because its orders never touch a chain;
- ``[chainlink] enabled``: the Chainlink external adapter, mounted on the
  ops server under ``[chainlink] path``.

Their counters join the bridge's on the ops server's ``/metrics`` page.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from connector.chainlink import AdapterSettings, ChainlinkAdapter
from connector.config import Config
from connector.ops import HealthSnapshot, serve_ops
from enclave_bridge.listener import (
    EeaListener,
    ListenerSettings,
    WorkOrderBackend,
    serve_from_config,
    serve_listener,
)
from enclave_bridge.listener_book import OrderBook

log = logging.getLogger("tcbridge.serving")


class RunningBridge(Protocol):
    """What the serving layer needs from an Ethereum or Fabric bridge."""

    @property
    def health(self) -> HealthSnapshot: ...

    @property
    def pool(self) -> WorkOrderBackend: ...


@dataclass(frozen=True)
class ServedUrls:
    """Where a running bridge answers; ``None`` for a front door that is off."""

    ops: str
    listener: str | None = None
    chainlink: str | None = None


@contextlib.asynccontextmanager
async def serve_bridge(
    config: Config, bridge: RunningBridge
) -> AsyncIterator[ServedUrls]:
    """Start the ops server and the enabled front doors; stop them on the way out."""
    metric_sources: list[Callable[[], dict[str, int]]] = []

    def snapshot() -> HealthSnapshot:
        health = bridge.health
        if not metric_sources:
            return health
        merged = dict(health.metrics)
        for source in metric_sources:
            merged.update(source())
        return dataclasses.replace(health, metrics=merged)

    async with contextlib.AsyncExitStack() as stack:
        listener_url = None
        if config.listener.enabled:
            listener = await stack.enter_async_context(
                _open_listener(config, bridge.pool)
            )
            listener_url = await stack.enter_async_context(
                serve_listener(listener, config.listener.listen)
            )
            metric_sources.append(listener.metrics)
            log.info(
                "EEA listener %s serving on %s", config.listener.name, listener_url
            )

        adapter = None
        if config.chainlink.enabled:
            adapter = ChainlinkAdapter(bridge.pool, AdapterSettings.from_config(config))
            metric_sources.append(adapter.metrics)

        ops_url = await stack.enter_async_context(
            serve_ops(
                snapshot,
                config.ops.listen,
                extra=adapter.app() if adapter is not None else None,
                extra_prefix=config.chainlink.path,
            )
        )
        chainlink_url = None
        if adapter is not None:
            chainlink_url = ops_url + config.chainlink.path.rstrip("/") + "/"
            log.info("Chainlink adapter serving on %s", chainlink_url)

        yield ServedUrls(ops_url, listener_url, chainlink_url)


@contextlib.asynccontextmanager
async def _open_listener(
    config: Config, backend: WorkOrderBackend
) -> AsyncIterator[EeaListener]:
    path = config.path(config.listener.book)
    path.parent.mkdir(parents=True, exist_ok=True)
    book = OrderBook(path)
    try:
        yield EeaListener(backend, book, ListenerSettings.from_config(config))
    finally:
        book.close()


async def run_bridge(
    config: Config,
    stop: asyncio.Event,
    on_ready: Callable[[ServedUrls], None] | None = None,
) -> None:
    """``tcbridge run`` without its process: open, serve, run until ``stop``."""
    from connector import runtime

    async with (
        runtime.open_chain_bridge(config) as bridge,
        serve_bridge(config, bridge) as urls,
    ):
        written = [runtime.data_dir(config) / "ops.url"]
        written[0].write_text(urls.ops)
        if urls.listener is not None:
            written.append(runtime.data_dir(config) / "listener.url")
            written[1].write_text(urls.listener)
        if on_ready is not None:
            on_ready(urls)
        try:
            await bridge.run(stop)
        finally:
            # `tcbridge status` reads these: no stale address once stopped.
            for path in written:
                path.unlink(missing_ok=True)


async def run_listener_alone(
    config: Config,
    stop: asyncio.Event,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """``tcbridge listen``: the enclave pool and the EEA listener, no chain.

    The direct model needs no node, deployment or relayer key: only the
    worker identities, the pool passphrase and ``[listener]``. The URL is
    written to ``var/listener.url`` while it serves.
    """
    from connector import runtime

    async with (
        runtime.open_enclave_pool(config) as pool,
        serve_from_config(config, pool) as url,
    ):
        written = runtime.data_dir(config) / "listener.url"
        written.write_text(url)
        if on_ready is not None:
            on_ready(url)
        try:
            await stop.wait()
        finally:
            written.unlink(missing_ok=True)

