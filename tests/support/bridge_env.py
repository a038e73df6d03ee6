"""A whole bridge on a real local node, in-process, for end-to-end tests.

``open_bridge_env`` deploys the registries with the operator key, creates
worker identities (sealed with a cheap scrypt cost: these are test keys),
registers them, and opens the bridge (store, pool, node client) from a
``Config`` exactly as ``tcbridge run`` would. ``env.running()`` runs the
bridge's loops as a task until the block exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from web3 import Web3

from connector import runtime
from connector.bridge import EthereumBridge
from connector.config import Config
from connector.deploy import Deployment, deploy_all
from connector.devnet import DEV_PRIVATE_KEYS
from connector.ethereum.rpc import JsonRpcClient
from connector.registry_ops import register_workers
from connector.requester_client import EthereumRequester
from enclave_bridge.attestation import SimulatedAttester
from enclave_bridge.identity import generate_identity, save_sealed, seal, worker_record

PASSPHRASE = "test passphrase"
OPERATOR_KEY = DEV_PRIVATE_KEYS[0]
RELAYER_KEY = DEV_PRIVATE_KEYS[1]


@dataclass
class BridgeEnv:
    config: Config
    deployment: Deployment
    worker_ids: list[str]
    folder: Path
    rpc: JsonRpcClient
    bridge: EthereumBridge | None = None
    requesters: list[EthereumRequester] = field(default_factory=list)

    def requester(self, n: int) -> EthereumRequester:
        while len(self.requesters) <= n:
            key = DEV_PRIVATE_KEYS[2 + len(self.requesters)]
            self.requesters.append(
                EthereumRequester(
                    self.rpc,
                    bytes.fromhex(key[2:]),
                    self.config.ethereum.chain_id,
                    self.deployment.contracts["WorkOrderRegistry"],
                    self.deployment.contracts["WorkerRegistry"],
                )
            )
        return self.requesters[n]

    async def wait_for_counts(
        self, timeout: float = 30.0, **wanted: int
    ) -> dict[str, int]:
        """Poll the store until each named state holds the wanted count."""
        assert self.bridge is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            counts = {
                s.value: n
                for s, n in (await self.bridge.store.counts_by_state()).items()
            }
            if all(counts.get(k) == v for k, v in wanted.items()):
                return counts
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"store counts {counts} never reached {wanted}")
            await asyncio.sleep(0.1)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[EthereumBridge]:
        """Open the bridge as `tcbridge run` does and run it until the block exits."""
        async with runtime.open_bridge(self.config) as bridge:
            self.bridge = bridge
            await bridge.check_chain()
            await bridge.check_limits()
            await bridge.check_workers()
            stop = asyncio.Event()
            task = asyncio.create_task(bridge.run(stop))
            try:
                yield bridge
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
                self.bridge = None


def make_config(
    folder: Path, rpc_url: str, chain_id: int, **ethereum: object
) -> Config:
    config = Config(source=folder / "tcbridge.toml")
    config.bridge.database = "sqlite:///var/tcbridge.db"
    config.ethereum.rpc_url = rpc_url
    config.ethereum.chain_id = chain_id
    config.ethereum.poll_interval = 0.1
    config.ethereum.batch_wait_s = 0.05
    config.ethereum.confirmations = "1"
    for key, value in ethereum.items():
        setattr(config.ethereum, key, value)
    config.pool.processes = 2
    return config


@contextlib.asynccontextmanager
async def open_bridge_env(
    folder: Path,
    rpc_url: str,
    *,
    workers: int = 1,
    with_consumer: bool = True,
    **ethereum: object,
) -> AsyncIterator[BridgeEnv]:
    w3 = Web3(Web3.HTTPProvider(rpc_url))
    chain_id = int(w3.eth.chain_id)
    config = make_config(folder, rpc_url, chain_id, **ethereum)
    deployment = deploy_all(
        w3, Account.from_key(OPERATOR_KEY), with_consumer=with_consumer
    )
    deployment.write(runtime.data_dir(config) / "deployment.json")
    identities = config.path(config.pool.identities_dir)
    identities.mkdir(parents=True, exist_ok=True)
    records = []
    for n in range(workers):
        keys = generate_identity(f"e2e-worker-{n}-{os.getpid()}")
        save_sealed(
            identities / f"{keys.worker_id}.sealed",
            seal(keys, PASSPHRASE, scrypt_n=2**10),
        )
        records.append(worker_record(keys, SimulatedAttester().evidence_for(keys)))
    register_workers(config, bytes.fromhex(OPERATOR_KEY[2:]), records)
    os.environ[runtime.PASSPHRASE_ENV] = PASSPHRASE
    os.environ[runtime.RELAYER_KEY_ENV] = RELAYER_KEY
    async with JsonRpcClient(rpc_url) as rpc:
        try:
            yield BridgeEnv(
                config, deployment, [r.worker_id for r in records], folder, rpc
            )
        finally:
            os.environ.pop(runtime.PASSPHRASE_ENV, None)
            os.environ.pop(runtime.RELAYER_KEY_ENV, None)
