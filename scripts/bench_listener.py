"""The EEA listener's throughput against the pool it fronts (``scripts/bench-listener``).

One run, two measurements on the same pool:

1. **Pool**: ``echo-result`` work orders submitted straight to the pool
   (``pool.submit``) with a fixed number in flight: work orders per second,
   half of them before the listener run and half after, so a change of load
   on the shared cores weighs on both measurements alike.
2. **Listener**: the same kind of orders (fresh ones: a pool serves a
   request once) as synchronous ``WorkOrderSubmit`` calls over loopback
   HTTP/1.1 keep-alive connections, from a separate load-generator process.
   It prints requests per second, p50/p99 latency, errors, and the CPU time
   per request of the listener's process (HTTP, validation, order book) and
   of the pool processes.

Requests are built before the clock starts; the load generator only writes
precomputed bytes and reads answers, so it takes little of the two cores it
shares with the server and the pool. The last line is
``listener_ratio=<listener rps / pool throughput>``; the target is 0.7.
A CPU-time ratio is printed too: it does not move with other programs'
load, which the wall-clock rates do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_RATIO = 0.7
INPUT_BYTES = 256
PASSPHRASE = "bench-only passphrase"


# --- load generator (a separate process) ------------------------------------------


def _client_run(
    host: str, port: int, bodies: list[bytes], clients: int
) -> dict[str, object]:
    """Closed-loop keep-alive connections on one thread, non-blocking sockets.

    Each request is fully formed bytes (head and body) before the clock
    starts; per answer the loop reads, finds the end of the head, takes
    Content-Length and waits for that many bytes. No asyncio and no HTTP
    library: a third or less of an asyncio client's CPU per request
    (measured here), which matters because this process shares the two
    cores with the server.
    """
    requests = [
        (
            f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    requests.reverse()
    latencies: list[float] = []
    errors = 0
    selector = selectors.DefaultSelector()
    # Per connection: [socket, bytes received so far, start time].
    conns: list[list[Any]] = []
    for _ in range(min(clients, len(requests))):
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conns.append([sock, b"", 0.0])

    def send(conn: list[Any]) -> None:
        if not requests:
            selector.unregister(conn[0])
            return
        conn[1], conn[2] = b"", time.perf_counter()
        conn[0].sendall(requests.pop())

    start = time.perf_counter()
    for conn in conns:
        selector.register(conn[0], selectors.EVENT_READ, conn)
        send(conn)
    while selector.get_map():
        for key, _ in selector.select():
            conn = key.data
            chunk = conn[0].recv(1 << 16)
            if not chunk:
                raise ConnectionError("the listener closed a connection")
            conn[1] += chunk
            head_end = conn[1].find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = conn[1][:head_end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
            if len(conn[1]) < head_end + 4 + length:
                continue
            latencies.append(time.perf_counter() - conn[2])
            answer = conn[1][head_end + 4 :]
            if b'"result":' not in answer:
                errors += 1
            send(conn)
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn[0].close()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "errors": errors,
        "latencies": latencies,
    }


def client_main(args: argparse.Namespace) -> int:
    raw = Path(args.bodies).read_bytes()
    bodies, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset : offset + 4], "big")
        bodies.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    result = _client_run(args.host, args.port, bodies, args.clients)
    # The run's own CPU: start-up and reading the bodies came before "go".
    result["cpu"] = time.process_time() - cpu
    print(json.dumps(result), flush=True)
    return 0


# --- the benchmark ---------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of the given processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0
    )


async def bench(args: argparse.Namespace) -> int:
    from enclave_bridge.identity import generate_identity, seal
    from enclave_bridge.listener import EeaListener, ListenerSettings, serve_listener
    from enclave_bridge.listener_book import OrderBook
    from enclave_bridge.pool import PoolJob, open_pool
    from enclave_bridge.requester import WorkerDetails, build_work_order

    print(f"load average: {os.getloadavg()[0]:.2f} (other programs share the cores)")
    keys = generate_identity("bench-listener-worker")
    sealed = seal(keys, PASSPHRASE, scrypt_n=2**14)
    payload = os.urandom(INPUT_BYTES // 2).hex().encode()

    with tempfile.TemporaryDirectory(prefix="tcbridge-bench-listener-") as tmp:
        async with open_pool(
            [sealed], PASSPHRASE, Path(tmp) / "state.db", processes=args.processes
        ) as pool:
            record = pool.worker_records()[keys.worker_id]
            worker = WorkerDetails.from_json(dict(record.details), keys.worker_id)

            def orders(count: int) -> list[bytes]:
                return [
                    json.dumps(
                        build_work_order(
                            worker, "echo-result", [payload], timeout_msecs=60_000
                        ).request,
                        separators=(",", ":"),
                    ).encode()
                    for _ in range(count)
                ]

            print(f"building {args.orders} work orders for each run ...")
            pool_jobs = [
                PoolJob(f"bench:pool:{n}", body)
                for n, body in enumerate(orders(args.orders))
            ]
            listener_bodies = orders(args.orders)
            warm = [PoolJob(f"bench:warm:{n}", b) for n, b in enumerate(orders(40))]
            await asyncio.gather(*(pool.submit(job) for job in warm))

            # 1. The pool alone: half before the listener run, half after, so
            # a load change on the shared cores weighs on both sides alike.
            async def pool_run(jobs: list[PoolJob]) -> tuple[float, float]:
                queue = list(reversed(jobs))

                async def pool_client() -> None:
                    while queue:
                        await pool.submit(queue.pop())

                started = time.perf_counter()
                cpu = time.process_time() + cpu_seconds(pool.pids())
                await asyncio.gather(*(pool_client() for _ in range(args.clients)))
                cpu = time.process_time() + cpu_seconds(pool.pids()) - cpu
                return time.perf_counter() - started, cpu

            half = len(pool_jobs) // 2
            first_seconds, first_cpu = await pool_run(pool_jobs[:half])

            # 2. The same through the listener, from another process.
            book = OrderBook(Path(tmp) / "listener.db")
            listener = EeaListener(pool, book, ListenerSettings(name="bench"))
            async with serve_listener(listener) as url:
                host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
                bodies_file = Path(tmp) / "bodies.bin"
                bodies_file.write_bytes(
                    b"".join(len(b).to_bytes(4, "big") + b for b in listener_bodies)
                )
                client = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--client",
                        "--host",
                        host,
                        "--port",
                        port,
                        "--clients",
                        str(args.clients),
                        "--bodies",
                        str(bodies_file),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert client.stdin is not None and client.stdout is not None
                line = await asyncio.to_thread(client.stdout.readline)
                if line.strip() != "ready":
                    client.kill()
                    raise SystemExit(f"the load generator did not start: {line!r}")
                server_cpu = time.process_time()
                pool_cpu = cpu_seconds(pool.pids())
                client.stdin.write("go\n")
                client.stdin.flush()
                output = await asyncio.to_thread(client.stdout.readline)
                server_cpu = time.process_time() - server_cpu
                pool_cpu = cpu_seconds(pool.pids()) - pool_cpu
                await asyncio.to_thread(client.wait)
            book.close()
            last_seconds, last_cpu = await pool_run(pool_jobs[half:])

    pool_seconds = first_seconds + last_seconds
    pool_rate = len(pool_jobs) / pool_seconds
    pool_cpu_per_order = (first_cpu + last_cpu) / len(pool_jobs)
    print(
        f"pool: {pool_rate:.0f} work orders/s ({len(pool_jobs)} in {pool_seconds:.2f} s, "
        f"half before and half after the listener run, {args.clients} in flight); "
        f"CPU per order {pool_cpu_per_order * 1000:.3f} ms (parent and processes)"
    )

    run = json.loads(output)
    requests = int(run["requests"])
    rate = requests / float(run["seconds"])
    latencies = list(run["latencies"])
    print(
        f"listener: {rate:.0f} requests/s synchronous WorkOrderSubmit echo-result "
        f"({requests} in {run['seconds']:.2f} s, {args.clients} connections), "
        f"p50 {percentile(latencies, 0.5) * 1000:.2f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms, errors {run['errors']}"
    )
    print(
        f"CPU per request: listener process {server_cpu / requests * 1000:.3f} ms "
        f"(HTTP, validation, order book, pool hand-over), pool processes "
        f"{pool_cpu / requests * 1000:.3f} ms, load generator "
        f"{float(run['cpu']) / requests * 1000:.3f} ms"
    )
    listener_cpu = (server_cpu + pool_cpu + float(run["cpu"])) / requests
    print(
        f"CPU-time ratio (pool CPU per order / listener-path CPU per request, "
        f"independent of other load): {pool_cpu_per_order / listener_cpu:.3f}"
    )
    ratio = rate / pool_rate
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"target listener_ratio >= {TARGET_RATIO}: {verdict}")
    print(f"listener_ratio={ratio:.3f}")
    return 0 if run["errors"] == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--orders", type=int, default=1500, help="work orders per run")
    parser.add_argument("--clients", type=int, default=16, help="orders in flight")
    parser.add_argument("--processes", type=int, default=None, help="pool processes")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
