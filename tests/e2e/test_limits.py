"""Size limits end to end: at the limit and one byte under round trip, one byte over is an error result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.devnet import open_anvil
from connector.ethereum.transactions import encode_submit
from connector.requester_client import Submitted, encode_request
from enclave_bridge.errors import ConfigurationError
from enclave_bridge.result_signature import order_key
from tests.support.bridge_env import open_bridge_env

pytestmark = pytest.mark.anvil


async def test_requests_at_under_and_over_the_limit(tmp_path: Path) -> None:
    """Under and at the limit complete with the exact echo; one byte over completes with an error."""
    with open_anvil(block_time=0.2) as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env:
            requester = env.requester(0)
            worker = await requester.worker(env.worker_ids[0])
            probe = encode_request(requester.build(worker, "echo-result", ["y" * 500]))
            limit = len(probe) + 50
            env.config.limits.max_request_bytes = limit
            async with env.running():
                subs = []
                for size in (limit - 1, limit, limit + 1):
                    sent = requester.build(worker, "echo-result", ["y" * 500])
                    body = encode_request(sent)
                    body += b" " * (size - len(body))  # JSON allows trailing white space
                    assert len(body) == size
                    params = sent.params
                    data = encode_submit(bytes.fromhex(params["workOrderId"]),
                                         bytes.fromhex(worker.worker_id),
                                         bytes.fromhex(params["requesterId"]), body)
                    tx = await requester.send(requester.registry, data, 600_000)
                    key = order_key(requester.address, bytes.fromhex(params["workOrderId"]))
                    subs.append(Submitted(key, sent, worker, tx.hash, 0.0))
                done = [await requester.wait_completion(s.order_key, timeout=60) for s in subs]
                checked = [await requester.check(s, c) for s, c in zip(subs[:2], done[:2], strict=True)]

    assert all(c.ok and c.outputs[0].data == b"RESULT: " + b"y" * 500 for c in checked)
    assert done[2].status != 0
    assert "request" in json.loads(done[2].response)["error"]["message"].lower()


async def test_limits_that_cannot_fit_the_chain_are_refused_at_start(tmp_path: Path) -> None:
    """A result limit beyond what one completion transaction can carry stops the bridge at start."""
    with open_anvil() as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env:
            env.config.limits.max_result_bytes = 10_000_000
            with pytest.raises(ConfigurationError, match="size limits do not fit"):
                async with env.running():
                    pytest.fail("the bridge started with impossible limits")
