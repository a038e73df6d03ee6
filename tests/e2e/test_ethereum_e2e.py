"""The main job end to end on real nodes: anvil, and Ganache 7."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.devnet import open_anvil, open_ganache
from enclave_bridge.errors import ConfigurationError
from tests.support.bridge_env import open_bridge_env

JOBS = [
    ("echo-result", ["hello"], "RESULT: hello"),
    ("json-extract", ['{"a":{"b":[1,2,3]}}', "/a/b/2"], "3"),
    (
        "price-median",
        ['[{"source":"x","price":"1"},{"source":"y","price":"3"}]'],
        '"median":"2"',
    ),
    (
        "heart-disease-eval",
        ["label: 45 1 3 120 240 0 1 150 0 1.2 2 0 3 0"],
        "risk of heart disease",
    ),
]


async def _flow(tmp_path: Path, url: str) -> None:
    async with open_bridge_env(tmp_path, url, workers=2) as env, env.running():
        submitted = []
        for n, (workload, inputs, expected) in enumerate(JOBS):
            requester = env.requester(n % 3)
            worker = await requester.worker(env.worker_ids[n % 2])
            submitted.append(
                (requester, await requester.submit(worker, workload, inputs), expected)
            )

        for requester, sub, expected in submitted:
            # Mined first: a late completion then means the bridge, not the
            # node or this test's own transaction, is slow.
            await requester.receipt(sub.tx_hash, timeout=60)
            completion = await requester.wait_completion(sub.order_key, timeout=60)
            checked = await requester.check(sub, completion)
            assert checked.ok, checked.verdict.reason
            assert expected in checked.outputs[0].data.decode()
        await env.wait_for_counts(COMPLETED=len(JOBS), SUBMITTED=0, RESULT_READY=0)


@pytest.mark.anvil
async def test_anvil_end_to_end(tmp_path: Path) -> None:
    """Orders of every built-in workload from several requesters complete and verify on anvil."""
    with open_anvil(block_time=0.2) as node:
        await _flow(tmp_path, node.url)


@pytest.mark.ganache
async def test_ganache_end_to_end(tmp_path: Path) -> None:
    """The same flow completes on Ganache 7 (chain id 1337, no anvil methods)."""
    # Ganache mines only when a transaction arrives unless given a block time;
    # with confirmations=1 the last completion would wait for the next block.
    with open_ganache(extra_args=["--miner.blockTime", "0.2"]) as node:
        await _flow(tmp_path, node.url)


@pytest.mark.anvil
async def test_consumer_contract_receives_the_verified_result(tmp_path: Path) -> None:
    """A work order requested by ExampleConsumer is completed and its callback stores the result."""
    with open_anvil(block_time=0.2) as node:
        async with open_bridge_env(tmp_path, node.url) as env, env.running():
            owner = env.requester(0)
            # The deployer (operator key) owns the consumer; use it as the requester.
            from connector.requester_client import EthereumRequester
            from tests.support.bridge_env import OPERATOR_KEY

            owner = EthereumRequester(
                env.rpc,
                bytes.fromhex(OPERATOR_KEY[2:]),
                env.config.ethereum.chain_id,
                env.deployment.contracts["WorkOrderRegistry"],
                env.deployment.contracts["WorkerRegistry"],
            )
            worker = await owner.worker(env.worker_ids[0])
            consumer = env.deployment.contracts["ExampleConsumer"]
            sub = await owner.submit_via_consumer(
                consumer, worker, "echo-result", ["via consumer"]
            )
            completion = await owner.wait_completion(sub.order_key, timeout=60)
            checked = await owner.check(sub, completion)
            received, status, response = await owner.consumer_result(
                consumer, sub.order_key
            )

    assert checked.ok, checked.verdict.reason
    assert (received, status, response) == (True, 0, completion.response)


@pytest.mark.anvil
async def test_bridge_refuses_a_node_of_another_chain(tmp_path: Path) -> None:
    """The bridge reads the chain id from the node and refuses a configuration that differs."""
    with open_anvil() as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env:
            env.config.ethereum.chain_id = 1
            with pytest.raises(ConfigurationError, match="chain id 31337"):
                async with env.running():
                    pytest.fail("the bridge started against the wrong chain")
