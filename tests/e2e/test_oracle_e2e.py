"""Oracle-contract mode on anvil: a consumer asks, the bridge fulfils, it stores."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from connector import runtime
from connector.abi import load_artifact
from connector.deploy import deploy_contract, send_transaction
from connector.devnet import open_anvil
from connector.states import State
from connector.store import OrderRef
from enclave_bridge.result_signature import EthereumDomain, sign_eip712
from tests.support.bridge_env import OPERATOR_KEY, BridgeEnv, open_bridge_env

CALLBACK_GAS = 300_000


def _workload(name: str) -> bytes:
    return name.encode().ljust(32, b"\0")


def _params(*inputs: str) -> bytes:
    return json.dumps({"inputs": list(inputs)}).encode()


class OracleSetup:
    """TrustedOracle and OracleConsumer deployed beside the env's registries."""

    def __init__(self, env: BridgeEnv) -> None:
        self.env = env
        self.w3 = Web3(Web3.HTTPProvider(env.config.ethereum.rpc_url))
        self.owner = Account.from_key(OPERATOR_KEY)
        workers = env.deployment.contracts["WorkerRegistry"]
        oracle, _ = deploy_contract(
            self.w3, self.owner, "TrustedOracle", workers, CALLBACK_GAS
        )
        consumer, _ = deploy_contract(self.w3, self.owner, "OracleConsumer", oracle)
        env.deployment.contracts["TrustedOracle"] = oracle
        env.deployment.write(runtime.data_dir(env.config) / "deployment.json")
        self.oracle = self._at("TrustedOracle", oracle)
        self.consumer = self._at("OracleConsumer", consumer)

    def _at(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=address, abi=load_artifact(name).abi)

    def ask_now(self, workload: str, params: bytes, expiry: int) -> bytes:
        """Blocking: the consumer asks; returns the request id."""
        worker = bytes.fromhex(self.env.worker_ids[0])
        call = self.consumer.functions.ask(worker, _workload(workload), params, expiry)
        receipt = send_transaction(self.w3, self.owner, call, "ask")
        (event,) = self.oracle.events.OracleRequested().process_receipt(
            receipt, errors=DISCARD
        )
        return bytes(event["args"]["requestId"])

    async def ask(self, workload: str, params: bytes, expiry_in: int = 3600) -> bytes:
        expiry = int(time.time()) + expiry_in
        return await asyncio.to_thread(self.ask_now, workload, params, expiry)

    async def answer(self, request_id: bytes, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            received, status, result = await asyncio.to_thread(
                self.consumer.functions.answerOf(request_id).call
            )
            if received:
                return status, bytes(result)
            await asyncio.sleep(0.2)
        raise AssertionError(f"request {request_id.hex()} was never answered")

    async def state(self, request_id: bytes) -> State | None:
        assert self.env.bridge is not None
        ref = OrderRef.of(
            self.env.config.ethereum.chain_id, self.oracle.address, request_id
        )
        order = await self.env.bridge.store.get_order(ref)
        return None if order is None else order.state


@pytest.mark.anvil
async def test_consumer_gets_verified_results_and_can_cancel(tmp_path: Path) -> None:
    """Requests get worker-signed plain results; expired ones cancel; forgeries revert."""
    with open_anvil(block_time=0.2) as node:
        async with open_bridge_env(tmp_path, node.url, with_consumer=False) as env:
            setup = await asyncio.to_thread(OracleSetup, env)
            async with env.running():
                extract = await setup.ask(
                    "json-extract", _params('{"a":{"b":[1,2,3]}}', "/a/b/2")
                )
                median = await setup.ask(
                    "price-median",
                    _params('[{"source":"x","price":"1"},{"source":"y","price":"3"}]'),
                )
                bad = await setup.ask("json-extract", b"not json")
                answers = [await setup.answer(r) for r in (extract, median, bad)]

                # Paused: the bridge leaves the next request alone until it expires.
                flag = runtime.paused_flag(env.config)
                flag.touch()
                late = await setup.ask("json-extract", _params("{}", "/"), 2)
                forged = sign_eip712(
                    keccak(b"not the worker"),
                    EthereumDomain(env.config.ethereum.chain_id, setup.oracle.address),
                    late,
                    keccak(_workload("json-extract") + _params("{}", "/")),
                    keccak(b"{}"),
                    0,
                )
                with pytest.raises(ContractCustomError) as refused:
                    await asyncio.to_thread(
                        setup.oracle.functions.fulfill(late, 0, b"{}", forged).call
                    )
                await asyncio.sleep(3.5)
                await asyncio.to_thread(
                    send_transaction,
                    setup.w3,
                    setup.owner,
                    setup.consumer.functions.cancel(late),
                    "cancel",
                )
                await _until(lambda: setup.state(late), State.CANCELLED)
                flag.unlink()
                await env.wait_for_counts(
                    COMPLETED=2, FAILED=1, RESULT_READY=0, SUBMITTED=0
                )
                late_answer = await asyncio.to_thread(
                    setup.consumer.functions.answerOf(late).call
                )

    assert answers[0] == (0, b"3")
    assert answers[1][0] == 0 and '"median":"2"' in answers[1][1].decode()
    assert answers[2][0] != 0 and answers[2][1]
    assert refused.value.data[:10] == "0x" + keccak(b"BadSignature(bytes32)")[:4].hex()
    assert late_answer[0] is False


async def _until(read: Any, wanted: State, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (got := await read()) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"state {got}, never {wanted}")
        await asyncio.sleep(0.1)
