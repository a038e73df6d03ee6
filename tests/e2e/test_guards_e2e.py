"""Operator guards and bad requests, end to end on anvil."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from connector import runtime
from connector.devnet import open_anvil
from connector.ethereum.transactions import encode_submit
from connector.requester_client import requester_id_of
from enclave_bridge.result_signature import order_key
from tests.support.bridge_env import open_bridge_env

pytestmark = pytest.mark.anvil


async def test_pause_holds_work_and_resume_completes_it(tmp_path: Path) -> None:
    """While paused nothing is dispatched or sent; after resume the order completes."""
    with open_anvil(block_time=0.2) as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env, env.running():
            flag = runtime.paused_flag(env.config)
            flag.write_text("paused by test")
            requester = env.requester(0)
            worker = await requester.worker(env.worker_ids[0])
            sub = await requester.submit(worker, "echo-result", ["held"])
            await env.wait_for_counts(RECEIVED=1)
            await asyncio.sleep(1.0)
            held = await env.wait_for_counts(RECEIVED=1, COMPLETED=0)
            flag.unlink()
            completion = await requester.wait_completion(sub.order_key, timeout=30)

    assert held["CLAIMED"] == 0
    assert completion.status == 0


async def test_requester_off_the_allowlist_is_skipped(tmp_path: Path) -> None:
    """With an allow-list, another requester's order is recorded SKIPPED and costs no gas."""
    with open_anvil(block_time=0.2) as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env:
            allowed = env.requester(0)
            stranger = env.requester(1)
            env.config.guards.requester_allowlist = [allowed.address]
            async with env.running():
                worker = await allowed.worker(env.worker_ids[0])
                ok = await allowed.submit(worker, "echo-result", ["mine"])
                await stranger.submit(worker, "echo-result", ["theirs"])
                await allowed.wait_completion(ok.order_key, timeout=30)
                counts = await env.wait_for_counts(SKIPPED=1, COMPLETED=1)

    assert counts["FAILED"] == 0


async def test_garbage_requests_complete_on_chain_with_an_error(tmp_path: Path) -> None:
    """Bytes that are not a work order still get an on-chain error completion, and honest work goes on."""
    with open_anvil(block_time=0.2) as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env, env.running():
            requester = env.requester(0)
            worker = await requester.worker(env.worker_ids[0])
            keys = []
            for n, body in enumerate([b"not json", b"{}", b'{"params": []}', b"\xff\xfe", b"[" * 5000]):
                work_order_id = bytes([n + 1]) * 32
                data = encode_submit(work_order_id, bytes.fromhex(worker.worker_id),
                                     bytes.fromhex(requester_id_of(requester.address)), body)
                await requester.send(requester.registry, data, 400_000)
                keys.append(order_key(requester.address, work_order_id))
            honest = await requester.submit(worker, "echo-result", ["after garbage"])

            statuses = [(await requester.wait_completion(k, timeout=30)).status for k in keys]
            good = await requester.wait_completion(honest.order_key, timeout=30)
            checked = await requester.check(honest, good)
            failed = [await requester.wait_completion(k, timeout=1) for k in keys[:1]]

    assert all(status != 0 for status in statuses)
    assert checked.ok
    body = json.loads(failed[0].response)
    assert body["error"]["code"] == statuses[0]
