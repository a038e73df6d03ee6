"""A node that disappears, errs or hangs: the bridge backs off, reports itself unhealthy, resumes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from connector.devnet import free_port, rpc_call
from tests.support.bridge_env import BridgeEnv, open_bridge_env
from tests.support.flakyproxy import FlakyProxy, serve_proxy

pytestmark = pytest.mark.anvil

ANVIL = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "anvil"


def start_anvil(port: int, state: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--block-time", "0.2",
         "--state", str(state), "--chain-id", "31337"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            rpc_call(f"http://127.0.0.1:{port}", "eth_chainId", [])
            return proc
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError("anvil exited at start") from None
            import time

            time.sleep(0.05)
    raise RuntimeError("anvil did not answer")


async def one_order(env: BridgeEnv, text: str):  # type: ignore[no-untyped-def]
    requester = env.requester(0)
    worker = await requester.worker(env.worker_ids[0])
    return requester, await requester.submit(worker, "echo-result", [text])


async def unhealthy(env: BridgeEnv, timeout: float = 20.0) -> list[str]:
    assert env.bridge is not None
    deadline = asyncio.get_running_loop().time() + timeout
    while not env.bridge.health.problems():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the bridge never reported itself unhealthy")
        await asyncio.sleep(0.1)
    return env.bridge.health.problems()


async def healthy(env: BridgeEnv, timeout: float = 30.0) -> None:
    assert env.bridge is not None
    deadline = asyncio.get_running_loop().time() + timeout
    while env.bridge.health.problems():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still unhealthy: {env.bridge.health.problems()}")
        await asyncio.sleep(0.1)


async def test_node_stopped_and_restarted_with_its_state(tmp_path: Path) -> None:
    """anvil stops (dumping state) mid-run and comes back on the same port: nothing is lost."""
    port, state = free_port(), tmp_path / "anvil-state.json"
    node = start_anvil(port, state)
    try:
        async with open_bridge_env(tmp_path, f"http://127.0.0.1:{port}", with_consumer=False) as env:
            async with env.running():
                requester, before = await one_order(env, "before the outage")
                await requester.wait_completion(before.order_key, timeout=30)
                node.send_signal(signal.SIGTERM)
                node.wait(timeout=30)
                problems = await unhealthy(env)
                node = start_anvil(port, state)
                requester._nonce = None  # the node restarted: ask it again
                _, during = await one_order(env, "after the outage")
                await healthy(env)
                completion = await requester.wait_completion(during.order_key, timeout=60)
                checked = await requester.check(during, completion)
                await env.wait_for_counts(COMPLETED=2)
    finally:
        node.terminate()
        node.wait(timeout=30)

    assert any("node unreachable" in p for p in problems)
    assert checked.ok


@pytest.mark.parametrize("mode", ["http_error", "rpc_error", "hang", "down"])
async def test_node_that_errs_or_hangs_is_backed_off_and_work_resumes(tmp_path: Path, mode: str) -> None:
    """Errors, JSON-RPC failures, a hang and dropped connections: unhealthy, bounded retries, no loss."""
    from connector.devnet import open_anvil

    with open_anvil(block_time=0.2) as node:
        proxy = FlakyProxy(node.url)
        async with serve_proxy(proxy) as url:
            async with open_bridge_env(tmp_path, node.url, with_consumer=False,
                                       rpc_timeout_s=1.0) as env:
                env.config.ethereum.rpc_url = url
                async with env.running():
                    requester, sub = await one_order(env, f"through {mode}")
                    proxy.mode = mode
                    await asyncio.sleep(2.5)
                    calls_during = proxy.requests
                    await asyncio.sleep(2.0)
                    calls_after = proxy.requests - calls_during
                    proxy.mode = "ok"
                    completion = await requester.wait_completion(sub.order_key, timeout=60)
                    await env.wait_for_counts(COMPLETED=1)

    assert completion.status == 0
    # Backoff: far fewer calls than the 0.1 s poll interval would make over 2 s.
    assert calls_after < 40
