"""The same artifacts on real nodes: anvil (deploy CLI, full flow, fork) and Ganache 7."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract

from connector.deploy import Deployment, deploy_all, deploy_contract, send_transaction
from connector.devnet import (
    DEV_PRIVATE_KEYS,
    PROJECT_ROOT,
    DevNode,
    open_anvil,
    open_ganache,
    rpc_call,
)
from enclave_bridge.result_signature import EthereumDomain, order_key, sign_eip712
from scripts.gas_report import (
    AVALON_GAS_PER_1KIB_ORDER,
    TARGET_RATIO,
    eea_request,
    eea_response,
)
from tests.contracts.support import (
    FAR_DEADLINE,
    REQUEST,
    RESPONSE,
    WORKER_ID,
    WORKER_KEY,
    address_of,
    contract_at,
    logs,
    reverts,
)

OPERATOR, REQUESTER, RELAYER = (Account.from_key(k) for k in DEV_PRIVATE_KEYS[:3])


class Chain:
    """A deployment on a real node, driven with locally signed transactions."""

    def __init__(self, w3: Web3, deployment: Deployment) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.workers = contract_at(w3, "WorkerRegistry", deployment.contracts)
        self.orders = contract_at(w3, "WorkOrderRegistry", deployment.contracts)

    def send(self, account: LocalAccount, call: Any) -> Any:
        return send_transaction(self.w3, account, call, "test transaction")

    def register_worker(self) -> None:
        call = self.workers.functions.workerRegister(
            WORKER_ID, 1, b"\x01" * 32, [], "{}", address_of(WORKER_KEY)
        )
        self.send(OPERATOR, call)

    def submit(self, label: bytes, callback_gas: int = 0) -> bytes:
        call = self.orders.functions.workOrderSubmit(
            keccak(label), WORKER_ID, b"\x00" * 32, REQUEST, FAR_DEADLINE, callback_gas
        )
        self.send(REQUESTER, call)
        return order_key(REQUESTER.address, keccak(label))

    def signature(self, key: bytes, chain_id: int | None = None) -> bytes:
        domain = EthereumDomain(chain_id or self.w3.eth.chain_id, self.orders.address)
        return sign_eip712(
            WORKER_KEY, domain, key, keccak(REQUEST), keccak(RESPONSE), 0
        )

    def completion(self, key: bytes, signature: bytes) -> Any:
        return self.orders.functions.workOrderComplete(key, 0, RESPONSE, signature)


@pytest.fixture(scope="module")
def anvil_node() -> Iterator[DevNode]:
    with open_anvil() as node:
        yield node


@pytest.fixture(scope="module")
def anvil_chain(anvil_node: DevNode, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Deployed through the command line, as an operator would."""
    folder = tmp_path_factory.mktemp("deploy")
    key_file, out = folder / "operator.key", folder / "deployment.json"
    key_file.write_text(DEV_PRIVATE_KEYS[0])
    subprocess.run(
        [sys.executable, "-m", "connector.deploy", "--rpc", anvil_node.url,
         "--key-file", str(key_file), "--out", str(out)],
        check=True, cwd=PROJECT_ROOT, capture_output=True, timeout=120,
    )  # fmt: skip
    chain = Chain(Web3(Web3.HTTPProvider(anvil_node.url)), Deployment.read(out))
    chain.register_worker()
    return chain


@pytest.mark.anvil
def test_deploy_cli_writes_a_complete_deployment_file(anvil_chain: Chain) -> None:
    """The CLI deploys the three registries and records chain id, addresses and first block."""
    deployment = anvil_chain.deployment

    assert deployment.chain_id == 31337
    assert set(deployment.contracts) == {
        "WorkerRegistryList",
        "WorkerRegistry",
        "WorkOrderRegistry",
    }
    assert deployment.block == 1
    assert (
        anvil_chain.orders.functions.workerRegistry().call()
        == anvil_chain.workers.address
    )


@pytest.mark.anvil
def test_submit_and_signed_completion_on_anvil(anvil_chain: Chain) -> None:
    """A relayed, worker-signed completion is accepted on anvil; a relayer-signed one is not."""
    key = anvil_chain.submit(b"anvil order 1")
    forged = sign_eip712(
        bytes.fromhex(DEV_PRIVATE_KEYS[2][2:]),
        EthereumDomain(31337, anvil_chain.orders.address),
        key, keccak(REQUEST), keccak(RESPONSE), 0,
    )  # fmt: skip

    with reverts("BadSignature(bytes32)"):
        anvil_chain.completion(key, forged).call({"from": RELAYER.address})
    receipt = anvil_chain.send(
        RELAYER, anvil_chain.completion(key, anvil_chain.signature(key))
    )

    (event,) = logs(receipt, anvil_chain.orders, "WorkOrderCompleted")
    assert event["args"]["response"] == RESPONSE
    assert anvil_chain.orders.functions.workOrderGet(key).call()[0] == 2


@pytest.mark.anvil
def test_gas_of_a_1kib_work_order_stays_under_target(anvil_chain: Chain) -> None:
    """Submit + complete of a 1 KiB EEA order costs at most 15 % of Avalon's 1,668,937 gas."""
    request, response = eea_request(1024, 1), eea_response(1024, 1)
    label = b"gas order"
    submit = anvil_chain.orders.functions.workOrderSubmit(
        keccak(label), WORKER_ID, b"\x00" * 32, request, FAR_DEADLINE, 0
    )
    submitted = anvil_chain.send(REQUESTER, submit)
    key = order_key(REQUESTER.address, keccak(label))
    domain = EthereumDomain(31337, anvil_chain.orders.address)
    signature = sign_eip712(
        WORKER_KEY, domain, key, keccak(request), keccak(response), 0
    )
    complete = anvil_chain.orders.functions.workOrderComplete(
        key, 0, response, signature
    )
    completed = anvil_chain.send(RELAYER, complete)

    total = submitted["gasUsed"] + completed["gasUsed"]
    assert total <= TARGET_RATIO * AVALON_GAS_PER_1KIB_ORDER


@pytest.mark.anvil
def test_estimated_gas_delivers_the_whole_callback_on_anvil(anvil_chain: Chain) -> None:
    """anvil's eth_estimateGas for a completion yields a limit at which the callback gets all its gas."""
    w3 = anvil_chain.w3
    address, _ = deploy_contract(
        w3, REQUESTER, "CallbackProbe", anvil_chain.orders.address
    )
    probe = contract_at(w3, "CallbackProbe", address)
    work_order_id = keccak(b"anvil callback order")
    submit = probe.functions.submit(
        work_order_id, WORKER_ID, REQUEST, FAR_DEADLINE, 300_000
    )
    anvil_chain.send(REQUESTER, submit)
    key = order_key(probe.address, work_order_id)

    anvil_chain.send(RELAYER, anvil_chain.completion(key, anvil_chain.signature(key)))

    assert probe.functions.calls().call() == 1
    assert probe.functions.gasAtEntry().call() >= 300_000 - 1_000


@pytest.mark.anvil
def test_domain_separator_follows_a_chain_id_change() -> None:
    """After the chain id changes (a fork), only signatures for the new chain id are accepted."""
    with open_anvil(chain_id=31337) as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        chain = Chain(w3, deploy_all(w3, OPERATOR))
        chain.register_worker()
        key = chain.submit(b"fork order")
        old_signature = chain.signature(key, chain_id=31337)

        rpc_call(node.url, "anvil_setChainId", [4242])

        assert (
            chain.orders.functions.domainSeparator().call()
            == EthereumDomain(4242, chain.orders.address).separator()
        )
        with reverts("BadSignature(bytes32)"):
            chain.completion(key, old_signature).call({"from": RELAYER.address})
        chain.send(RELAYER, chain.completion(key, chain.signature(key, chain_id=4242)))
        assert chain.orders.functions.workOrderGet(key).call()[0] == 2


@pytest.mark.ganache
def test_one_artifact_runs_on_ganache_7() -> None:
    """The Shanghai artifacts deploy and run on Ganache 7, callback included."""
    with open_ganache() as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployment = deploy_all(w3, OPERATOR, with_consumer=True, with_receipts=True)
        chain = Chain(w3, deployment)
        chain.register_worker()
        consumer: Contract = contract_at(w3, "ExampleConsumer", deployment.contracts)
        work_order_id = keccak(b"ganache order")
        request = consumer.functions.requestComputation(
            work_order_id, WORKER_ID, REQUEST, FAR_DEADLINE, 300_000
        )
        chain.send(OPERATOR, request)
        key = order_key(consumer.address, work_order_id)

        receipt = chain.send(RELAYER, chain.completion(key, chain.signature(key)))

        assert logs(receipt, consumer, "ResultReceived")[0]["args"]["orderKey"] == key

        assert w3.eth.chain_id == 1337
        assert "WorkOrderReceiptRegistry" in deployment.contracts
        assert consumer.functions.resultOf(key).call() == [True, 0, RESPONSE]


@pytest.mark.anvil
def test_anvil_interval_mining_and_gas_limit_options() -> None:
    """block_time and gas_limit reach anvil, and the process is gone after the block."""
    with open_anvil(chain_id=5151, block_time=0.2, gas_limit=300_000_000) as node:
        latest = rpc_call(node.url, "eth_getBlockByNumber", ["latest", False])
        assert isinstance(latest, dict)
        first = int(latest["number"], 16)
        assert int(latest["gasLimit"], 16) == 300_000_000
        assert rpc_call(node.url, "eth_chainId", []) == hex(5151)
        time.sleep(0.7)
        assert int(str(rpc_call(node.url, "eth_blockNumber", [])), 16) > first
        pid = node.pid

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
