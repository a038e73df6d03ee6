"""`tcbridge run` with the EEA listener and the Chainlink adapter switched on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connector.devnet import open_anvil
from connector.serving import ServedUrls, run_bridge
from enclave_bridge.requester import build_work_order, verify_response
from tests.support.bridge_env import open_bridge_env

BRIDGE_TOKEN = "wiring-test-bridge-token"
TOKEN_ENV = "TCBRIDGE_CHAINLINK_BRIDGE_TOKEN"


async def _post(
    http: aiohttp.ClientSession, url: str, body: Any, token: str | None = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


@pytest.mark.anvil
async def test_run_serves_listener_and_adapter_beside_the_chain(
    tmp_path: Path,
) -> None:
    """With both enabled, one run answers a WorkOrderSubmit and an adapter job and completes an on-chain order."""
    with open_anvil(block_time=0.2) as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env:
            env.config.listener.enabled = True
            env.config.chainlink.enabled = True
            os.environ[TOKEN_ENV] = BRIDGE_TOKEN
            ready: asyncio.Future[ServedUrls] = (
                asyncio.get_running_loop().create_future()
            )
            stop = asyncio.Event()
            task = asyncio.create_task(run_bridge(env.config, stop, ready.set_result))
            try:
                urls = await asyncio.wait_for(asyncio.shield(ready), 60)
                assert urls.listener is not None and urls.chainlink is not None
                written = (tmp_path / "var" / "listener.url").read_text()

                requester = env.requester(0)
                worker = await requester.worker(env.worker_ids[0])
                on_chain = await requester.submit(worker, "echo-result", ["chain"])

                direct = build_work_order(
                    worker, "echo-result", ["direct"], requester_key=os.urandom(32)
                )
                async with aiohttp.ClientSession() as http:
                    answer = await _post(http, urls.listener, direct.request)
                    job = await _post(
                        http,
                        urls.chainlink,
                        {
                            "id": "wiring-1",
                            "data": {"workload": "echo-result", "inputs": ["link"]},
                        },
                        BRIDGE_TOKEN,
                    )
                    async with http.get(urls.ops + "/metrics") as page:
                        metrics = await page.text()

                completion = await requester.wait_completion(
                    on_chain.order_key, timeout=60
                )
                checked = await requester.check(on_chain, completion)
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
                os.environ.pop(TOKEN_ENV, None)

    verdict = verify_response(direct, answer, worker)
    assert verdict.accepted, verdict.reason
    assert verdict.outputs[0].data == b"RESULT: direct"
    assert job["statusCode"] == 200 and job["result"] == "RESULT: link"
    assert "tcbridge_listener_orders_submitted_total 1" in metrics
    assert "tcbridge_chainlink_work_orders_total 1" in metrics
    assert checked.ok, checked.verdict.reason
    assert checked.outputs[0].data == b"RESULT: chain"
    assert written == urls.listener
    # Removed on stop, so `tcbridge status` never reads a dead address.
    assert not (tmp_path / "var" / "listener.url").exists()
    assert not (tmp_path / "var" / "ops.url").exists()
