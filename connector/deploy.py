"""Deploys tcbridge's registries and records where they are.

``deploy_all`` deploys WorkerRegistryList, WorkerRegistry and
WorkOrderRegistry (wired to that WorkerRegistry), and optionally the
ExampleConsumer and the TrustedOracle (oracle-contract mode; with the
consumer also its OracleConsumer example), and returns a :class:`Deployment`; its JSON form is the
deployment file the bridge and the demo read::

    {"chainId": 31337, "contracts": {"WorkerRegistry": "0x..", ...}, "block": 1}

``block`` is the first block holding one of the contracts: watchers start
there. Command line::

    python -m connector.deploy --rpc URL --key-file F --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from connector.abi import load_artifact
from enclave_bridge.errors import ConfigurationError, TransactionFailed

# Enough for a consumer callback that stores a few KiB; a requester asking
# for more is refused at submit (CallbackGasTooHigh).
DEFAULT_MAX_CALLBACK_GAS = 2_000_000
# The oracle gives every consumer callback this much: enough to store a result
# of a few hundred bytes, as OracleConsumer does.
DEFAULT_ORACLE_CALLBACK_GAS = 300_000
RECEIPT_TIMEOUT_S = 120.0

Sender = LocalAccount | str
"""A local account (transactions are signed here) or an address the node unlocked."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where the contracts of one deployment live."""

    chain_id: int
    contracts: dict[str, str] = field(default_factory=dict)
    block: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "chainId": self.chain_id,
            "contracts": dict(self.contracts),
            "block": self.block,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Deployment:
        try:
            contracts = {
                str(name): str(Web3.to_checksum_address(address))
                for name, address in raw["contracts"].items()
            }
            return cls(
                chain_id=int(raw["chainId"]),
                contracts=contracts,
                block=int(raw["block"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"not a tcbridge deployment file: {exc!r}"
            ) from exc

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Deployment:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigurationError(
                f"cannot read deployment file {path}: {exc}"
            ) from exc
        return cls.from_json(raw)


def deploy_contract(w3: Web3, sender: Sender, name: str, *args: Any) -> tuple[str, int]:
    """Deploys the artifact ``name``; returns its address and block number."""
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = send_transaction(w3, sender, factory.constructor(*args), f"deploy {name}")
    return str(receipt["contractAddress"]), int(receipt["blockNumber"])


def send_transaction(w3: Web3, sender: Sender, call: Any, what: str) -> Any:
    """Sends a prepared contract call or constructor and waits for a successful receipt."""
    if isinstance(sender, str):
        tx_hash = call.transact({"from": sender})
    else:
        tx = call.build_transaction(
            {
                "from": sender.address,
                "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
                "chainId": w3.eth.chain_id,
            }
        )
        signed = sender.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
    if receipt["status"] != 1:
        raise TransactionFailed(f"{what} reverted in transaction {tx_hash.hex()}")
    return receipt


def deploy_all(
    w3: Web3,
    sender: Sender,
    *,
    max_callback_gas: int = DEFAULT_MAX_CALLBACK_GAS,
    with_consumer: bool = False,
    with_receipts: bool = False,
    with_oracle: bool = False,
    oracle_callback_gas: int = DEFAULT_ORACLE_CALLBACK_GAS,
) -> Deployment:
    """Deploys the three registries (and the example consumer and the receipt
    registry if asked)."""
    contracts: dict[str, str] = {}
    blocks: list[int] = []

    def deploy(name: str, *args: Any) -> str:
        address, block = deploy_contract(w3, sender, name, *args)
        contracts[name] = address
        blocks.append(block)
        return address

    deploy("WorkerRegistryList")
    worker_registry = deploy("WorkerRegistry")
    work_orders = deploy("WorkOrderRegistry", worker_registry, max_callback_gas)
    if with_consumer:
        deploy("ExampleConsumer", work_orders)
    if with_receipts:
        deploy("WorkOrderReceiptRegistry", work_orders, worker_registry)
    if with_oracle:
        oracle = deploy("TrustedOracle", worker_registry, oracle_callback_gas)
        if with_consumer:
            deploy("OracleConsumer", oracle)

    return Deployment(
        chain_id=int(w3.eth.chain_id), contracts=contracts, block=min(blocks)
    )


def load_key(path: Path) -> LocalAccount:
    """The account whose hex private key is the only content of ``path``."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read key file {path}: {exc}") from exc
    try:
        account: LocalAccount = Account.from_key(text)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{path} does not hold a hex secp256k1 private key"
        ) from exc
    return account


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connector.deploy", description="Deploy tcbridge's registries."
    )
    parser.add_argument("--rpc", required=True, help="JSON-RPC URL of the node")
    parser.add_argument(
        "--key-file", required=True, type=Path, help="deployer's hex key"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="deployment file to write"
    )
    parser.add_argument(
        "--max-callback-gas", type=int, default=DEFAULT_MAX_CALLBACK_GAS
    )
    parser.add_argument("--with-consumer", action="store_true", help="also the example")
    parser.add_argument(
        "--with-receipts", action="store_true", help="also WorkOrderReceiptRegistry"
    )
    parser.add_argument(
        "--with-oracle", action="store_true", help="also TrustedOracle (oracle mode)"
    )
    args = parser.parse_args(argv)

    w3 = Web3(Web3.HTTPProvider(args.rpc))
    deployment = deploy_all(
        w3,
        load_key(args.key_file),
        max_callback_gas=args.max_callback_gas,
        with_consumer=args.with_consumer,
        with_receipts=args.with_receipts,
        with_oracle=args.with_oracle,
    )
    deployment.write(args.out)
    json.dump(deployment.to_json(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
