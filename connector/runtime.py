"""Assembling a bridge from a configuration: secrets, deployment, store, pool, node."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from connector.bridge import BridgeSettings, EthereumBridge
from connector.config import Config, read_secret
from connector.deploy import Deployment
from connector.ethereum.rpc import JsonRpcClient
from connector.fabric.bridge import FabricBridge
from connector.store import open_store
from enclave_bridge.errors import ConfigurationError
from enclave_bridge.identity import SealedIdentity, load_sealed
from enclave_bridge.pool import EnclavePool, open_pool
from enclave_bridge.processor import ProcessorPolicy

RELAYER_KEY_ENV = "TCBRIDGE_RELAYER_KEY"
PASSPHRASE_ENV = "TCBRIDGE_POOL_PASSPHRASE"
OPERATOR_KEY_ENV = "TCBRIDGE_OPERATOR_KEY"


def hex_key(text: str, what: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        raise ConfigurationError(f"the {what} is not hex") from None
    if len(key) != 32:
        raise ConfigurationError(f"the {what} must be 32 bytes, not {len(key)}")
    return key


def relayer_key(config: Config) -> bytes:
    text = read_secret(
        "relayer key", config.ethereum.relayer_key_file, RELAYER_KEY_ENV, config
    )
    return hex_key(text, "relayer key")


def pool_passphrase(config: Config) -> str:
    return read_secret(
        "pool passphrase", config.pool.passphrase_file, PASSPHRASE_ENV, config
    )


def database_url(config: Config) -> str:
    """The store URL, with a relative SQLite path taken from the config file's folder."""
    url = config.bridge.database
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix) :]
            if path and not path.startswith("/") and path != ":memory:":
                full = config.path(path)
                full.parent.mkdir(parents=True, exist_ok=True)
                return prefix + str(full)
    return url


def data_dir(config: Config) -> Path:
    path = config.path(config.bridge.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def deployment(config: Config) -> Deployment:
    eth = config.ethereum
    if eth.work_order_registry and eth.worker_registry:
        return Deployment(
            eth.chain_id,
            {
                "WorkOrderRegistry": eth.work_order_registry,
                "WorkerRegistry": eth.worker_registry,
            },
            max(eth.start_block, 0),
        )
    path = config.path(eth.deployment)
    if not path.exists():
        raise ConfigurationError(
            f"no deployment file at {path}: run `tcbridge --config FILE deploy` first, or set"
            " ethereum.work_order_registry and ethereum.worker_registry"
        )
    return Deployment.read(path)


def identities(config: Config) -> list[SealedIdentity]:
    folder = config.path(config.pool.identities_dir)
    found = sorted(folder.glob("*.sealed")) if folder.exists() else []
    if not found:
        raise ConfigurationError(
            f"no worker identities in {folder}: create one with `tcbridge --config FILE worker create --name NAME`"
        )
    return [load_sealed(p) for p in found]


def paused_flag(config: Config) -> Path:
    return data_dir(config) / "PAUSED"


def settings_for(config: Config, deploy: Deployment) -> BridgeSettings:
    eth = config.ethereum
    return BridgeSettings(
        chain_id=eth.chain_id,
        work_order_registry=deploy.contracts["WorkOrderRegistry"],
        worker_registry=deploy.contracts["WorkerRegistry"],
        start_block=eth.start_block if eth.start_block >= 0 else deploy.block,
        confirmations=config.confirmation_depth(),
        poll_interval_s=eth.poll_interval,
        max_block_range=eth.max_block_range,
        execution_timeout_s=config.pool.execution_timeout_s,
        max_items=eth.batch_max_items,
        max_bytes=eth.batch_max_bytes,
        batch_wait_s=eth.batch_wait_s,
        fee_cap_wei=int(eth.max_fee_cap_gwei * 10**9),
        bump_percent=eth.fee_bump_percent,
        stuck_after_s=eth.stuck_after_s,
        lag_threshold=config.ops.lag_threshold_blocks,
        min_balance_wei=config.ops.min_balance_wei,
        paused_flag=paused_flag(config),
        requester_allowlist=tuple(config.guards.requester_allowlist),
        max_request_bytes=config.limits.max_request_bytes,
        max_result_bytes=config.limits.max_result_bytes,
        max_in_flight_per_requester=config.limits.max_in_flight_per_requester,
        gas_cap_per_requester_hour=config.guards.gas_cap_per_requester_per_hour,
        # Deployed with `tcbridge deploy --with-oracle`: oracle mode is on.
        oracle=deploy.contracts.get("TrustedOracle", ""),
    )


@asynccontextmanager
async def open_chain_bridge(
    config: Config,
) -> AsyncIterator[EthereumBridge | FabricBridge]:
    """The bridge ``[bridge] chain`` names: Ethereum (``open_bridge``) or Fabric."""
    if config.bridge.chain == "fabric":
        from connector.fabric.runtime import open_fabric_bridge

        async with open_fabric_bridge(config) as fabric_bridge:
            yield fabric_bridge
        return
    async with open_bridge(config) as ethereum_bridge:
        yield ethereum_bridge


def open_enclave_pool(config: Config) -> AbstractAsyncContextManager[EnclavePool]:
    """The enclave pool ``[pool]`` and ``[limits]`` describe, with its state and audit files.

    One place for every front door: the Ethereum and Fabric bridges and
    ``tcbridge listen`` serve from the same pool configuration.
    """
    folder = data_dir(config)
    return open_pool(
        identities(config),
        pool_passphrase(config),
        folder / "workload-state.db",
        processes=config.pool.processes or os.cpu_count(),
        default_max_seconds=config.pool.execution_timeout_s,
        audit_log=folder / "pool-audit.log",
        batch_scheduling=config.pool.batch_scheduling,
        policy=ProcessorPolicy(
            allow_sha1_oaep=config.pool.allow_sha1_oaep,
            allow_iv_reuse=config.pool.allow_iv_reuse,
            limits=config.limits.work_order_limits(),
        ),
    )


@asynccontextmanager
async def open_bridge(config: Config) -> AsyncIterator[EthereumBridge]:
    """Everything a running bridge needs, opened in order and closed in reverse."""
    key = relayer_key(config)
    deploy = deployment(config)
    async with (
        open_store(database_url(config)) as store,
        open_enclave_pool(config) as pool,
        JsonRpcClient(
            config.ethereum.rpc_url, timeout_s=config.ethereum.rpc_timeout_s
        ) as rpc,
    ):
        yield EthereumBridge(settings_for(config, deploy), rpc, store, pool, key)
