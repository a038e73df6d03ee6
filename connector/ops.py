"""The operator's window: a health endpoint and Prometheus metrics over aiohttp.

``GET /health`` answers 200 with ``{"healthy": true, ...}`` or 503 with the
reasons (node unreachable, watcher lagging, relayer balance low, paused is
reported but healthy). ``GET /metrics`` answers the Prometheus text format.
Both read one cheap snapshot the bridge keeps up to date; neither touches
the chain or the database on the request path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class HealthSnapshot:
    node_reachable: bool = True
    node_error: str = ""
    lag_blocks: int = 0
    lag_threshold: int = 20
    balance_wei: int | None = None
    min_balance_wei: int = 0
    paused: bool = False
    # Step loops failing for another reason than an unreachable node.
    failing: dict[str, str] = field(default_factory=dict)
    # Prometheus gauges and counters: name -> value, or name -> {labels: value}.
    metrics: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        if not self.node_reachable:
            out.append(f"node unreachable: {self.node_error}")
        for loop, error in sorted(self.failing.items()):
            out.append(f"{loop} failing: {error}")
        if self.lag_blocks > self.lag_threshold:
            out.append(
                f"watcher lags {self.lag_blocks} blocks (threshold {self.lag_threshold})"
            )
        if self.balance_wei is not None and self.balance_wei < self.min_balance_wei:
            out.append(
                f"relayer balance {self.balance_wei} wei is below {self.min_balance_wei} wei; top it up"
            )
        return out


def render_metrics(metrics: dict[str, Any]) -> str:
    lines = []
    for name in sorted(metrics):
        value = metrics[name]
        full = f"tcbridge_{name}"
        if isinstance(value, dict):
            lines.append(f"# TYPE {full} {_kind(name)}")
            for labels, v in sorted(value.items()):
                label_text = ",".join(f'{k}="{val}"' for k, val in labels)
                lines.append(f"{full}{{{label_text}}} {v}")
        else:
            lines.append(f"# TYPE {full} {_kind(name)}")
            lines.append(f"{full} {value}")
    return "\n".join(lines) + "\n"


def _kind(name: str) -> str:
    return "counter" if name.endswith("_total") else "gauge"


def make_app(snapshot: Callable[[], HealthSnapshot]) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        snap = snapshot()
        problems = snap.problems()
        body = {
            "healthy": not problems,
            "problems": problems,
            "paused": snap.paused,
            "lag_blocks": snap.lag_blocks,
            "balance_wei": snap.balance_wei,
        }
        return web.Response(
            text=json.dumps(body),
            status=200 if not problems else 503,
            content_type="application/json",
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            text=render_metrics(snapshot().metrics), content_type="text/plain"
        )

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


@asynccontextmanager
async def serve_ops(
    snapshot: Callable[[], HealthSnapshot],
    listen: str = "127.0.0.1:0",
    *,
    extra: web.Application | None = None,
    extra_prefix: str = "/chainlink",
) -> AsyncIterator[str]:
    """Run the ops server; yields its base URL. Binds 127.0.0.1 unless told otherwise.

    ``extra`` (for example the Chainlink adapter) is mounted under ``extra_prefix``:
    aiohttp refuses to mount a sub-application at the root.
    """
    host, _, port = listen.rpartition(":")
    app = make_app(snapshot)
    if extra is not None:
        app.add_subapp(extra_prefix, extra)
    # No decompression of request bodies (enclave_bridge.listener_schema's
    # body_encoding says why); the adapter mounted here refuses encoded bodies.
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port or 0))
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        await runner.cleanup()
