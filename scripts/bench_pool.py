"""Enclave pool throughput against its hardware bound (``scripts/bench-pool``).

Every work order costs one RSA-3072 OAEP decryption (the session key), the
most expensive step, so no pool on this machine can beat

    bound = (RSA-3072 OAEP decryptions per second on one core) x cores.

The run measures that rate first, then runs the pool at its default process
count on ``echo-result`` work orders with 1 KiB of input and full crypto
(fresh session key, per-item IVs, requester signature, worker signature,
EIP-712 result signature), built by the requester module before the clock
starts. It prints orders per second, p50/p99 latency, and the ratio to the
bound; then the same for Avalon-style orders (SHA-1 OAEP, shared IV) on a
separate line. The last line is ``pool_ratio=<tcbridge-style ratio>``.

The machine's cores may be shared with other programs, which lowers both
the measured bound and the pool's rate, not always equally. So the run is
``--rounds`` rounds (default 3), each an RSA measurement followed by one
run of each style; a round's bound is the faster of the RSA measurements
just before and just after its runs, and ``pool_ratio`` is the median of
the rounds' tcbridge-style ratios (not the best: no round is picked for
being lucky). Each line also gives ``cpu_ratio``: the CPU time of one
decryption over the CPU time the pool spent per order, parent and
processes (shown apart), which other programs skew far less.

The load generator is a few coroutines in the pool's own parent process
(no extra process competes for the cores), every request is built and
encrypted before the clock starts, and warm-up orders are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from enclave_bridge.identity import generate_identity, seal
from enclave_bridge.pool import EnclavePool, PoolJob, open_pool
from enclave_bridge.processor import EthereumTarget
from enclave_bridge.requester import Style, WorkerDetails, build_work_order
from enclave_bridge.result_signature import EthereumDomain

TARGET_RATIO = 0.6
STYLES: tuple[Style, ...] = ("tcbridge", "avalon")
INPUT_BYTES = 1024
PASSPHRASE = "bench-only passphrase"
DOMAIN = EthereumDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")


@dataclass(frozen=True)
class Run:
    orders: int
    seconds: float
    latencies: list[float]
    errors: int
    # CPU seconds spent by the parent and the pool processes during the run.
    cpu: float
    # The parent's share of ``cpu`` (the pool's hand-over and the load generator).
    parent_cpu: float

    @property
    def rate(self) -> float:
        return self.orders / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class RsaRate:
    wall: float  # decryptions per wall-clock second
    cpu: float  # decryptions per CPU second of this process


def rsa_decrypt_rate(seconds: float) -> RsaRate:
    """RSA-3072 OAEP (SHA-256) decryptions per second on one core."""
    key = generate_identity("bench-rsa").encryption_key
    oaep = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()),
        algorithm=hashes.SHA256(),
        label=None,
    )
    ciphertext = key.public_key().encrypt(os.urandom(32), oaep)
    count = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            key.decrypt(ciphertext, oaep)
        count += 20
    return RsaRate(wall=count / elapsed, cpu=count / (time.process_time() - cpu_start))


def children_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of the given child processes (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def build_jobs(
    worker: WorkerDetails, style: Style, count: int, tag: str
) -> list[PoolJob]:
    requester_key = os.urandom(32)
    payload = os.urandom(INPUT_BYTES // 2).hex().encode()
    jobs = []
    for n in range(count):
        sent = build_work_order(
            worker, "echo-result", [payload], requester_key=requester_key, style=style
        )
        request = json.dumps(sent.request, separators=(",", ":")).encode()
        target = EthereumTarget(
            domain=DOMAIN,
            order_key=n.to_bytes(32, "big"),
            request_hash=os.urandom(32),
        )
        jobs.append(PoolJob(f"bench:{tag}:{n}", request, target))
    return jobs


async def drive(
    pool: EnclavePool, jobs: Sequence[PoolJob], seconds: float, clients: int
) -> Run:
    """Keep ``clients`` orders in flight until the time is up or jobs run out."""
    queue = list(reversed(jobs))
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        while queue and time.perf_counter() < deadline:
            job = queue.pop()
            began = time.perf_counter()
            result = await pool.submit(job)
            latencies.append(time.perf_counter() - began)
            if result.status != 0:
                errors += 1

    pids = pool.pids()
    children_start, parent_start = children_cpu_seconds(pids), time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    parent = time.process_time() - parent_start
    if pool.pids() != pids:
        raise RuntimeError("a pool process was replaced during the run")
    children = children_cpu_seconds(pids) - children_start

    return Run(len(latencies), elapsed, latencies, errors, parent + children, parent)


def report(style: str, run: Run, bound: float, rsa: RsaRate) -> None:
    cpu_ms = run.cpu / max(1, run.orders) * 1000
    parent_ms = run.parent_cpu / max(1, run.orders) * 1000
    rsa_ms = 1000 / rsa.cpu
    print(
        f"{style}: {run.rate:.0f} work orders/s ({run.orders} in {run.seconds:.2f} s), "
        f"p50 {run.percentile(0.5) * 1000:.2f} ms, "
        f"p99 {run.percentile(0.99) * 1000:.2f} ms, errors {run.errors}, "
        f"ratio {run.rate / bound:.3f}; CPU per order {cpu_ms:.2f} ms "
        f"(parent {parent_ms:.2f}), RSA {rsa_ms:.2f} ms of it "
        f"(cpu_ratio {rsa_ms / cpu_ms:.3f})"
    )


@dataclass(frozen=True)
class Round:
    rsa: RsaRate
    bound: float
    runs: Mapping[str, Run]

    def ratio(self, style: str) -> float:
        return self.runs[style].rate / self.bound

    def cpu_ratio(self, style: str) -> float:
        run = self.runs[style]
        return (run.orders / self.rsa.cpu) / run.cpu


async def bench(args: argparse.Namespace) -> int:
    cores = os.cpu_count() or 1
    print(f"load average: {os.getloadavg()[0]:.2f} (other programs share the cores)")
    print(
        f"measuring RSA-3072 OAEP decryption on one core ({args.rsa_seconds:g} s) ..."
    )
    first = rsa_decrypt_rate(args.rsa_seconds)

    keys = generate_identity("bench-worker")
    sealed = seal(keys, PASSPHRASE, scrypt_n=2**14)
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="tcbridge-bench-") as tmp:
        async with open_pool(
            [sealed], PASSPHRASE, Path(tmp) / "state.db", processes=args.processes
        ) as pool:
            record = pool.worker_records()[keys.worker_id]
            worker = WorkerDetails.from_json(
                dict(record.details), worker_id=keys.worker_id
            )
            # More orders than the pool can finish in time: runs end on the clock.
            count = int(first.cpu * cores * args.seconds) + 200
            print(f"{count} work orders of each style per round, built before it")
            await drive(pool, build_jobs(worker, "tcbridge", 50, "warm"), 5.0, 8)

            clients = args.clients or pool.size * pool.depth
            print(f"running {pool.size} processes, {clients} orders in flight ...")
            before = first
            for n in range(args.rounds):
                jobs = {s: build_jobs(worker, s, count, f"{s}{n}") for s in STYLES}
                runs: dict[str, Run] = {
                    style: await drive(pool, jobs[style], args.seconds, clients)
                    for style in STYLES
                }
                # The next round's RSA measurement doubles as this one's "after".
                after = rsa_decrypt_rate(args.rsa_seconds)
                rsa = before if before.wall >= after.wall else after
                rounds.append(Round(rsa, rsa.wall * cores, runs))
                before = after
            stats = pool.stats()

    for n, done in enumerate(rounds, 1):
        print(
            f"round {n}: rsa3072_decrypt_per_core={done.rsa.wall:.0f}/s "
            f"cores={cores} bound={done.bound:.0f}/s"
        )
        for style, run in done.runs.items():
            report(style, run, done.bound, done.rsa)
    print(f"pool stats: {stats}")
    for style in STYLES:
        print(
            f"{style}_ratio={statistics.median(r.ratio(style) for r in rounds):.3f} "
            f"{style}_cpu_ratio="
            f"{statistics.median(r.cpu_ratio(style) for r in rounds):.3f} "
            f"(medians of {len(rounds)} rounds)"
        )
    ratio = statistics.median(r.ratio("tcbridge") for r in rounds)
    met = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"target pool_ratio >= {TARGET_RATIO}: {met}")
    print(f"pool_ratio={ratio:.3f}")

    failed = any(run.errors for done in rounds for run in done.runs.values())
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each run")
    parser.add_argument("--rsa-seconds", type=float, default=1.5)
    parser.add_argument(
        "--rounds", type=int, default=3, help="pool_ratio is the median of rounds"
    )
    parser.add_argument("--processes", type=int, default=None, help="default: cores")
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help="orders in flight (default: 2 x capacity)",
    )
    return asyncio.run(bench(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
