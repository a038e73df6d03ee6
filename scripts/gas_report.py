"""Gas used by work orders on a fresh anvil (``scripts/gas-report``).

Deploys the registries on a new anvil from node_modules, registers one
worker, and measures ``workOrderSubmit`` and ``workOrderComplete`` for
EEA-JSON-shaped requests and responses of 256 B, 1 KiB and 4 KiB, then the
gas per work order when 1, 10 and 50 completions share one
``workOrderCompleteBatch``. The last line compares the 1 KiB submit +
complete pair with Avalon's contracts: ``gas_ratio=<ours/1668937>``.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

from connector.abi import load_artifact
from connector.deploy import deploy_all, send_transaction
from connector.devnet import DEV_PRIVATE_KEYS, NODE_BIN, open_anvil, rpc_call
from enclave_bridge.result_signature import EthereumDomain, order_key, sign_eip712

# Avalon's WorkOrderRegistry, submit + complete of one 1 KiB work order,
# measured on anvil 1.7.1.
AVALON_GAS_PER_1KIB_ORDER = 1_668_937
TARGET_RATIO = 0.15
SIZES = (256, 1024, 4096)
BATCH_SIZES = (1, 10, 50)
FAR_DEADLINE = 2**40

WORKER_KEY = keccak(b"tcbridge gas report worker key (public, test only)")
WORKER_ID = keccak(b"gas-report worker")


def eea_request(size: int, serial: int) -> bytes:
    """An EEA WorkOrderSubmit JSON-RPC request of exactly ``size`` bytes."""
    ids = _ids(serial)
    fields: list[tuple[str, Any]] = [
        ("workOrderId", ids[0]),
        ("workerId", WORKER_ID.hex()),
        ("workloadId", b"echo-result".hex()),
        ("requesterId", ids[1]),
        ("requesterNonce", ids[2]),
        ("dataEncryptionAlgorithm", "AES-GCM-256"),
        ("sessionKeyIv", ids[3][:24]),
        ("encryptedRequestHash", ids[4] + ids[5]),
        ("requesterSignature", base64.b64encode(bytes.fromhex(ids[6] * 2)).decode()),
    ]
    return _fill(
        size,
        lambda params, data: {
            "jsonrpc": "2.0",
            "method": "WorkOrderSubmit",
            "id": serial,
            "params": {**params, "inData": [{"index": 0, "data": data}]},
        },
        fields,
    )


def eea_response(size: int, serial: int) -> bytes:
    """An EEA work-order result JSON-RPC response of exactly ``size`` bytes."""
    ids = _ids(serial + 10**6)
    fields: list[tuple[str, Any]] = [
        ("workOrderId", ids[0]),
        ("workerId", WORKER_ID.hex()),
        ("workloadId", b"echo-result".hex()),
        ("requesterId", ids[1]),
        ("workerNonce", ids[2]),
        (
            "workerSignature",
            base64.b64encode(bytes.fromhex(ids[3] * 2 + "00")).decode(),
        ),
    ]
    return _fill(
        size,
        lambda result, data: {
            "jsonrpc": "2.0",
            "id": serial,
            "result": {
                **result,
                "outData": [{"index": 0, "data": data, "iv": ids[4][:24]}],
            },
        },
        fields,
    )


def _ids(serial: int) -> list[str]:
    return [keccak(f"{serial}/{i}".encode()).hex() for i in range(7)]


def _fill(
    size: int,
    shape: Callable[[dict[str, Any], str], dict[str, Any]],
    fields: list[tuple[str, Any]],
) -> bytes:
    """Keeps as many fields as fit with some data, then pads the data to ``size``."""
    kept: dict[str, Any] = {}
    for name, value in fields:
        trial = {**kept, name: value}
        if len(_dump(shape(trial, ""))) + 16 <= size:
            kept = trial
    room = size - len(_dump(shape(kept, "")))
    data_len = room - room % 4
    data = base64.b64encode(b"\x5a" * (data_len // 4 * 3)).decode()
    body = _dump(shape(kept, data))
    # Whitespace after the value is still valid JSON and makes the size exact.
    return body + b" " * (size - len(body))


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class GasBench:
    """One deployment with one worker, and helpers that return gas used."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.operator: LocalAccount = Account.from_key(DEV_PRIVATE_KEYS[0])
        self.requester: LocalAccount = Account.from_key(DEV_PRIVATE_KEYS[1])
        self.relayer: LocalAccount = Account.from_key(DEV_PRIVATE_KEYS[2])
        deployment = deploy_all(w3, self.operator)
        self.workers = self._contract("WorkerRegistry", deployment.contracts)
        self.orders = self._contract("WorkOrderRegistry", deployment.contracts)
        self.domain = EthereumDomain(w3.eth.chain_id, self.orders.address)
        signer = Account.from_key(WORKER_KEY).address
        send_transaction(
            w3,
            self.operator,
            self.workers.functions.workerRegister(
                WORKER_ID, 1, b"\x01" * 32, [], "{}", signer
            ),
            "register the worker",
        )
        self.serial = 0

    def _contract(self, name: str, contracts: dict[str, str]) -> Any:
        address = Web3.to_checksum_address(contracts[name])
        return self.w3.eth.contract(address=address, abi=load_artifact(name).abi)

    def submit(self, request: bytes) -> tuple[bytes, int]:
        """Submits one order; returns its key and the gas used."""
        self.serial += 1
        work_order_id = keccak(f"order {self.serial}".encode())
        call = self.orders.functions.workOrderSubmit(
            work_order_id, WORKER_ID, keccak(b"requester"), request, FAR_DEADLINE, 0
        )
        receipt = send_transaction(self.w3, self.requester, call, "workOrderSubmit")
        return order_key(self.requester.address, work_order_id), int(receipt["gasUsed"])

    def completion(
        self, key: bytes, request: bytes, response: bytes
    ) -> tuple[Any, ...]:
        signature = sign_eip712(
            WORKER_KEY, self.domain, key, keccak(request), keccak(response), 0
        )
        return (key, 0, response, signature)

    def complete(self, key: bytes, request: bytes, response: bytes) -> int:
        call = self.orders.functions.workOrderComplete(
            *self.completion(key, request, response)
        )
        return int(
            send_transaction(self.w3, self.relayer, call, "workOrderComplete")[
                "gasUsed"
            ]
        )

    def complete_batch(self, items: list[tuple[Any, ...]]) -> int:
        call = self.orders.functions.workOrderCompleteBatch(items)
        receipt = send_transaction(
            self.w3, self.relayer, call, "workOrderCompleteBatch"
        )
        return int(receipt["gasUsed"])


def anvil_version() -> str:
    out = subprocess.run(
        [str(NODE_BIN / "anvil"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[0]


def run() -> list[str]:
    """Measures everything; returns the report's lines (the ratio line last)."""
    pair_1k = 0
    with open_anvil() as node:
        info = rpc_call(node.url, "anvil_nodeInfo", [])
        hardfork = info.get("hardFork", "?") if isinstance(info, dict) else "?"
        lines = [
            f"node: {anvil_version()}, hardfork {hardfork} (fresh, 127.0.0.1, automine)"
        ]
        bench = GasBench(Web3(Web3.HTTPProvider(node.url)))
        lines.append(f"{'size':>8} {'submit':>10} {'complete':>10} {'sum':>10}")
        for size in SIZES:
            request = eea_request(size, bench.serial)
            response = eea_response(size, bench.serial)
            key, submit_gas = bench.submit(request)
            complete_gas = bench.complete(key, request, response)
            total = submit_gas + complete_gas
            lines.append(f"{size:>7}B {submit_gas:>10} {complete_gas:>10} {total:>10}")
            if size == 1024:
                pair_1k = total

        lines.append("batched completions of 1 KiB responses (gas per work order):")
        for count in BATCH_SIZES:
            items = []
            for _ in range(count):
                request = eea_request(1024, bench.serial)
                key, _gas = bench.submit(request)
                items.append(
                    bench.completion(key, request, eea_response(1024, bench.serial))
                )
            per_order = bench.complete_batch(items) / count
            lines.append(
                f"  batch of {count:>2}: {per_order:>10.0f} gas per completion"
            )

    ratio = pair_1k / AVALON_GAS_PER_1KIB_ORDER
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    lines.append(
        f"1 KiB submit+complete: {pair_1k} gas vs Avalon {AVALON_GAS_PER_1KIB_ORDER}; "
        f"target gas_ratio <= {TARGET_RATIO}: {verdict}"
    )
    lines.append(f"gas_ratio={ratio:.4f}")
    return lines


def main() -> int:
    for line in run():
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
