"""The demo on Fabric: the main job end to end on the development peer.

Starts the development peer with the tcbridge chaincode (127.0.0.1, a free
port), creates two worker identities and registers them in the chaincode
(their verifying keys from the identities), starts the bridge as its own
process (``tcbridge run`` with ``[bridge] chain = "fabric"``: embedded
pool, SQLite), submits work orders of every built-in workload as
requesters of two organisations (client identities from the peer's test
CA), waits for each completion event, verifies the EEA response and the
response hash the chaincode stored, prints a table, stops everything it
started by PID, and ends with ``verified N/N work orders``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from connector.demo import JOBS, ROOT, Row, _print_table, _tcbridge
from connector.fabric.gateway import FabricGateway
from connector.fabric.identity import load_identity
from connector.fabric.requester import FabricRequester, FabricSubmitted
from tcbridge_devpeer.launcher import DevPeerProcess

REQUESTERS = ("user1", "user2", "org2user1")


def _write_config(folder: Path, peer: DevPeerProcess) -> Path:
    admin = peer.info["identities"]["admin"]
    config = folder / "tcbridge.toml"
    config.write_text(
        "[bridge]\n"
        'database = "sqlite:///var/tcbridge.db"\n'
        'data_dir = "var"\n'
        'chain = "fabric"\n'
        "[fabric]\n"
        f"connection = {json.dumps(str(peer.folder / 'connection.json'))}\n"
        f"msp_id = {json.dumps(admin['mspId'])}\n"
        f"cert_path = {json.dumps(admin['certPath'])}\n"
        f"key_path = {json.dumps(admin['keyPath'])}\n"
        "poll_interval = 0.1\n"
        "[pool]\n"
        "processes = 2\n"
        'identities_dir = "var/workers"\n'
    )
    return config


def _gateway(peer: DevPeerProcess, name: str) -> FabricGateway:
    entry = peer.info["identities"][name]
    identity = load_identity(
        entry["mspId"], Path(entry["certPath"]), Path(entry["keyPath"])
    )
    return FabricGateway(
        peer.address, identity, str(peer.info["channel"]), str(peer.info["chaincode"])
    )


async def _submit_and_verify(
    peer: DevPeerProcess, worker_ids: list[str], count: int, timeout: float
) -> list[Row]:
    gateways = [_gateway(peer, name) for name in REQUESTERS]
    try:
        requesters = [FabricRequester(gw) for gw in gateways]
        workers = [await requesters[0].worker(w) for w in worker_ids]
        items: list[tuple[Row, FabricRequester, FabricSubmitted]] = []
        for n in range(count):
            workload, inputs, _ = JOBS[n % len(JOBS)]
            requester = requesters[n % len(requesters)]
            sub = await requester.submit(workers[n % len(workers)], workload, inputs)
            row = Row(n + 1, workload, REQUESTERS[n % len(REQUESTERS)], "chaincode")
            items.append((row, requester, sub))
        print(f"submitted {len(items)} work orders; waiting for their completions",
              flush=True)
        await asyncio.gather(*(_verify(*item, timeout) for item in items))
    finally:
        for gw in gateways:
            await gw.close()
    return [row for row, _, _ in items]


async def _verify(
    row: Row, requester: FabricRequester, sub: FabricSubmitted, timeout: float
) -> None:
    completion = await requester.wait_completion(sub, timeout)
    row.seconds = time.monotonic() - sub.submitted_at
    checked = await requester.check(sub, completion)
    row.status = completion.status
    row.output = (
        checked.outputs[0].data.decode("utf-8", "replace")
        if checked.outputs else checked.verdict.reason
    )
    expected = next(e for w, _, e in JOBS if w == row.workload)
    row.verified = checked.ok and expected in row.output


def run_fabric_demo(count: int, timeout: float, keep: bool, folder: Path) -> int:
    peer = DevPeerProcess.start(folder / "devpeer")
    rows: list[Row] = []
    try:
        print(f"development peer {peer.address} (pid {peer.process.pid}), channel"
              f" {peer.info['channel']}, chaincode {peer.info['chaincode']}")
        config = _write_config(folder, peer)
        env = dict(os.environ)
        env["TCBRIDGE_POOL_PASSPHRASE"] = secrets.token_hex(16)
        worker_ids = []
        for name in ("demo-worker-1", "demo-worker-2"):
            created = _tcbridge(config, env, "worker", "create", "--name", name)
            worker_ids.append(json.loads(created)["workerId"])
        for line in _tcbridge(config, env, "worker", "register").splitlines():
            print(f"  {line}")

        log_path = folder / "bridge.log"
        with open(log_path, "w") as log_file:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", "--config", str(config), "run"],
                env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            )
        print(f"bridge pid {bridge.pid}, log {log_path}")
        try:
            rows = asyncio.run(_submit_and_verify(peer, worker_ids, count, timeout))
        finally:
            bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(timeout=30)
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait()
    finally:
        peer.stop()
    _print_table(rows)
    ok = sum(1 for r in rows if r.verified)
    if not keep and rows and ok == len(rows):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept {folder} (bridge.log holds the bridge's log)")
    print(f"verified {ok}/{len(rows)} work orders")
    return 0 if rows and ok == len(rows) else 1
