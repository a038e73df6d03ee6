"""Hostile requesters on-chain: mutated work orders through the real contract, honest ones in between."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.devnet import open_anvil
from connector.ethereum.transactions import encode_submit
from connector.requester_client import EthereumRequester, encode_request, requester_id_of
from enclave_bridge.errors import TransactionFailed
from enclave_bridge.requester import build_work_order
from enclave_bridge.result_signature import order_key
from tests.support.bridge_env import BridgeEnv, open_bridge_env

pytestmark = [pytest.mark.anvil, pytest.mark.slow]


def _flip_hex(text: str) -> str:
    return ("0" if text[0] != "0" else "1") + text[1:]


def _flip_b64(text: str) -> str:
    # The first character always carries six bits of data: a real change.
    # (Writing "A" unconditionally left 1 text in 64 unchanged: a valid order.)
    return ("A" if text[0] != "A" else "B") + text[1:]


MUTATIONS: dict[str, Any] = {
    "wrong-type-nonce": lambda p: p.__setitem__("requesterNonce", 12345),
    "bad-hex-session-key": lambda p: p.__setitem__("encryptedSessionKey", "zz" + p["encryptedSessionKey"][2:]),
    "flipped-session-key": lambda p: p.__setitem__("encryptedSessionKey", _flip_hex(p["encryptedSessionKey"])),
    "huge-field": lambda p: p.__setitem__("resultUri", "h" * 20_000),
    "bad-signature": lambda p: p.__setitem__("requesterSignature", p["requesterSignature"][:-8] + "AAAAAAA="),
    "flipped-data": lambda p: p["inData"][0].__setitem__("data", _flip_b64(p["inData"][0]["data"])),
    "unknown-workload": lambda p: p.__setitem__("workloadId", b"no-such-workload".hex()),
    # Self-consistent requests (hashed, encrypted and signed over their own
    # ids) whose ids differ from the ones the call puts in the event topics.
    "json-work-order-id-differs": "consistent",
    "json-requester-id-differs": "consistent",
    "duplicate-index": lambda p: p["inData"].append(dict(p["inData"][0])),
    "not-json": None,
}


async def _submit_raw(requester: EthereumRequester, worker_id: str, work_order_id: bytes,
                      body: bytes) -> bytes:
    data = encode_submit(work_order_id, bytes.fromhex(worker_id),
                         bytes.fromhex(requester_id_of(requester.address)), body)
    await requester.send(requester.registry, data, 3_000_000)
    return order_key(requester.address, work_order_id)


async def _session(env: BridgeEnv, kinds: list[str]) -> tuple[list[int], list[bool], int]:
    hostile, honest = env.requester(0), env.requester(1)
    worker = await hostile.worker(env.worker_ids[0])
    keys, honest_subs = [], []
    for n, kind in enumerate(kinds):
        sent = hostile.build(worker, "echo-result", [f"payload {n}"])
        params = copy.deepcopy(dict(sent.params))
        topic_id = bytes.fromhex(params["workOrderId"])
        mutate = MUTATIONS[kind]
        if mutate is None:
            body = b"\x00not json at all"
        elif mutate == "consistent":
            other = build_work_order(
                worker, "echo-result", [f"payload {n}"], requester_key=hostile.key,
                requester_id=("ef" * 32) if "requester" in kind else None,
            )
            if "requester" in kind:
                other = build_work_order(
                    worker, "echo-result", [f"payload {n}"], requester_key=hostile.key,
                    requester_id="ef" * 32, work_order_id=topic_id.hex(),
                )
            body = encode_request(other)
        else:
            mutate(params)
            body = json.dumps({**sent.request, "params": params}).encode()
        keys.append(await _submit_raw(hostile, worker.worker_id, topic_id, body))
        if n % 3 == 0:
            honest_subs.append(await honest.submit(worker, "echo-result", [f"honest {n}"]))
    # A copy of another requester's (honest) request: same request hash.
    copied = encode_request(honest_subs[0].sent)
    keys.append(await _submit_raw(hostile, worker.worker_id, b"\x99" * 32, copied))

    statuses = [(await hostile.wait_completion(k, timeout=90)).status for k in keys]
    verdicts = []
    for sub in honest_subs:
        completion = await honest.wait_completion(sub.order_key, timeout=90)
        verdicts.append((await honest.check(sub, completion)).ok)
    return statuses, verdicts, len(keys)


@settings(max_examples=1, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(kinds=st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=12, max_size=12).map(
    lambda drawn: sorted(MUTATIONS) + drawn))
def test_every_mutation_ends_as_an_onchain_error_and_honest_orders_complete(
    tmp_path_factory: pytest.TempPathFactory, kinds: list[str]
) -> None:
    """Each hostile request gets an error completion on-chain; honest requests in between verify."""
    tmp_path = tmp_path_factory.mktemp("hostile")

    async def go() -> tuple[list[int], list[bool], int]:
        with open_anvil(block_time=0.2) as node:
            async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env, env.running():
                return await _session(env, kinds)

    statuses, honest_ok, count = asyncio.run(go())

    assert count == len(kinds) + 1
    assert all(status != 0 for status in statuses), list(zip(kinds + ["copied"], statuses, strict=True))
    assert all(honest_ok)


async def test_unknown_or_inactive_worker_reverts_in_the_contract(tmp_path: Path) -> None:
    """A submit naming a worker the registry does not hold reverts and never reaches the bridge."""
    with open_anvil() as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env:
            requester = env.requester(0)
            data = encode_submit(b"\x01" * 32, b"\xee" * 32,
                                 bytes.fromhex(requester_id_of(requester.address)), b"{}")
            tx = await requester.send(requester.registry, data, 300_000)
            with pytest.raises(TransactionFailed):
                await requester.receipt(tx.hash)
