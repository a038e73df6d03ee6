"""Assembling the Fabric side from a configuration: identity, gateway, bridge,
worker registration, a requester's submit, status.

The ``[fabric]`` section names the Gateway peer, the channel, the
chaincode and the client identity (MSP id, certificate and key files). For
the development peer, ``connection`` may name its ``connection.json``
instead: address, channel, chaincode and identities are read from it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from connector.config import Config
from connector.fabric.adapters import chain_id_of
from connector.fabric.bridge import FabricBridge, FabricSettings
from connector.fabric.gateway import VALID, EndorsementRefused, FabricGateway
from connector.fabric.identity import FabricIdentity, load_identity
from connector.fabric.requester import FabricRequester
from connector.store import open_store
from enclave_bridge.errors import ConfigurationError
from enclave_bridge.identity import WorkerRecord

# Worker type and organisation the bridge registers its workers under.
WORKER_TYPE_TEE = "1"
ORGANIZATION_ID = "tcbridge"


def _connection(config: Config) -> dict[str, Any]:
    if not config.fabric.connection:
        return {}
    path = config.path(config.fabric.connection)
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read the Fabric connection file {path}: {exc}; start the"
            " development peer (./scripts/devpeer) or fix [fabric] connection"
        ) from exc
    if not isinstance(found, dict):
        raise ConfigurationError(f"{path} is not a JSON object")
    return found


def fabric_identity(config: Config, name: str | None = None) -> FabricIdentity:
    """The configured client identity, or identity ``name`` of the connection file."""
    fabric = config.fabric
    info = _connection(config)
    if name is not None:
        entry = info.get("identities", {}).get(name)
        if entry is None:
            raise ConfigurationError(f"no identity {name!r} in the Fabric connection file")
        return load_identity(entry["mspId"], Path(entry["certPath"]), Path(entry["keyPath"]))
    if fabric.cert_path and fabric.key_path:
        return load_identity(
            fabric.msp_id, config.path(fabric.cert_path), config.path(fabric.key_path)
        )
    if info:
        return load_identity(info["mspId"], Path(info["certPath"]), Path(info["keyPath"]))
    raise ConfigurationError(
        "no Fabric identity: set [fabric] cert_path and key_path (and msp_id), or"
        " connection"
    )


def open_gateway(config: Config, identity: FabricIdentity | None = None) -> FabricGateway:
    fabric = config.fabric
    info = _connection(config)
    address = str(info.get("gatewayAddress") or fabric.gateway_address)
    channel = str(info.get("channel") or fabric.channel)
    chaincode = str(info.get("chaincode") or fabric.chaincode)
    credentials = None
    if fabric.tls:
        if not fabric.tls_ca_path:
            raise ConfigurationError("[fabric] tls needs tls_ca_path (the peer's TLS CA)")
        credentials = grpc.ssl_channel_credentials(
            config.path(fabric.tls_ca_path).read_bytes()
        )
    return FabricGateway(
        address, identity or fabric_identity(config), channel, chaincode,
        credentials=credentials,
    )


def settings_for(config: Config, gateway: FabricGateway) -> FabricSettings:
    from connector import runtime

    return FabricSettings(
        channel=gateway.channel,
        chaincode=gateway.chaincode,
        start_block=config.fabric.start_block,
        poll_interval_s=config.fabric.poll_interval,
        execution_timeout_s=config.pool.execution_timeout_s,
        max_items=config.fabric.batch_max_items,
        paused_flag=runtime.paused_flag(config),
    )


@asynccontextmanager
async def open_fabric_bridge(config: Config) -> AsyncIterator[FabricBridge]:
    """Everything a running Fabric bridge needs, opened in order, closed in reverse."""
    from connector import runtime

    gateway = open_gateway(config)
    try:
        async with (
            open_store(runtime.database_url(config)) as store,
            runtime.open_enclave_pool(config) as pool,
        ):
            yield FabricBridge(settings_for(config, gateway), gateway, store, pool)
    finally:
        await gateway.close()


async def register_workers(
    gateway: FabricGateway, records: Sequence[WorkerRecord]
) -> list[str]:
    """workerRegister for new identities, workerUpdate (+ status) for changed ones."""
    lines = []
    for record in records:
        details = json.dumps(record.details, separators=(",", ":"))
        pem = str(record.details["workerTypeData"]["verificationKey"])
        try:
            found = json.loads(await gateway.evaluate("workerRetrieve", record.worker_id))
        except EndorsementRefused:
            found = None
        if found is None:
            await _invoke(
                gateway, "workerRegister", record.worker_id, WORKER_TYPE_TEE,
                ORGANIZATION_ID, "[]", details, pem,
            )
            lines.append(f"registered {record.worker_id} on {gateway.channel}")
            continue
        changed = False
        if found.get("verifyingKeyPem", "").strip() != pem.strip():
            await _invoke(gateway, "workerUpdate", record.worker_id, details, pem)
            lines.append(f"updated {record.worker_id}")
            changed = True
        if found.get("status") != 1:
            await _invoke(gateway, "workerSetStatus", record.worker_id, "1")
            lines.append(f"activated {record.worker_id}")
            changed = True
        if not changed:
            lines.append(f"unchanged {record.worker_id}")
    return lines


async def _invoke(gateway: FabricGateway, function: str, *args: str) -> None:
    prepared = await gateway.endorse(gateway.propose(function, *args))
    await gateway.submit(prepared.tx_id, prepared.envelope)
    code, _ = await gateway.commit_status(prepared.tx_id, timeout=60)
    if code != VALID:
        raise ConfigurationError(f"{function} was invalidated with code {code}")


async def submit_and_wait(
    config: Config, identity_name: str | None, signing_key: bytes | None,
    worker_id: str, workload: str, inputs: Sequence[str], *, wait: bool,
    timeout: float,
) -> dict[str, Any]:
    """``tcbridge submit --chain fabric``: submit as a requester, wait, verify."""
    gateway = open_gateway(config, fabric_identity(config, identity_name))
    try:
        requester = FabricRequester(gateway, signing_key)
        worker = await requester.worker(worker_id)
        submitted = await requester.submit(worker, workload, list(inputs))
        out: dict[str, Any] = {
            "workOrderId": submitted.sent.params["workOrderId"],
            "orderKey": submitted.order_key,
            "submitTx": submitted.tx_id,
            "block": submitted.block,
            "requester": requester.label,
        }
        if not wait:
            return out
        completion = await requester.wait_completion(submitted, timeout)
        checked = await requester.check(submitted, completion)
    finally:
        await gateway.close()
    out.update({
        "status": completion.status,
        "completionTx": completion.tx_id,
        "verified": checked.ok,
        "reason": checked.verdict.reason or None,
        "outputs": [o.data.decode("utf-8", "replace") for o in checked.outputs],
    })
    if checked.verdict.error is not None:
        out["error"] = dict(checked.verdict.error)
    return out


async def fabric_status(config: Config) -> dict[str, Any]:
    """Checkpoint and work orders by state for the configured channel and chaincode."""
    from connector import runtime

    info = _connection(config)
    channel = str(info.get("channel") or config.fabric.channel)
    chaincode = str(info.get("chaincode") or config.fabric.chaincode)
    async with open_store(runtime.database_url(config)) as store:
        point = await store.get_checkpoint(chain_id_of(channel), chaincode)
        counts = await store.counts_by_state()
    return {
        "chain": chain_id_of(channel),
        "chaincode": chaincode,
        "checkpoint": None if point is None else {
            "block": point.block_number, "lastTxId": point.last_tx_id,
        },
        "workOrders": {s.value: n for s, n in counts.items() if n},
    }
