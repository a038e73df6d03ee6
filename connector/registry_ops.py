"""Operator and requester actions behind the CLI: worker registration, status, submit."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from eth_account import Account
from web3 import Web3

from connector import runtime
from connector.abi import load_artifact
from connector.config import Config
from connector.deploy import send_transaction
from connector.ethereum.rpc import JsonRpcClient
from connector.requester_client import EthereumRequester
from connector.store import open_store
from enclave_bridge.errors import ChainError, ConfigurationError
from enclave_bridge.identity import WorkerRecord

# EEA worker type 1 is TEE-SGX; tcbridge's simulated workers say so in their
# details (proofDataType "simulated"), so registering them as type 1 keeps
# EEA tooling that filters on TEE workers working.
WORKER_TYPE_TEE = 1
ORGANIZATION_ID = b"\x00" * 32
WORKER_ACTIVE = 1


def _registry(w3: Web3, config: Config) -> Any:
    deploy = runtime.deployment(config)
    return w3.eth.contract(
        address=Web3.to_checksum_address(deploy.contracts["WorkerRegistry"]),
        abi=load_artifact("WorkerRegistry").abi,
    )


async def registry_status(
    config: Config, records: Sequence[WorkerRecord]
) -> list[dict[str, Any]]:
    w3 = Web3(Web3.HTTPProvider(config.ethereum.rpc_url))
    registry = _registry(w3, config)
    rows = []
    for record in records:
        signer, status = registry.functions.workerSigner(
            bytes.fromhex(record.worker_id)
        ).call()
        rows.append(
            {
                "workerId": record.worker_id,
                "signingAddress": record.signing_address,
                "registered": int(signer, 16) != 0,
                "registeredSigner": signer,
                "status": status,
                "matches": signer.lower() == record.signing_address.lower()
                and status == WORKER_ACTIVE,
            }
        )
    return rows


async def check_chain_id(rpc: JsonRpcClient, config: Config) -> None:
    """Refuse a node of another chain than the configured one, whatever the command."""
    chain_id = int(await rpc.call("eth_chainId"), 16)
    if chain_id != config.ethereum.chain_id:
        raise ConfigurationError(
            f"the node at {config.ethereum.rpc_url} serves chain id {chain_id}, but the"
            f" configuration says {config.ethereum.chain_id}: fix rpc_url or chain_id"
        )


def register_workers(
    config: Config, operator_key: bytes, records: Sequence[WorkerRecord]
) -> list[str]:
    """workerRegister for new identities, workerUpdate (+ status) for changed ones."""
    w3 = Web3(Web3.HTTPProvider(config.ethereum.rpc_url))
    if int(w3.eth.chain_id) != config.ethereum.chain_id:
        raise ConfigurationError(
            f"the node at {config.ethereum.rpc_url} serves chain id {w3.eth.chain_id}, but"
            f" the configuration says {config.ethereum.chain_id}: fix rpc_url or chain_id"
        )
    registry = _registry(w3, config)
    operator = Account.from_key(operator_key)
    lines = []
    for record in records:
        wid = bytes.fromhex(record.worker_id)
        details = json.dumps(record.details, separators=(",", ":"))
        signer, status = registry.functions.workerSigner(wid).call()
        if int(signer, 16) == 0:
            call = registry.functions.workerRegister(
                wid,
                WORKER_TYPE_TEE,
                ORGANIZATION_ID,
                [],
                details,
                record.signing_address,
            )
            send_transaction(w3, operator, call, f"workerRegister {record.worker_id}")
            lines.append(
                f"registered {record.worker_id} signer {record.signing_address}"
            )
            continue
        changed = False
        if signer.lower() != record.signing_address.lower():
            call = registry.functions.workerUpdate(wid, details, record.signing_address)
            send_transaction(w3, operator, call, f"workerUpdate {record.worker_id}")
            lines.append(f"updated {record.worker_id} signer {record.signing_address}")
            changed = True
        if status != WORKER_ACTIVE:
            call = registry.functions.workerSetStatus(wid, WORKER_ACTIVE)
            send_transaction(w3, operator, call, f"workerSetStatus {record.worker_id}")
            lines.append(f"activated {record.worker_id}")
            changed = True
        if not changed:
            lines.append(f"unchanged {record.worker_id}")
    return lines


async def submit_and_wait(
    config: Config,
    key: bytes,
    worker_id: str,
    workload: str,
    inputs: Sequence[str],
    *,
    wait: bool,
    timeout: float,
    progress: bool,
) -> dict[str, Any]:
    deploy = runtime.deployment(config)
    async with JsonRpcClient(config.ethereum.rpc_url) as rpc:
        requester = EthereumRequester(
            rpc,
            key,
            config.ethereum.chain_id,
            deploy.contracts["WorkOrderRegistry"],
            deploy.contracts["WorkerRegistry"],
        )
        await check_chain_id(rpc, config)
        worker = await requester.worker(worker_id)
        submitted = await requester.submit(worker, workload, list(inputs))
        receipt = await requester.receipt(submitted.tx_hash)
        out: dict[str, Any] = {
            "workOrderId": submitted.sent.params["workOrderId"],
            "orderKey": "0x" + submitted.order_key.hex(),
            "submitTx": submitted.tx_hash,
            "block": int(str(receipt["blockNumber"]), 16),
        }
        if not wait:
            return out
        started = time.monotonic()
        waiter = asyncio.create_task(
            requester.wait_completion(
                submitted.order_key, timeout, from_block=out["block"]
            )
        )
        while not waiter.done():
            if progress:
                sys.stderr.write(
                    f"\rwaiting for the completion ... {time.monotonic() - started:5.1f} s"
                )
                sys.stderr.flush()
            await asyncio.wait([waiter], timeout=0.25)
        if progress:
            sys.stderr.write("\n")
        try:
            completion = waiter.result()
        except ChainError as exc:
            raise ChainError(
                f"work order {out['workOrderId']} (order key {out['orderKey']}): {exc}"
            ) from exc
        checked = await requester.check(submitted, completion)
        out.update(
            {
                "status": completion.status,
                "completionTx": completion.tx_hash,
                "verified": checked.ok,
                "reason": checked.verdict.reason or None,
                "outputs": [o.data.decode("utf-8", "replace") for o in checked.outputs],
            }
        )
        if checked.verdict.error is not None:
            out["error"] = dict(checked.verdict.error)
        return out


async def bridge_status(config: Config) -> dict[str, Any]:
    deploy = runtime.deployment(config)
    registry = deploy.contracts["WorkOrderRegistry"]
    async with open_store(runtime.database_url(config)) as store:
        point = await store.get_checkpoint(config.ethereum.chain_id, registry)
        counts = await store.counts_by_state()
    out: dict[str, Any] = {
        "chains": [],
        "workOrders": {state.value: n for state, n in counts.items()},
        "paused": runtime.paused_flag(config).exists(),
    }
    head = None
    try:
        async with JsonRpcClient(config.ethereum.rpc_url, timeout_s=5) as rpc:
            await check_chain_id(rpc, config)
            head = int(await rpc.call("eth_blockNumber"), 16)
    except Exception as exc:  # the node being down is a status, not a failure
        out["nodeError"] = str(exc)
    out["chains"].append(
        {
            "chainId": config.ethereum.chain_id,
            "contract": registry,
            "checkpoint": point.block_number if point else None,
            "head": head,
            "lag": (head - point.block_number)
            if (head is not None and point)
            else None,
        }
    )
    ops = runtime.data_dir(config) / "ops.url"
    if ops.exists():
        out["opsUrl"] = ops.read_text().strip()
        try:
            import aiohttp

            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    out["opsUrl"] + "/metrics", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp,
            ):
                text = await resp.text()
            out["pool"] = {
                line.split()[0].removeprefix("tcbridge_"): float(line.split()[1])
                for line in text.splitlines()
                if line.startswith("tcbridge_pool_")
            }
        except Exception:
            out["pool"] = "the bridge is not running (no answer from its ops server)"
    return out
