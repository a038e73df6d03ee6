"""Shared helpers for the contract tests: one deployment, accounts, signing."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.logs import DISCARD

from connector.abi import load_artifact
from connector.deploy import deploy_all, deploy_contract
from enclave_bridge import golden
from enclave_bridge.result_signature import EthereumDomain, order_key, sign_eip712

GOLDEN = json.loads(golden.GOLDEN_PATH.read_text())
FAR_DEADLINE = 2**40
MAX_CALLBACK_GAS = 2_000_000
WORKER_ID = keccak(b"test worker")
WORKER_KEY = keccak(b"tcbridge test worker key (public, test only)")
ORG_ID = keccak(b"test organization")
APP_ID = keccak(b"test application")
REQUEST = b'{"jsonrpc":"2.0","method":"WorkOrderSubmit","id":7,"params":{"inData":[]}}'
RESPONSE = b'{"jsonrpc":"2.0","id":7,"result":{"outData":[]}}'


def key_of(label: str) -> bytes:
    """A deterministic test-only private key."""
    return keccak(f"tcbridge test key {label} (public, test only)".encode())


def address_of(private_key: bytes) -> str:
    return str(Account.from_key(private_key).address)


def selector(error_signature: str) -> bytes:
    return keccak(error_signature.encode())[:4]


def revert_data(exc: BaseException) -> bytes:
    """The raw revert data carried by a web3 or eth-tester exception."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    text = str(exc.args[0]) if exc.args else ""
    _, _, literal = text.partition("execution reverted: ")
    if literal.startswith(("b'", 'b"')):
        value = ast.literal_eval(literal)
        assert isinstance(value, bytes)
        return value
    return b""


@contextmanager
def reverts(error_signature: str) -> Iterator[None]:
    """Asserts the block reverts with the custom error ``error_signature``."""
    with pytest.raises(
        (TransactionFailed, ContractLogicError, ContractCustomError)
    ) as info:
        yield
    assert revert_data(info.value)[:4] == selector(error_signature), info.value


def logs(receipt: Any, contract: Contract, event: str) -> list[Any]:
    """Decoded ``event`` logs of ``contract`` in a receipt."""
    decoded = getattr(contract.events, event)().process_receipt(receipt, errors=DISCARD)
    return [log for log in decoded if log["address"] == contract.address]


@dataclass
class Env:
    """One eth-tester chain with the registries deployed and one worker registered."""

    w3: Web3
    operator: str
    requester: str
    relayer: str
    stranger: str
    worker_list: Contract
    workers: Contract
    orders: Contract
    harness: Contract
    serial: list[int] = field(default_factory=lambda: [0])

    @classmethod
    def create(cls, w3: Web3) -> Env:
        operator, requester, relayer, stranger = w3.eth.accounts[:4]
        deployment = deploy_all(w3, operator, max_callback_gas=MAX_CALLBACK_GAS)
        harness_address, _ = deploy_contract(w3, operator, "ResultSignatureHarness")
        env = cls(
            w3=w3,
            operator=operator,
            requester=requester,
            relayer=relayer,
            stranger=stranger,
            worker_list=contract_at(w3, "WorkerRegistryList", deployment.contracts),
            workers=contract_at(w3, "WorkerRegistry", deployment.contracts),
            orders=contract_at(w3, "WorkOrderRegistry", deployment.contracts),
            harness=contract_at(w3, "ResultSignatureHarness", harness_address),
        )
        env.register_worker(WORKER_ID, WORKER_KEY)
        return env

    @property
    def domain(self) -> EthereumDomain:
        return EthereumDomain(self.w3.eth.chain_id, self.orders.address)

    def transact(self, call: Any, sender: str, gas: int | None = None) -> Any:
        params: dict[str, Any] = {"from": sender}
        if gas is not None:
            params["gas"] = gas
        tx_hash = call.transact(params)
        return self.w3.eth.wait_for_transaction_receipt(tx_hash)

    def deploy(self, name: str, *args: Any) -> Contract:
        address, _ = deploy_contract(self.w3, self.operator, name, *args)
        return contract_at(self.w3, name, address)

    def register_worker(
        self,
        worker_id: bytes,
        private_key: bytes,
        *,
        owner: str | None = None,
        worker_type: int = 1,
        org: bytes = ORG_ID,
        apps: tuple[bytes, ...] = (APP_ID,),
        details: str = '{"attestation":"simulated"}',
    ) -> Any:
        call = self.workers.functions.workerRegister(
            worker_id, worker_type, org, list(apps), details, address_of(private_key)
        )
        return self.transact(call, owner or self.operator)

    def next_id(self) -> bytes:
        self.serial[0] += 1
        return keccak(f"work order {self.serial[0]}".encode())

    def submit(
        self,
        request: bytes = REQUEST,
        *,
        sender: str | None = None,
        work_order_id: bytes | None = None,
        worker_id: bytes = WORKER_ID,
        deadline: int = FAR_DEADLINE,
        callback_gas: int = 0,
    ) -> bytes:
        """Submits an order and returns its key."""
        sender = sender or self.requester
        work_order_id = work_order_id or self.next_id()
        call = self.orders.functions.workOrderSubmit(
            work_order_id,
            worker_id,
            keccak(b"requester id"),
            request,
            deadline,
            callback_gas,
        )
        self.transact(call, sender)
        return order_key(sender, work_order_id)

    def sign(
        self,
        key: bytes,
        request: bytes = REQUEST,
        response: bytes = RESPONSE,
        status: int = 0,
        *,
        private_key: bytes = WORKER_KEY,
        domain: EthereumDomain | None = None,
    ) -> bytes:
        return sign_eip712(
            private_key,
            domain or self.domain,
            key,
            keccak(request),
            keccak(response),
            status,
        )

    def complete(
        self,
        key: bytes,
        response: bytes = RESPONSE,
        status: int = 0,
        signature: bytes | None = None,
        *,
        request: bytes = REQUEST,
        sender: str | None = None,
        gas: int | None = None,
    ) -> Any:
        signature = (
            self.sign(key, request, response, status)
            if signature is None
            else signature
        )
        call = self.orders.functions.workOrderComplete(key, status, response, signature)
        return self.transact(call, sender or self.relayer, gas)

    def get(self, key: bytes) -> dict[str, Any]:
        names = (
            "state",
            "workerId",
            "signer",
            "requester",
            "requestHash",
            "responseHash",
            "status",
            "submittedAt",
            "completedAt",
            "deadline",
        )
        return dict(
            zip(names, self.orders.functions.workOrderGet(key).call(), strict=True)
        )

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def travel_to(self, timestamp: int) -> None:
        self.w3.provider.ethereum_tester.time_travel(timestamp)  # type: ignore[attr-defined]


def contract_at(w3: Web3, name: str, where: dict[str, str] | str) -> Contract:
    address = where if isinstance(where, str) else where[name]
    return w3.eth.contract(address=address, abi=load_artifact(name).abi)
