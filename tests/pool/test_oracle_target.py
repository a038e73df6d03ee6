"""Oracle targets: the worker signs its plain result for a TrustedOracle request."""

from __future__ import annotations

from eth_utils.crypto import keccak

from enclave_bridge.pool import EnclavePool
from enclave_bridge.processor import OracleTarget
from enclave_bridge.requester import WorkerDetails, verify_response
from enclave_bridge.result_signature import EthereumDomain, recover_eip712_signer
from tests.pool.conftest import OrderMaker

DOMAIN = EthereumDomain(31337, "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512")
REQUEST_ID = keccak(b"oracle request")
STORED_HASH = keccak(b"workload and params")


def _signer(pool: EnclavePool) -> str:
    return next(iter(pool.worker_records().values())).signing_address


async def test_result_is_signed_over_the_plain_first_output(
    pool: EnclavePool, make_order: OrderMaker, vector_details: WorkerDetails
) -> None:
    """For an oracle target the signature covers keccak of the decrypted first output."""
    target = OracleTarget(DOMAIN, REQUEST_ID, STORED_HASH)
    job, sent = make_order("echo-result", "oracle", target=target)

    result = await pool.submit(job)

    verdict = verify_response(sent, result.response, vector_details)
    assert verdict.accepted, verdict.reason
    plain = verdict.outputs[0].data
    assert result.status == 0 and result.result_signature is not None
    signer = recover_eip712_signer(
        result.result_signature, DOMAIN, REQUEST_ID, STORED_HASH, keccak(plain), 0
    )
    assert signer == _signer(pool)


async def test_error_result_is_signed_over_the_message(
    pool: EnclavePool, make_order: OrderMaker
) -> None:
    """A refused oracle order is signed over its UTF-8 error message and status."""
    target = OracleTarget(DOMAIN, REQUEST_ID, STORED_HASH)
    job, _ = make_order("no-such-workload", "x", target=target)

    result = await pool.submit(job)

    message = result.response["error"]["message"].encode()
    assert result.status != 0 and result.result_signature is not None
    signer = recover_eip712_signer(
        result.result_signature,
        DOMAIN,
        REQUEST_ID,
        STORED_HASH,
        keccak(message),
        result.status,
    )
    assert signer == _signer(pool)
