"""The ops server: health verdicts and Prometheus metrics."""

from __future__ import annotations

import aiohttp

from connector.ops import HealthSnapshot, render_metrics, serve_ops


async def test_health_is_503_with_reasons_when_something_is_wrong() -> None:
    """Node down, lagging watcher and low balance each make /health answer 503 with a reason."""
    snap = HealthSnapshot(lag_threshold=5, min_balance_wei=100)
    async with (
        serve_ops(lambda: snap, "127.0.0.1:0") as url,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(url + "/health") as resp:
            assert resp.status == 200 and (await resp.json())["healthy"] is True
        snap.node_reachable, snap.node_error = False, "connection refused"
        snap.lag_blocks = 9
        snap.balance_wei = 5
        async with http.get(url + "/health") as resp:
            body = await resp.json()

    assert resp.status == 503
    assert len(body["problems"]) == 3
    assert any("connection refused" in p for p in body["problems"])


async def test_metrics_render_gauges_with_labels() -> None:
    """Metrics come out in the Prometheus text format, labels included."""
    text = render_metrics(
        {"watcher_lag_blocks": 3, "work_orders": {(("state", "COMPLETED"),): 7}}
    )

    assert "tcbridge_watcher_lag_blocks 3" in text
    assert 'tcbridge_work_orders{state="COMPLETED"} 7' in text


async def test_ops_server_binds_loopback_by_default() -> None:
    """Without an explicit host the server listens on 127.0.0.1 only."""
    async with serve_ops(lambda: HealthSnapshot(), ":0") as url:
        assert url.startswith("http://127.0.0.1:")
