"""TrustedOracle: requests, worker-signed fulfilment, callback, expiry and cancel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak
from web3.contract import Contract

from enclave_bridge.result_signature import EthereumDomain, sign_eip712
from tests.contracts.support import (
    WORKER_ID,
    WORKER_KEY,
    Env,
    key_of,
    logs,
    reverts,
)

CALLBACK_GAS = 300_000
WORKLOAD = b"json-extract".ljust(32, b"\0")
PARAMS = b'{"inputs":["{\\"a\\":7}","/a"]}'
RESULT = b"7"


@dataclass
class Oracle:
    env: Env
    oracle: Contract
    consumer: Contract

    @property
    def domain(self) -> EthereumDomain:
        return EthereumDomain(self.env.w3.eth.chain_id, self.oracle.address)

    def ask(self, expiry: int | None = None, params: bytes = PARAMS) -> bytes:
        expiry = expiry if expiry is not None else self.env.now() + 3600
        call = self.consumer.functions.ask(WORKER_ID, WORKLOAD, params, expiry)
        receipt = self.env.transact(call, self.env.operator)
        (event,) = logs(receipt, self.oracle, "OracleRequested")
        return bytes(event["args"]["requestId"])

    def sign(
        self,
        request_id: bytes,
        result: bytes = RESULT,
        status: int = 0,
        *,
        key: bytes = WORKER_KEY,
        domain: EthereumDomain | None = None,
        params: bytes = PARAMS,
    ) -> bytes:
        return sign_eip712(
            key,
            domain or self.domain,
            request_id,
            keccak(WORKLOAD + params),
            keccak(result),
            status,
        )

    def fulfill(
        self,
        request_id: bytes,
        result: bytes = RESULT,
        status: int = 0,
        signature: bytes | None = None,
    ) -> Any:
        signature = signature or self.sign(request_id, result, status)
        call = self.oracle.functions.fulfill(request_id, status, result, signature)
        return self.env.transact(call, self.env.relayer)

    def state(self, request_id: bytes) -> int:
        return int(self.oracle.functions.workOrderGet(request_id).call()[0])


@pytest.fixture
def oracle(env: Env) -> Oracle:
    deployed = env.deploy("TrustedOracle", env.workers.address, CALLBACK_GAS)
    consumer = env.deploy("OracleConsumer", deployed.address)
    return Oracle(env, deployed, consumer)


def test_request_emits_the_plain_parameters(oracle: Oracle) -> None:
    """A request records the worker's signer and emits id, worker, consumer and the params."""
    expiry = oracle.env.now() + 600
    call = oracle.consumer.functions.ask(WORKER_ID, WORKLOAD, PARAMS, expiry)
    receipt = oracle.env.transact(call, oracle.env.operator)

    (event,) = logs(receipt, oracle.oracle, "OracleRequested")
    args = event["args"]
    request_id = bytes(args["requestId"])
    assert request_id == keccak(
        abi_encode(["address", "uint256"], [oracle.consumer.address, 0])
    )
    assert args["params"] == PARAMS and args["workload"] == WORKLOAD
    assert args["requester"] == oracle.consumer.address
    assert (args["expiry"], args["callbackGas"]) == (expiry, CALLBACK_GAS)
    view = oracle.oracle.functions.workOrderGet(request_id).call()
    assert view[0] == 1 and bytes(view[4]) == keccak(WORKLOAD + PARAMS)


def test_fulfill_with_the_worker_signature_calls_the_consumer(oracle: Oracle) -> None:
    """A result signed by the worker is accepted once and reaches the consumer's callback."""
    request_id = oracle.ask()

    receipt = oracle.fulfill(request_id)

    (event,) = logs(receipt, oracle.oracle, "OracleFulfilled")
    assert event["args"]["result"] == RESULT
    assert logs(receipt, oracle.oracle, "CallbackFailed") == []
    assert oracle.consumer.functions.answerOf(request_id).call() == [True, 0, RESULT]
    assert oracle.state(request_id) == 2
    with reverts("AlreadyFulfilled(bytes32)"):
        oracle.fulfill(request_id)


def test_error_status_is_delivered(oracle: Oracle) -> None:
    """An error result (non-zero EEA status) signed by the worker is delivered as such."""
    request_id = oracle.ask()

    oracle.fulfill(request_id, b"workload refused", status=5)

    assert oracle.consumer.functions.answerOf(request_id).call() == [
        True,
        5,
        b"workload refused",
    ]


@pytest.mark.parametrize(
    "forge",
    ["stranger-key", "other-result", "registry-domain", "other-params", "other-status"],
)
def test_fulfill_refuses_signatures_that_do_not_bind_this_request(
    oracle: Oracle, forge: str
) -> None:
    """Signatures by another key, over other bytes, params or status, or for another contract are refused."""
    request_id = oracle.ask()
    signature = {
        "stranger-key": lambda: oracle.sign(request_id, key=key_of("stranger")),
        "other-result": lambda: oracle.sign(request_id, b"8"),
        "registry-domain": lambda: oracle.sign(request_id, domain=oracle.env.domain),
        "other-params": lambda: oracle.sign(request_id, params=b"{}"),
        "other-status": lambda: oracle.sign(request_id, status=1),
    }[forge]()

    with reverts("BadSignature(bytes32)"):
        oracle.fulfill(request_id, RESULT, 0, signature)
    assert oracle.state(request_id) == 1


def test_high_s_twin_is_refused(oracle: Oracle) -> None:
    """The malleable high-s twin of a valid signature is refused."""
    request_id = oracle.ask()
    good = oracle.sign(request_id)
    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = order - int.from_bytes(good[32:64], "big")
    twin = good[:32] + s.to_bytes(32, "big") + bytes([55 - good[64]])

    with reverts("BadSignature(bytes32)"):
        oracle.fulfill(request_id, RESULT, 0, twin)


def test_cancel_only_by_the_requester_after_expiry(oracle: Oracle) -> None:
    """Cancel is refused before expiry and to others; after it, fulfil is refused."""
    expiry = oracle.env.now() + 100
    request_id = oracle.ask(expiry)
    with reverts("NotExpired(bytes32,uint64)"):
        oracle.env.transact(
            oracle.consumer.functions.cancel(request_id), oracle.env.operator
        )

    oracle.env.travel_to(expiry + 1)
    with reverts("NotRequester(bytes32,address)"):
        oracle.env.transact(
            oracle.oracle.functions.cancel(request_id), oracle.env.stranger
        )
    receipt = oracle.env.transact(
        oracle.consumer.functions.cancel(request_id), oracle.env.operator
    )

    assert len(logs(receipt, oracle.oracle, "OracleCancelled")) == 1
    with reverts("RequestCancelled(bytes32)"):
        oracle.fulfill(request_id)


def test_request_refuses_a_past_expiry_and_unknown_worker(oracle: Oracle) -> None:
    """Requests with an expiry not in the future, or for an unregistered worker, revert."""
    now = oracle.env.now()
    with reverts("ExpiryNotInFuture(uint64)"):
        oracle.env.transact(
            oracle.oracle.functions.request(
                WORKER_ID, WORKLOAD, PARAMS, now, oracle.consumer.address, b"\0" * 4
            ),
            oracle.env.requester,
        )
    with reverts("UnknownWorker(bytes32)"):
        oracle.env.transact(
            oracle.oracle.functions.request(
                keccak(b"nobody"),
                WORKLOAD,
                PARAMS,
                now + 99,
                oracle.env.stranger,
                b"\0" * 4,
            ),
            oracle.env.requester,
        )


def test_fulfill_with_too_little_gas_for_the_callback_reverts(oracle: Oracle) -> None:
    """A relayer cannot starve the consumer's callback: too little gas reverts the fulfilment."""
    request_id = oracle.ask()

    call = oracle.oracle.functions.fulfill(
        request_id, 0, RESULT, oracle.sign(request_id)
    )

    with reverts("InsufficientCallbackGas(bytes32,uint32)"):
        call.call({"from": oracle.env.relayer, "gas": 150_000})
    receipt = oracle.env.transact(call, oracle.env.relayer, gas=400_000)
    assert receipt["status"] == 1 and oracle.state(request_id) == 2


def test_reverting_callback_does_not_undo_the_fulfilment(oracle: Oracle) -> None:
    """A callback target that reverts gets CallbackFailed; the result stays recorded."""
    expiry = oracle.env.now() + 600
    call = oracle.oracle.functions.request(
        WORKER_ID,
        WORKLOAD,
        PARAMS,
        expiry,
        oracle.consumer.address,
        b"\xde\xad\xbe\xef",
    )
    receipt = oracle.env.transact(call, oracle.env.requester)
    (event,) = logs(receipt, oracle.oracle, "OracleRequested")
    request_id = bytes(event["args"]["requestId"])

    receipt = oracle.fulfill(request_id)

    assert len(logs(receipt, oracle.oracle, "CallbackFailed")) == 1
    assert oracle.state(request_id) == 2


def test_deploy_all_with_oracle_wires_oracle_and_consumer() -> None:
    """deploy_all(with_oracle=True) deploys TrustedOracle on the WorkerRegistry and its consumer."""
    from web3 import EthereumTesterProvider, Web3

    from connector.deploy import DEFAULT_ORACLE_CALLBACK_GAS, deploy_all
    from tests.contracts.support import contract_at

    w3 = Web3(EthereumTesterProvider())
    deployment = deploy_all(
        w3, w3.eth.accounts[0], with_consumer=True, with_oracle=True
    )

    oracle = contract_at(w3, "TrustedOracle", deployment.contracts)
    consumer = contract_at(w3, "OracleConsumer", deployment.contracts)
    assert (
        oracle.functions.workerRegistry().call()
        == deployment.contracts["WorkerRegistry"]
    )
    assert oracle.functions.callbackGas().call() == DEFAULT_ORACLE_CALLBACK_GAS
    assert consumer.functions.oracle().call() == oracle.address
