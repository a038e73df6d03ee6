"""One requester flooding the registry does not starve the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector import loadgen
from connector.devnet import open_anvil
from tests.support.bridge_env import open_bridge_env

pytestmark = [pytest.mark.anvil, pytest.mark.slow]


async def test_a_late_honest_order_overtakes_a_flood(tmp_path: Path) -> None:
    """After 600 orders from one requester, another requester's order completes near the front."""
    with open_anvil(block_time=0.2, gas_limit=300_000_000) as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env:
            env.config.limits.max_in_flight_per_requester = 8
            honest = env.requester(0)
            worker = await honest.worker(env.worker_ids[0])
            flooder = loadgen.new_requesters(1)
            await loadgen.fund(env.rpc, flooder)
            flood = await loadgen.prepare(
                env.rpc, honest.registry, worker, flooder, 600, b"flood", chain_id=31337
            )
            start = int(await env.rpc.call("eth_blockNumber"), 16)
            await loadgen.send(env.rpc, flood)
            sub = await honest.submit(worker, "echo-result", ["me too"])
            async with env.running():
                followed = await loadgen.follow(
                    env.rpc, honest.registry, {o.key: o for o in flood}, confirmations=0,
                    from_block=start, timeout=240,
                )
                mine = await honest.wait_completion(sub.order_key, timeout=10, from_block=start)
                order = [c.order_key for c in await honest.completions(start)]

    assert len(followed.counts) == 600
    assert mine.status == 0
    # Completions in chain order: the honest order is not behind the flood.
    assert order.index(sub.order_key) < 100, order.index(sub.order_key)
