"""The chaos run (``scripts/chaos``): SIGKILL the bridge at random while work orders flow.

Starts anvil (0.2 s blocks), deploys, registers a worker, starts the
bridge as its own process, and sends ``--orders`` work orders from several
requesters in waves. Meanwhile it kills the bridge ``--kills`` times:
SIGKILL at random moments, and on some restarts a crash point placed
exactly between two steps whose order matters (after a completion was
recorded but before it was broadcast; after it was broadcast but before
anything else was written; after the watcher committed a batch). After
every kill it checks that no pool process outlived the bridge (they hold
worker keys). Then it lets the last bridge finish and checks on-chain:

- ``lost``: orders with no WorkOrderCompleted event;
- ``duplicated``: orders with more than one (the contract refuses a second
  completion, so this must stay 0);
- ``reexecuted``: extra executions, from the pool's audit log (one
  ``commit`` line per execution);
- ``wasted_tx``: completion transactions of the relayer that completed
  nothing (mined, but every item skipped or reverted);
- ``orphans``: pool processes still alive after their bridge was killed.

Last line: ``lost=0 duplicated=0 completed=N/N reexecuted=R wasted_tx=W kills=K``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from connector import loadgen
from connector.demo import ROOT, _tcbridge
from connector.devnet import DEV_PRIVATE_KEYS, open_anvil
from connector.ethereum.rpc import JsonRpcClient
from connector.requester_client import EthereumRequester
from enclave_bridge.result_signature import address_of_private_key

# Crash points used on restarts, in turn, between random SIGKILLs.
CRASH_PLANS = (
    "submitter.after_record:1",
    "submitter.after_broadcast:1",
    "watcher.after_poll:4",
)


@dataclass
class ChaosResult:
    orders: int
    completed: int
    lost: int
    duplicated: int
    reexecuted: int
    wasted_tx: int
    kills: int
    orphans: int
    secrets_in_logs: list[str]

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.orphans == 0
            and not self.secrets_in_logs
        )

    def line(self) -> str:
        return (
            f"lost={self.lost} duplicated={self.duplicated} completed={self.completed}/{self.orders}"
            f" reexecuted={self.reexecuted} wasted_tx={self.wasted_tx} kills={self.kills}"
        )


def _config(folder: Path, url: str, processes: int) -> Path:
    path = folder / "tcbridge.toml"
    path.write_text(
        "[bridge]\n"
        'database = "sqlite:///var/tcbridge.db"\n'
        'log_level = "DEBUG"\n'
        "[ethereum]\n"
        f'rpc_url = "{url}"\n'
        "chain_id = 31337\n"
        'deployment = "var/deployment.json"\n'
        'confirmations = "1"\n'
        "poll_interval = 0.1\n"
        "batch_wait_s = 0.05\n"
        "stuck_after_s = 5.0\n"
        "[pool]\n"
        f"processes = {processes}\n"
        'identities_dir = "var/workers"\n'
    )
    return path


class BridgeProcess:
    """One `tcbridge run` at a time; restarts append to the same log."""

    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        self.config = config
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._starts_before = 0
        self.crashes = 0

    def start(self, crash_at: str = "") -> None:
        self._starts_before = self._starts()
        env = dict(self.env)
        if crash_at:
            env["TCBRIDGE_CRASH_AT"] = crash_at
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", "--config", str(self.config), "run"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    def children(self) -> list[int]:
        if self.proc is None:
            return []
        pid = self.proc.pid
        try:
            return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def kill(self) -> list[int]:
        """SIGKILL the bridge; return the pool processes it had."""
        assert self.proc is not None
        children = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return children

    async def wait_ready(self, timeout: float = 90.0) -> bool:
        """Until this run logged "bridge started" (True) or exited (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._starts() > self._starts_before:
                return True
            if not self.alive():
                return False
            await asyncio.sleep(0.05)
        return self.alive()

    def _starts(self) -> int:
        try:
            return self.log_path.read_bytes().count(b"bridge started")
        except OSError:
            return 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _keep_running(bridge: BridgeProcess) -> None:
    """After the kills: a bridge that crashed at its crash point is restarted clean."""
    while True:
        if not bridge.alive():
            bridge.crashes += 1
            bridge.start()
        await asyncio.sleep(0.2)


def _survivors(pids: list[int], wait_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + wait_s
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        time.sleep(0.05)
    return alive


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Stack:
    """A node with the registries deployed, a registered worker, and a bridge to (re)start."""

    rpc: JsonRpcClient
    registry: str
    worker_registry: str
    worker_id: str
    bridge: BridgeProcess
    folder: Path
    passphrase: str


@contextlib.asynccontextmanager
async def open_stack(folder: Path, processes: int = 2) -> AsyncIterator[Stack]:
    with open_anvil(block_time=0.2, gas_limit=300_000_000) as node:
        config = _config(folder, node.url, processes)
        passphrase = secrets.token_hex(16)
        env = dict(os.environ)
        env.update({
            "TCBRIDGE_POOL_PASSPHRASE": passphrase,
            "TCBRIDGE_OPERATOR_KEY": DEV_PRIVATE_KEYS[0],
            "TCBRIDGE_RELAYER_KEY": DEV_PRIVATE_KEYS[1],
        })
        deployment = json.loads(_tcbridge(config, env, "deploy"))
        worker_id = json.loads(_tcbridge(config, env, "worker", "create", "--name", "chaos"))["workerId"]
        _tcbridge(config, env, "worker", "register")
        bridge = BridgeProcess(config, env, folder / "bridge.log")
        try:
            async with JsonRpcClient(node.url) as rpc:
                yield Stack(rpc, deployment["contracts"]["WorkOrderRegistry"],
                            deployment["contracts"]["WorkerRegistry"], worker_id, bridge, folder,
                            passphrase)
        finally:
            bridge.stop()


async def make_orders(stack: Stack, count: int, requesters: int) -> list[loadgen.Order]:
    keys = loadgen.new_requesters(requesters)
    await loadgen.fund(stack.rpc, keys)
    probe = EthereumRequester(stack.rpc, keys[0], 31337, stack.registry, stack.worker_registry)
    worker = await probe.worker(stack.worker_id)
    return await loadgen.prepare(stack.rpc, stack.registry, worker, keys, count, b"chaos" * 20)


async def outcome(stack: Stack, orders: list[loadgen.Order], start_block: int, kills: int,
                  timeout: float) -> ChaosResult:
    """Follow completions to the end, then count what the crashes cost."""
    keeper = asyncio.create_task(_keep_running(stack.bridge))
    try:
        followed = await loadgen.follow(
            stack.rpc, stack.registry, {o.key: o for o in orders}, confirmations=1,
            from_block=start_block, timeout=timeout,
        )
        relayer = address_of_private_key(bytes.fromhex(DEV_PRIVATE_KEYS[1][2:]))
        mined = int(await stack.rpc.call("eth_getTransactionCount", relayer, "latest"), 16)
    finally:
        keeper.cancel()
    kills += stack.bridge.crashes
    stack.bridge.stop()
    secret_values = [stack.passphrase, DEV_PRIVATE_KEYS[1][2:], DEV_PRIVATE_KEYS[0][2:]]
    secret_values += _worker_secrets(stack.folder / "var" / "workers", stack.passphrase)
    return ChaosResult(
        orders=len(orders),
        completed=sum(1 for n in followed.counts.values() if n >= 1),
        lost=len(orders) - len(followed.counts),
        duplicated=sum(1 for n in followed.counts.values() if n > 1),
        reexecuted=_reexecutions(stack.folder / "var" / "pool-audit.log"),
        wasted_tx=mined - len(followed.tx_hashes),
        kills=kills,
        orphans=0,
        secrets_in_logs=_secrets_in(stack.folder / "bridge.log", secret_values),
    )


async def _chaos(args: argparse.Namespace, folder: Path) -> ChaosResult:
    rng = random.Random(args.seed)
    kills = orphans = 0
    async with open_stack(folder, args.processes) as stack:
        orders = await make_orders(stack, args.orders, args.requesters)
        start_block = int(await stack.rpc.call("eth_blockNumber"), 16)
        bridge = stack.bridge
        bridge.start()
        sender = asyncio.create_task(loadgen.send(stack.rpc, orders, rate=args.rate))
        plans = list(CRASH_PLANS)
        for k in range(args.kills):
            # Kill while it works, not while it is still importing.
            if await bridge.wait_ready():
                await asyncio.sleep(rng.uniform(0.3, 2.0))
            children = bridge.kill()
            kills += 1
            orphans += len(await asyncio.to_thread(_survivors, children))
            plan = plans[k % len(plans)] if k % 2 == 1 else ""
            bridge.start(crash_at=plan)
        await sender
        result = await outcome(stack, orders, start_block, kills, args.timeout)
    result.orphans = orphans
    return result


def _reexecutions(audit: Path) -> int:
    """Executions beyond the first per order: extra ``start`` lines in the audit log.

    A pool process killed mid-order never commits, so counting commits
    would hide the work a crash wasted; every start is an execution.
    """
    starts: dict[str, int] = {}
    if audit.exists():
        for line in audit.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if entry.get("event") == "start":
                starts[entry["orderKey"]] = starts.get(entry["orderKey"], 0) + 1
    return sum(n - 1 for n in starts.values() if n > 1)


def _worker_secrets(folder: Path, passphrase: str) -> list[str]:
    """The workers' private keys in the forms a careless log line would show them."""
    import base64

    from cryptography.hazmat.primitives import serialization

    from enclave_bridge.identity import load_sealed, unseal

    out = []
    for path in sorted(folder.glob("*.sealed")):
        keys = unseal(load_sealed(path), passphrase)
        der = keys.encryption_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        out += [keys.signing_key.hex(), base64.b64encode(der[-48:]).decode()[:40], der[-32:].hex()]
    return out


def _secrets_in(log: Path, secret_values: list[str]) -> list[str]:
    text = log.read_text(errors="replace").lower() if log.exists() else ""
    return [s[:6] + "..." for s in secret_values if s.lower() in text]


def run(argv: list[str] | None = None) -> ChaosResult:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=320)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--requesters", type=int, default=8)
    parser.add_argument("--rate", type=float, default=40.0, help="orders sent per second")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument(
        "--keep", action="store_true", help="keep the working folder (kept anyway on failure)"
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="tcbridge-chaos-"))
    print(f"chaos: {args.orders} orders, {args.kills} kills, seed {args.seed}, folder {folder}", flush=True)
    result = asyncio.run(_chaos(args, folder))
    if result.ok and not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"chaos: working folder kept: {folder}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    result = run(argv)
    print(f"orphan pool processes after kills: {result.orphans}")
    print(f"secrets found in the bridge's DEBUG log: {result.secrets_in_logs or 'none'}")
    print(result.line())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
