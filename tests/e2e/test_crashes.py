"""Crashes of the bridge process: random SIGKILLs, and crash points between ordered steps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connector import chaos, loadgen
from connector.faults import CRASH_STATUS

pytestmark = [pytest.mark.anvil, pytest.mark.slow]


@pytest.mark.parametrize(
    "point",
    ["submitter.after_record:1", "submitter.after_broadcast:1", "watcher.after_poll:3"],
    ids=["recorded-not-broadcast", "broadcast-not-followed-up", "events-committed"],
)
async def test_crash_between_steps_loses_and_repeats_nothing(tmp_path: Path, point: str) -> None:
    """The process dies exactly at a crash point; after a restart every order completes once, no tx wasted."""
    async with chaos.open_stack(tmp_path) as stack:
        orders = await chaos.make_orders(stack, 24, requesters=4)
        start_block = int(await stack.rpc.call("eth_blockNumber"), 16)
        stack.bridge.start(crash_at=point)
        await stack.bridge.wait_ready()
        await loadgen.send(stack.rpc, orders)
        assert stack.bridge.proc is not None
        status = await asyncio.to_thread(stack.bridge.proc.wait, 60)
        assert status == CRASH_STATUS
        stack.bridge.start()
        result = await chaos.outcome(stack, orders, start_block, kills=1, timeout=90)

    assert (result.lost, result.duplicated, result.completed) == (0, 0, len(orders))
    assert result.wasted_tx == 0
    assert result.secrets_in_logs == []


async def test_random_kills_while_300_orders_flow(tmp_path: Path) -> None:
    """Five SIGKILLs at random moments: nothing lost or doubled, no orphan pool processes, bounded waste."""
    result = await asyncio.to_thread(
        chaos.run, ["--orders", "300", "--kills", "5", "--seed", "7", "--timeout", "180"]
    )

    assert (result.lost, result.duplicated, result.completed) == (0, 0, 300)
    assert result.orphans == 0
    assert result.kills >= 5
    assert result.reexecuted <= result.kills * 2
    assert result.wasted_tx <= result.kills
    assert result.secrets_in_logs == []
