"""The Ethereum proxy-model bridge: watcher -> store -> pool -> store -> submitter.

``EthereumBridge.run`` runs four loops under one ``asyncio.TaskGroup``:

- the **watcher** records confirmed registry events (new orders,
  completions, cancels) with the checkpoint;
- the **dispatcher** claims received orders and runs them in the pool;
- the **submitter** sends signed results and tracks their transactions;
- the **monitor** samples the node, the relayer's balance and the counts
  the ops server reports.

A loop that meets a chain or node failure logs it, reports itself
unhealthy, and retries with bounded exponential backoff; any other error
ends the TaskGroup and the bridge, loudly. ``stop`` (set on SIGINT or
SIGTERM) ends the loops after their current step: the dispatcher lets
running orders finish for a moment and gives back the rest of its claims,
and everything already signed stays in the store for the next run.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from connector.dispatcher import Dispatcher
from connector.ethereum.adapters import StoreSubmitterAdapter, StoreWatcherSink
from connector.ethereum.events import ORACLE_TOPICS, decode_oracle_log
from connector.ethereum.oracle import (
    ContractSubmitterAdapter,
    OracleOrderBuilder,
    OracleSubmitterAdapter,
    OracleWatcherSink,
    encode_fulfill_call,
)
from connector.ethereum.rpc import JsonRpcClient
from connector.ethereum.submitter import GWEI, Submitter
from connector.ethereum.transactions import WORKER_SIGNER, TxSigner
from connector.ethereum.watcher import LogWatcher
from connector.faults import crash_point
from connector.loops import StepLoops, sleep_unless
from connector.ops import HealthSnapshot
from connector.states import State
from connector.store import StoredOrder, WorkOrderStore
from connector.store.records import contract_key
from enclave_bridge.errors import (
    ChainError,
    ConfigurationError,
    NodeUnavailable,
)
from enclave_bridge.pool import EnclavePool, Target
from enclave_bridge.processor import EthereumTarget, OracleTarget
from enclave_bridge.result_signature import EthereumDomain

log = logging.getLogger("tcbridge.bridge")

# Worker status ACTIVE in the EEA worker registry.
WORKER_ACTIVE = 1


@dataclass
class BridgeSettings:
    chain_id: int
    work_order_registry: str
    worker_registry: str
    start_block: int = 0
    confirmations: int | str = 1
    poll_interval_s: float = 0.5
    max_block_range: int = 2000
    claimer: str = field(default_factory=lambda: f"bridge@{socket.gethostname()}")
    concurrency: int = 0
    execution_timeout_s: float = 30.0
    max_items: int = 50
    max_bytes: int = 120_000
    batch_wait_s: float = 0.2
    fee_cap_wei: int = 500 * GWEI
    bump_percent: int = 13
    stuck_after_s: float = 30.0
    lag_threshold: int = 20
    min_balance_wei: int = 10**17
    paused_flag: Path | None = None
    requester_allowlist: tuple[str, ...] = ()
    max_request_bytes: int = 65_536
    max_in_flight_per_requester: int = 64
    max_result_bytes: int = 65_536
    gas_cap_per_requester_hour: int = 0
    # A TrustedOracle to serve as well (oracle-contract mode); "" for none.
    oracle: str = ""


class EthereumBridge:
    def __init__(
        self,
        settings: BridgeSettings,
        rpc: JsonRpcClient,
        store: WorkOrderStore,
        pool: EnclavePool,
        relayer_key: bytes,
    ) -> None:
        self.settings = settings
        self.rpc = rpc
        self.store = store
        self.pool = pool
        self.domain = EthereumDomain(settings.chain_id, settings.work_order_registry)
        self.signer = TxSigner(relayer_key, settings.chain_id)
        self.health = HealthSnapshot(
            lag_threshold=settings.lag_threshold,
            min_balance_wei=settings.min_balance_wei,
        )
        workers = list(pool.worker_records())
        self.sink = StoreWatcherSink(
            store,
            settings.chain_id,
            settings.work_order_registry,
            workers,
            requester_allowlist=settings.requester_allowlist,
        )
        self.watcher = LogWatcher(
            rpc,
            settings.work_order_registry,
            self.sink,
            confirmations=settings.confirmations,
            start_block=settings.start_block,
            max_range=settings.max_block_range,
        )
        # With an oracle on the same relayer, each submitter tracks only the
        # transactions it sent to its own contract.
        registry_adapter = (
            ContractSubmitterAdapter if settings.oracle else StoreSubmitterAdapter
        )
        self.submitter = Submitter(
            rpc,
            self.signer,
            settings.work_order_registry,
            registry_adapter(store, settings.chain_id, settings.work_order_registry),
            max_items=settings.max_items,
            max_bytes=settings.max_bytes,
            batch_wait_s=settings.batch_wait_s,
            fee_cap_wei=settings.fee_cap_wei,
            bump_percent=settings.bump_percent,
            stuck_after_s=settings.stuck_after_s,
            gas_cap_per_requester_hour=settings.gas_cap_per_requester_hour,
            confirmed_height=lambda: self.watcher.confirmed,
        )
        self.oracle: OracleSide | None = None
        if settings.oracle:
            self.oracle = OracleSide(self, relayer_key)
        concurrency = settings.concurrency or pool.size * pool.depth * 16
        self.dispatcher = Dispatcher(
            store,
            pool,
            self._target_for,
            claimer=settings.claimer,
            concurrency=concurrency,
            max_seconds=settings.execution_timeout_s,
            paused=self.paused,
            chain_id=settings.chain_id,
            per_requester=settings.max_in_flight_per_requester or None,
        )
        self.loops = StepLoops(self.health, settings.poll_interval_s)

    def paused(self) -> bool:
        flag = self.settings.paused_flag
        return flag is not None and flag.exists()

    def _target_for(self, order: StoredOrder) -> Target:
        if self.oracle is not None and order.ref.contract == self.oracle.key:
            return OracleTarget(
                self.oracle.domain, order.ref.order_key, order.request_keccak
            )
        return EthereumTarget(self.domain, order.ref.order_key, order.request_keccak)

    # -- start-up checks --------------------------------------------------

    async def check_chain(self) -> None:
        """Refuse to run against the wrong chain or a registry that is not there."""
        chain_id = int(await self.rpc.call("eth_chainId"), 16)
        if chain_id != self.settings.chain_id:
            raise ConfigurationError(
                f"the node at {self.rpc.url} serves chain id {chain_id}, but the configuration"
                f" says {self.settings.chain_id}: point rpc_url at the right node or fix chain_id"
            )
        for name, address in (
            ("WorkOrderRegistry", self.settings.work_order_registry),
            ("WorkerRegistry", self.settings.worker_registry),
            *([("TrustedOracle", self.settings.oracle)] if self.settings.oracle else []),
        ):
            code = await self.rpc.call("eth_getCode", address, "latest")
            if code in ("0x", "", None):
                raise ConfigurationError(
                    f"no contract at {address} ({name}) on chain {chain_id}: deploy with"
                    " `tcbridge deploy` or fix the deployment file"
                )

    async def check_limits(self) -> None:
        """Refuse size limits that a transaction on this chain could not carry."""
        block = await self.rpc.call("eth_getBlockByNumber", "latest", False)
        gas_limit = int(block["gasLimit"], 16)
        self.submitter.block_gas_limit = gas_limit
        problems = check_size_limits(
            gas_limit, self.settings.max_request_bytes, self.settings.max_result_bytes,
            self.settings.max_bytes,
        )
        if problems:
            raise ConfigurationError(
                "the size limits do not fit this chain: " + "; ".join(problems)
                + ". Lower [limits] max_request_bytes / max_result_bytes."
            )

    async def check_workers(self) -> None:
        """Every identity of the pool must be registered, active, with its signing address."""
        problems = []
        for worker_id, record in self.pool.worker_records().items():
            data = WORKER_SIGNER + abi_encode(["bytes32"], [bytes.fromhex(worker_id)])
            raw = await self.rpc.call(
                "eth_call",
                {"to": self.settings.worker_registry, "data": "0x" + data.hex()},
                "latest",
            )
            signer, status = abi_decode(["address", "uint256"], bytes.fromhex(raw[2:]))
            if int(signer, 16) == 0:
                problems.append(f"worker {worker_id} is not registered")
            elif signer.lower() != record.signing_address.lower():
                problems.append(
                    f"worker {worker_id} is registered with signing address {signer}, but the"
                    f" pool's key has {record.signing_address}"
                )
            elif status != WORKER_ACTIVE:
                problems.append(
                    f"worker {worker_id} has status {status}, not ACTIVE (1)"
                )
        if problems:
            raise ConfigurationError(
                "the worker registry does not match the pool: "
                + "; ".join(problems)
                + ". Run `tcbridge --config FILE worker register` with the operator key."
            )

    # -- running ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        if not await self._start_checks(stop):
            return
        await self.dispatcher.recover()
        log.info(
            "bridge started on chain %d, registry %s, relayer %s, %d pool processes",
            self.settings.chain_id,
            self.settings.work_order_registry,
            self.signer.address,
            self.pool.size,
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.loops.run("watcher", self._watch, stop))
            tg.create_task(self.dispatcher.run(stop))
            tg.create_task(self.loops.run("submitter", self._submit, stop))
            tg.create_task(self.loops.run("monitor", self._monitor, stop, interval=2.0))
            if self.oracle is not None:
                for name, step in (
                    ("oracle watcher", self._watch_oracle),
                    ("oracle submitter", self._submit_oracle),
                ):
                    tg.create_task(self.loops.run(name, step, stop))
        log.info("bridge stopped")

    async def _start_checks(self, stop: asyncio.Event) -> bool:
        """The start-up checks, retried while the node cannot be reached.

        A wrong configuration fails at once; an unreachable node is waited
        for with the same bounded backoff as the loops, so a bridge started
        before its node (or during an outage) comes up by itself.
        """
        while not stop.is_set():
            try:
                await self.check_chain()
                await self.check_limits()
                await self.check_workers()
                return True
            except (NodeUnavailable, ChainError) as exc:
                await sleep_unless(stop, self.loops.failed("start-up check", exc))
        return False

    async def _watch(self) -> None:
        reorgs = self.watcher.reorgs
        recorded = await self.watcher.poll()
        crash_point("watcher.after_poll")
        if self.watcher.reorgs != reorgs:
            await self.submitter.resync()
        if recorded:
            self.dispatcher.wake.set()
        self.health.lag_blocks = self.watcher.lag

    async def _watch_oracle(self) -> None:
        assert self.oracle is not None
        if await self.oracle.watcher.poll():
            self.dispatcher.wake.set()

    async def _submit_oracle(self) -> None:
        assert self.oracle is not None
        if self.paused():
            await self.oracle.submitter.track()
            return
        await self.oracle.submitter.step()

    async def _submit(self) -> None:
        if self.paused():
            await self.submitter.track()
            return
        await self.submitter.step()

    async def _monitor(self) -> None:
        balance = await self.rpc.call("eth_getBalance", self.signer.address, "latest")
        self.health.balance_wei = int(balance, 16)
        self.health.paused = self.paused()
        counts = await self.store.counts_by_state()
        stats = self.pool.stats()
        queue_age = await self.store.oldest_age(State.RECEIVED)
        self.health.metrics = {
            "watcher_lag_blocks": self.watcher.lag,
            "watcher_checkpoint_block": self.watcher.checkpoint.block
            if self.watcher.checkpoint
            else -1,
            "chain_head_block": self.watcher.head,
            "reorgs_total": self.watcher.reorgs,
            "work_orders": {(("state", s.value),): n for s, n in counts.items()},
            "queue_oldest_age_seconds": queue_age or 0.0,
            "pool_queued": stats.queued,
            "pool_in_flight": stats.in_flight,
            "pool_done_total": stats.done,
            "pool_failed_total": stats.failed,
            "pending_nonces": self.submitter.pending_count,
            "relayer_balance_wei": self.health.balance_wei,
            "gas_spent_total": self.submitter.stats.gas_used,
            "completion_txs_total": self.submitter.stats.sent,
            "fee_bumps_total": self.submitter.stats.replaced,
            "paused": int(self.health.paused),
        }


# Worst-case gas of one calldata byte: the EIP-7623 floor charges 40 gas per
# non-zero byte (10 per token, 4 tokens); log data adds 8 gas per byte.
CALLDATA_GAS_PER_BYTE = 40
LOG_GAS_PER_BYTE = 8
# ABI head, signature and storage work of a submit or a completion, rounded up.
SUBMIT_OVERHEAD_GAS = 250_000
COMPLETE_OVERHEAD_GAS = 150_000 + 2_000_000 + 2_000_000 // 63 + 60_000  # with a full callback
ITEM_ENVELOPE_BYTES = 65 + 256


def check_size_limits(
    block_gas_limit: int, max_request: int, max_result: int, batch_max_bytes: int
) -> list[str]:
    """What in these limits could not fit a block or a transaction, if anything."""
    problems = []
    submit_gas = SUBMIT_OVERHEAD_GAS + (CALLDATA_GAS_PER_BYTE + LOG_GAS_PER_BYTE) * max_request
    complete_gas = COMPLETE_OVERHEAD_GAS + (
        CALLDATA_GAS_PER_BYTE + LOG_GAS_PER_BYTE + 16
    ) * (max_result + ITEM_ENVELOPE_BYTES)
    if submit_gas > block_gas_limit:
        problems.append(
            f"a {max_request}-byte request needs up to {submit_gas} gas to submit,"
            f" over the block gas limit {block_gas_limit}"
        )
    if complete_gas > block_gas_limit:
        problems.append(
            f"a {max_result}-byte result needs up to {complete_gas} gas to complete,"
            f" over the block gas limit {block_gas_limit}"
        )
    if max_result + ITEM_ENVELOPE_BYTES > batch_max_bytes:
        problems.append(
            f"a {max_result}-byte result does not fit one completion transaction"
            f" (batch_max_bytes {batch_max_bytes}, kept under the 128 KiB mempool limit)"
        )
    return problems


class OracleSide:
    """Oracle-contract mode: a TrustedOracle's watcher and submitter.

    See :mod:`connector.ethereum.oracle` for the path of one request.

    They share the bridge's node, store, pool, dispatcher and relayer; the
    oracle has its own checkpoint, and its orders are keyed by its address.
    """

    def __init__(self, bridge: EthereumBridge, relayer_key: bytes) -> None:
        settings = bridge.settings
        self.key = contract_key(settings.oracle)
        self.domain = EthereumDomain(settings.chain_id, settings.oracle)
        records = bridge.pool.worker_records()
        builder = OracleOrderBuilder(
            relayer_key, settings.chain_id, settings.oracle, records
        )
        self.watcher = LogWatcher(
            bridge.rpc,
            settings.oracle,
            OracleWatcherSink(
                bridge.store, settings.chain_id, settings.oracle, builder, records
            ),
            confirmations=settings.confirmations,
            start_block=settings.start_block,
            max_range=settings.max_block_range,
            topics=ORACLE_TOPICS,
            decoder=decode_oracle_log,
        )
        self.submitter = Submitter(
            bridge.rpc,
            bridge.signer,
            settings.oracle,
            OracleSubmitterAdapter(
                bridge.store, settings.chain_id, settings.oracle, builder
            ),
            max_items=1,
            batch_wait_s=0.0,
            fee_cap_wei=settings.fee_cap_wei,
            bump_percent=settings.bump_percent,
            stuck_after_s=settings.stuck_after_s,
            gas_cap_per_requester_hour=settings.gas_cap_per_requester_hour,
            confirmed_height=lambda: self.watcher.confirmed,
            encode_call=encode_fulfill_call,
        )

