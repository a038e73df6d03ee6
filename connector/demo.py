"""The demo: the main job end to end on a fresh local chain.

Starts anvil on a free loopback port, deploys the registries and the
example consumer, creates and registers two worker identities, starts the
bridge as its own process (``tcbridge run``: embedded pool, SQLite),
submits work orders of every built-in workload as independent requesters
would (one through the example consumer, whose callback stores the
result), waits for each completion, verifies it as a requester would,
prints a table, stops everything it started, and ends with
``verified N/N work orders``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from connector.devnet import DEV_PRIVATE_KEYS, open_anvil
from connector.ethereum.rpc import JsonRpcClient
from connector.requester_client import EthereumRequester, Submitted

ROOT = Path(__file__).resolve().parent.parent

# (workload, inputs, what a correct answer contains)
JOBS: list[tuple[str, list[str], str]] = [
    ("echo-result", ["hello from a requester"], "RESULT: hello from a requester"),
    (
        "heart-disease-eval",
        ["label: 45 1 3 120 240 0 1 150 0 1.2 2 0 3 0"],
        "risk of heart disease",
    ),
    ("json-extract", ['{"data":[{"price":"101.5"}]}', "/data/0/price"], '"101.5"'),
    (
        "price-median",
        [
            '[{"source":"a","price":"10"},{"source":"b","price":"12"},{"source":"c","price":"11"}]'
        ],
        '"median":"11"',
    ),
]


@dataclass
class Row:
    number: int
    workload: str
    requester: str
    via: str
    status: int | None = None
    verified: bool = False
    output: str = ""
    seconds: float = 0.0


def _write_config(folder: Path, rpc_url: str) -> Path:
    config = folder / "tcbridge.toml"
    config.write_text(
        "[bridge]\n"
        'database = "sqlite:///var/tcbridge.db"\n'
        'data_dir = "var"\n'
        "[ethereum]\n"
        f'rpc_url = "{rpc_url}"\n'
        "chain_id = 31337\n"
        'deployment = "var/deployment.json"\n'
        "confirmations = 1\n"
        "poll_interval = 0.2\n"
        "batch_wait_s = 0.1\n"
        "[pool]\n"
        "processes = 2\n"
        'identities_dir = "var/workers"\n'
    )
    return config


def _tcbridge(config: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector.cli",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
            *args,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"tcbridge {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


async def _submit_and_verify(
    rpc_url: str,
    deployment: dict[str, object],
    worker_ids: list[str],
    count: int,
    timeout: float,
) -> list[Row]:
    async with JsonRpcClient(rpc_url) as rpc:
        items = await _submit_all(rpc, deployment, worker_ids, count)
        print(
            f"submitted {len(items)} work orders; waiting for their completions",
            flush=True,
        )
        await _wait_and_verify(items, timeout)
    return [row for row, _, _ in items]


async def _submit_all(
    rpc: JsonRpcClient, deployment: dict[str, object], worker_ids: list[str], count: int
) -> list[tuple[Row, EthereumRequester, Submitted]]:
    contracts = deployment["contracts"]
    assert isinstance(contracts, dict)
    out = []
    requesters = [
        EthereumRequester(
            rpc,
            bytes.fromhex(DEV_PRIVATE_KEYS[2 + i % 4][2:]),
            31337,
            contracts["WorkOrderRegistry"],
            contracts["WorkerRegistry"],
        )
        for i in range(4)
    ]
    workers = [await requesters[0].worker(w) for w in worker_ids]
    for n in range(count):
        workload, inputs, _ = JOBS[n % len(JOBS)]
        requester = requesters[n % len(requesters)]
        worker = workers[n % len(workers)]
        if n == count - 1 and count > 1:
            # The owner of the example consumer asks it to request the computation.
            owner = EthereumRequester(
                rpc,
                bytes.fromhex(DEV_PRIVATE_KEYS[0][2:]),
                31337,
                contracts["WorkOrderRegistry"],
                contracts["WorkerRegistry"],
            )
            sub = await owner.submit_via_consumer(
                contracts["ExampleConsumer"], worker, workload, inputs
            )
            out.append(
                (Row(n + 1, workload, owner.address, "ExampleConsumer"), owner, sub)
            )
            continue
        sub = await requester.submit(worker, workload, inputs)
        out.append((Row(n + 1, workload, requester.address, "direct"), requester, sub))
    return out


async def _wait_and_verify(
    items: list[tuple[Row, EthereumRequester, Submitted]], timeout: float
) -> None:
    async def one(row: Row, requester: EthereumRequester, sub: Submitted) -> None:
        await requester.receipt(sub.tx_hash)
        completion = await requester.wait_completion(sub.order_key, timeout)
        row.seconds = time.monotonic() - sub.submitted_at
        checked = await requester.check(sub, completion)
        row.status = completion.status
        row.output = (
            checked.outputs[0].data.decode("utf-8", "replace")
            if checked.outputs
            else checked.verdict.reason
        )
        expected = next(e for w, _, e in JOBS if w == row.workload)
        row.verified = checked.ok and expected in row.output
        if sub.via_consumer:
            received, status, response = await requester.consumer_result(
                sub.via_consumer, sub.order_key
            )
            row.verified = (
                row.verified
                and received
                and status == 0
                and response == completion.response
            )

    await asyncio.gather(*(one(*item) for item in items))


def _print_table(rows: list[Row]) -> None:
    print(
        f"{'#':>3}  {'workload':<19} {'via':<16} {'requester':<12} {'status':>6} {'ok':<3} {'secs':>5}  output"
    )
    for r in rows:
        out = r.output if len(r.output) <= 60 else r.output[:57] + "..."
        print(
            f"{r.number:>3}  {r.workload:<19} {r.via:<16} {r.requester[:10]:<12} "
            f"{r.status if r.status is not None else '-':>6} {'yes' if r.verified else 'NO':<3} "
            f"{r.seconds:5.1f}  {out}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--count", type=int, default=8, help="how many work orders (default 8)"
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--chain", choices=["ethereum", "fabric"], default="ethereum",
                        help="anvil (default) or the Fabric development peer")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")

    folder = Path(tempfile.mkdtemp(prefix="tcbridge-demo-"))
    print(f"working folder: {folder}")
    if args.chain == "fabric":
        from connector.fabric.demo import run_fabric_demo

        return run_fabric_demo(args.count, args.timeout, args.keep, folder)
    with open_anvil(block_time=0.25, gas_limit=300_000_000) as node:
        print(f"anvil {node.url} (pid {node.pid})")
        config = _write_config(folder, node.url)
        env = dict(os.environ)
        env.update(
            {
                # A caller (the secrets test) may choose it; else a fresh one.
                "TCBRIDGE_POOL_PASSPHRASE": os.environ.get(
                    "TCBRIDGE_POOL_PASSPHRASE", secrets.token_hex(16)
                ),
                "TCBRIDGE_OPERATOR_KEY": DEV_PRIVATE_KEYS[0],
                "TCBRIDGE_RELAYER_KEY": DEV_PRIVATE_KEYS[1],
            }
        )
        deployment = json.loads(_tcbridge(config, env, "deploy", "--with-consumer"))
        for name, address in deployment["contracts"].items():
            print(f"  {name:<20} {address}")
        worker_ids = []
        for name in ("demo-worker-1", "demo-worker-2"):
            worker_ids.append(
                json.loads(_tcbridge(config, env, "worker", "create", "--name", name))[
                    "workerId"
                ]
            )
        for line in _tcbridge(config, env, "worker", "register").splitlines():
            print(f"  {line}")

        log_path = folder / "bridge.log"
        with open(log_path, "w") as log_file:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", "--config", str(config), "run"],
                env=env,
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        print(f"bridge pid {bridge.pid}, log {log_path}")
        try:
            rows = asyncio.run(
                _submit_and_verify(
                    node.url, deployment, worker_ids, args.count, args.timeout
                )
            )
        finally:
            bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(timeout=30)
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait()
        _print_table(rows)
    ok = sum(1 for r in rows if r.verified)
    if not args.keep and ok == len(rows):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept {folder} (bridge.log holds the bridge's log)")
    print(f"verified {ok}/{len(rows)} work orders")
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
