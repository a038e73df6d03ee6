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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
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
INPUT_BYTES = 1024
PASSPHRASE = "bench-only passphrase"
DOMAIN = EthereumDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")


@dataclass(frozen=True)
class Run:
    orders: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.orders / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rsa_decrypt_rate(seconds: float) -> float:
    """RSA-3072 OAEP (SHA-256) decryptions per second on one core."""
    key = generate_identity("bench-rsa").encryption_key
    oaep = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()),
        algorithm=hashes.SHA256(),
        label=None,
    )
    ciphertext = key.public_key().encrypt(os.urandom(32), oaep)
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            key.decrypt(ciphertext, oaep)
        count += 20
    return count / elapsed


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
        order_key = f"bench:{tag}:{n}"
        target = EthereumTarget(
            domain=DOMAIN,
            order_key=n.to_bytes(32, "big"),
            request_hash=os.urandom(32),
        )
        jobs.append(PoolJob(order_key=order_key, request=request, target=target))
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

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return Run(
        orders=len(latencies), seconds=elapsed, latencies=latencies, errors=errors
    )


async def bench(args: argparse.Namespace) -> int:
    cores = os.cpu_count() or 1
    print(
        f"measuring RSA-3072 OAEP decryption on one core ({args.rsa_seconds:g} s) ..."
    )
    per_core = rsa_decrypt_rate(args.rsa_seconds)
    bound = per_core * cores
    print(
        f"rsa3072_decrypt_per_core={per_core:.0f}/s cores={cores} bound={bound:.0f}/s"
    )

    keys = generate_identity("bench-worker")
    sealed = seal(keys, PASSPHRASE, scrypt_n=2**14)
    with tempfile.TemporaryDirectory(prefix="tcbridge-bench-") as tmp:
        async with open_pool(
            [sealed], PASSPHRASE, Path(tmp) / "state.db", processes=args.processes
        ) as pool:
            record = pool.worker_records()[keys.worker_id]
            worker = WorkerDetails.from_json(
                dict(record.details), worker_id=keys.worker_id
            )
            # Enough orders that the run ends on time, not on an empty queue.
            count = int(bound * args.seconds * 1.2) + 200
            print(f"building {count} work orders of each style ...")
            ours = build_jobs(worker, "tcbridge", count, "tc")
            avalon = build_jobs(worker, "avalon", count, "av")
            warm = build_jobs(worker, "tcbridge", 50, "warm")
            await drive(pool, warm, 5.0, args.clients)

            print(f"running {pool.size} processes, {args.clients} orders in flight ...")
            runs = {
                "tcbridge": await drive(pool, ours, args.seconds, args.clients),
                "avalon": await drive(pool, avalon, args.seconds, args.clients),
            }
            stats = pool.stats()

    for style, run in runs.items():
        print(
            f"{style}: {run.rate:.0f} work orders/s ({run.orders} in {run.seconds:.2f} s), "
            f"p50 {run.percentile(0.5) * 1000:.2f} ms, p99 {run.percentile(0.99) * 1000:.2f} ms, "
            f"errors {run.errors}, ratio {run.rate / bound:.3f}"
        )
    print(f"pool stats: {stats}")
    ratio = runs["tcbridge"].rate / bound
    met = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"target pool_ratio >= {TARGET_RATIO}: {met}")
    print(f"pool_ratio={ratio:.3f}")
    return 0 if runs["tcbridge"].errors == 0 and runs["avalon"].errors == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each run")
    parser.add_argument("--rsa-seconds", type=float, default=1.5)
    parser.add_argument("--processes", type=int, default=None, help="default: cores")
    parser.add_argument("--clients", type=int, default=16, help="orders kept in flight")
    return asyncio.run(bench(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
