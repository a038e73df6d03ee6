"""Reorgs on anvil (``anvil_reorg``), with manual mining so every step is deterministic.

anvil never re-sends logs with ``removed: true`` and drops the transactions
of replaced blocks unless they are given back as replacement pairs, so
these tests exercise the block-hash check, orphaning, re-sending of
completions that a reorg dropped, and the nonce gap such a drop leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from connector import runtime
from connector.devnet import open_anvil
from connector.ethereum import events as ev
from connector.requester_client import EthereumRequester
from tests.support.bridge_env import BridgeEnv, open_bridge_env

pytestmark = pytest.mark.anvil

CONFIRMATIONS = 2


async def mine(env: BridgeEnv, blocks: int = 1) -> None:
    for _ in range(blocks):
        await env.rpc.call("evm_mine")


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def relayer_pending(env: BridgeEnv) -> int:
    assert env.bridge is not None
    return int(await env.rpc.call("eth_getTransactionCount", env.bridge.signer.address, "pending"), 16)


async def relayer_mined(env: BridgeEnv) -> int:
    assert env.bridge is not None
    return int(await env.rpc.call("eth_getTransactionCount", env.bridge.signer.address, "latest"), 16)


async def completions_of(env: BridgeEnv, key: bytes) -> int:
    logs = await env.rpc.call("eth_getLogs", {
        "address": env.deployment.contracts["WorkOrderRegistry"],
        "topics": [ev.COMPLETED_TOPIC, "0x" + key.hex()], "fromBlock": "0x0", "toBlock": "latest",
    })
    return len(logs)


async def state_of(env: BridgeEnv, key: bytes) -> str:
    assert env.bridge is not None
    from connector.store import OrderRef

    order = await env.bridge.store.get_order(
        OrderRef.of(env.config.ethereum.chain_id, env.deployment.contracts["WorkOrderRegistry"], key))
    return "none" if order is None else order.state.value


async def submit(env: BridgeEnv, requester: EthereumRequester, text: str):  # type: ignore[no-untyped-def]
    worker = await requester.worker(env.worker_ids[0])
    return await requester.submit(worker, "echo-result", [text])


async def complete_through(env: BridgeEnv, key: bytes) -> None:
    """Mine until the order is completed on-chain and confirmed in the store."""
    async def done() -> bool:
        await mine(env)
        return await state_of(env, key) == "COMPLETED"

    await until(done, timeout=30)


def manual_anvil():  # type: ignore[no-untyped-def]
    return open_anvil()


async def _manual(env: BridgeEnv) -> None:
    await env.rpc.call("evm_setAutomine", False)


async def test_reorg_drops_a_completion_and_the_stored_transaction_is_resent(tmp_path: Path) -> None:
    """A completion mined then reorged out (dropped) is re-broadcast and completes exactly once."""
    with manual_anvil() as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False,
                                   confirmations=str(CONFIRMATIONS), poll_interval=0.05) as env:
            async with env.running():
                await _manual(env)
                sub = await submit(env, env.requester(0), "reorged completion")
                await mine(env, 1 + CONFIRMATIONS)
                await until(lambda: _pending_above(env, 0))
                await mine(env)  # the completion is mined, not yet confirmed
                await until(lambda: _eq(relayer_mined(env), 1))
                await env.rpc.call("anvil_reorg", 1, [])  # ...and dropped
                assert await relayer_mined(env) == 0
                await until(lambda: _pending_above(env, 0))  # re-broadcast
                await complete_through(env, sub.order_key)
                assert await completions_of(env, sub.order_key) == 1


async def test_reorg_that_drops_the_first_of_two_completions_fills_the_nonce_gap(tmp_path: Path) -> None:
    """Nonce N dropped while N+1 waits: the submitter re-sends N and both complete."""
    with manual_anvil() as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False,
                                   confirmations=str(CONFIRMATIONS), poll_interval=0.05) as env:
            async with env.running():
                await _manual(env)
                first = await submit(env, env.requester(0), "first")
                await mine(env)  # block A
                second = await submit(env, env.requester(1), "second")
                await mine(env, 2)  # A+1 holds the second submit; A+2 confirms the first
                await until(lambda: _pending_above(env, 0))  # completion nonce 0 sent
                await mine(env)  # A+3: nonce 0 mined (unconfirmed); the second is confirmed
                await until(lambda: _eq(relayer_mined(env), 1))
                await until(lambda: _pending_above(env, 1))  # completion nonce 1 waits in the pool
                await env.rpc.call("anvil_reorg", 1, [])  # drops A+3 and nonce 0 with it
                assert await relayer_mined(env) == 0
                assert await relayer_pending(env) == 2  # nonce 1 waits behind the gap
                await complete_through(env, first.order_key)
                await complete_through(env, second.order_key)
                assert await completions_of(env, first.order_key) == 1
                assert await completions_of(env, second.order_key) == 1
                assert env.bridge is not None and env.bridge.submitter.stats.rebroadcast >= 1


async def test_reorg_deeper_than_confirmations_orphans_and_revives_the_order(tmp_path: Path) -> None:
    """A confirmed submit reorged out becomes ORPHANED; the same order mined again completes once."""
    with manual_anvil() as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False,
                                   confirmations=str(CONFIRMATIONS), poll_interval=0.05) as env:
            async with env.running():
                await _manual(env)
                runtime.paused_flag(env.config).write_text("hold")
                requester = env.requester(0)
                sub = await submit(env, requester, "orphan me")
                await mine(env, 1 + CONFIRMATIONS)
                await until(lambda: _eq(state_of(env, sub.order_key), "RECEIVED"))
                await env.rpc.call("anvil_reorg", CONFIRMATIONS + 1, [])
                await mine(env)
                await until(lambda: _eq(state_of(env, sub.order_key), "ORPHANED"))
                await env.rpc.call("eth_sendRawTransaction", "0x" + sub.raw.hex())
                runtime.paused_flag(env.config).unlink()
                await complete_through(env, sub.order_key)
                assert await completions_of(env, sub.order_key) == 1
                assert env.bridge is not None and env.bridge.watcher.reorgs >= 1


async def test_reorg_shallower_than_confirmations_is_never_seen(tmp_path: Path) -> None:
    """A submit re-mined in a replacement block before it was confirmed completes once, no rollback."""
    with manual_anvil() as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False,
                                   confirmations=str(CONFIRMATIONS), poll_interval=0.05) as env:
            async with env.running():
                await _manual(env)
                sub = await submit(env, env.requester(0), "shallow")
                await mine(env)
                await env.rpc.call("anvil_reorg", 1, [["0x" + sub.raw.hex(), 0]])
                await complete_through(env, sub.order_key)
                assert await completions_of(env, sub.order_key) == 1
                assert env.bridge is not None and env.bridge.watcher.reorgs == 0


async def _pending_above(env: BridgeEnv, n: int) -> bool:
    return await relayer_pending(env) > n


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_reorg_deeper_than_confirmations_that_removes_a_completion_resends_it(
    tmp_path: Path,
) -> None:
    """A confirmed completion reorged out reopens its order (RESULT_READY) and it completes once more."""
    with manual_anvil() as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False,
                                   confirmations=str(CONFIRMATIONS), poll_interval=0.05) as env:
            async with env.running():
                await _manual(env)
                sub = await submit(env, env.requester(0), "completed, then reorged out")
                await mine(env, 1 + CONFIRMATIONS)
                await until(lambda: _pending_above(env, 0))
                await complete_through(env, sub.order_key)  # completion confirmed
                assert await completions_of(env, sub.order_key) == 1
                head = int(await env.rpc.call("eth_blockNumber"), 16)
                receipt = await env.rpc.call("eth_getLogs", {
                    "address": env.deployment.contracts["WorkOrderRegistry"],
                    "topics": [ev.COMPLETED_TOPIC, "0x" + sub.order_key.hex()],
                    "fromBlock": "0x0", "toBlock": "latest"})
                completion_block = int(receipt[0]["blockNumber"], 16)
                await env.rpc.call("anvil_reorg", head - completion_block + 1, [])
                assert await completions_of(env, sub.order_key) == 0

                async def reopened() -> bool:
                    await mine(env)
                    return await state_of(env, sub.order_key) != "COMPLETED"

                await until(reopened)
                await complete_through(env, sub.order_key)
                assert await completions_of(env, sub.order_key) == 1
