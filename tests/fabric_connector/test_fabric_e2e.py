"""The Fabric main job end to end: dev peer, chaincode, pool, store, bridge, requesters."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector import runtime
from connector.config import Config
from connector.fabric import runtime as fabric_runtime
from connector.fabric.requester import FabricRequester
from connector.states import State
from enclave_bridge.attestation import SimulatedAttester
from enclave_bridge.identity import generate_identity, save_sealed, seal, worker_record
from tcbridge_devpeer.launcher import DevPeerProcess
from tests.fabric_connector.peer import gateway_for

PASSPHRASE = "fabric e2e passphrase"
JOBS = [
    ("echo-result", ["hello fabric"], "RESULT: hello fabric"),
    ("json-extract", ['{"a":{"b":[1,2,3]}}', "/a/b/2"], "3"),
    ("price-median", ['[{"source":"x","price":"1"},{"source":"y","price":"3"}]'],
     '"median":"2"'),
    ("heart-disease-eval", ["label: 45 1 3 120 240 0 1 150 0 1.2 2 0 3 0"],
     "risk of heart disease"),
]


def fabric_config(folder: Path, peer: DevPeerProcess) -> Config:
    config = Config(source=folder / "tcbridge.toml")
    config.bridge.database = "sqlite:///var/tcbridge.db"
    config.bridge.chain = "fabric"
    config.fabric.connection = str(peer.folder / "connection.json")
    admin = peer.info["identities"]["admin"]
    config.fabric.msp_id = admin["mspId"]
    config.fabric.cert_path = admin["certPath"]
    config.fabric.key_path = admin["keyPath"]
    config.fabric.poll_interval = 0.05
    config.pool.processes = 2
    return config


@pytest.fixture
def passphrase() -> Iterator[None]:
    os.environ[runtime.PASSPHRASE_ENV] = PASSPHRASE
    yield
    os.environ.pop(runtime.PASSPHRASE_ENV, None)


async def test_orders_of_every_workload_complete_and_verify(
    tmp_path: Path, devpeer: DevPeerProcess, passphrase: None
) -> None:
    """Requesters of two organisations get verified results; the chaincode stores each hash."""
    config = fabric_config(tmp_path, devpeer)
    folder = config.path(config.pool.identities_dir)
    folder.mkdir(parents=True)
    records = []
    for n in range(2):
        keys = generate_identity(f"fabric-e2e-{n}-{os.getpid()}-{tmp_path.name}")
        save_sealed(folder / f"{keys.worker_id}.sealed", seal(keys, PASSPHRASE, scrypt_n=2**10))
        records.append(worker_record(keys, SimulatedAttester().evidence_for(keys)))
    async with fabric_runtime.open_gateway(config) as operator:
        lines = await fabric_runtime.register_workers(operator, records)
        assert all(line.startswith("registered") for line in lines)
        assert all(line.startswith("unchanged") for line in
                   await fabric_runtime.register_workers(operator, records))

    gateways = [gateway_for(devpeer, name) for name in ("user1", "user2", "org2user1")]
    async with fabric_runtime.open_fabric_bridge(config) as bridge:
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop))
        try:
            requesters = [FabricRequester(gw) for gw in gateways]
            submitted = []
            for n, (workload, inputs, expected) in enumerate(JOBS):
                requester = requesters[n % len(requesters)]
                worker = await requester.worker(records[n % 2].worker_id)
                sub = await requester.submit(worker, workload, inputs)
                submitted.append((requester, sub, expected))
            for requester, sub, expected in submitted:
                completion = await requester.wait_completion(sub, timeout=60)
                checked = await requester.check(sub, completion)
                assert checked.ok, checked.verdict.reason
                assert checked.onchain_hash_ok
                assert expected in checked.outputs[0].data.decode()
            for _ in range(100):
                counts = await bridge.store.counts_by_state()
                if counts.get(State.COMPLETED) == len(JOBS):
                    break
                await asyncio.sleep(0.05)
            assert counts.get(State.COMPLETED) == len(JOBS)
            assert bridge.submitter.stats.committed >= 1

            # What `tcbridge submit --chain fabric --identity user2` and
            # `tcbridge status --chain fabric` run.
            out = await fabric_runtime.submit_and_wait(
                config, "user2", None, records[0].worker_id, "echo-result", ["cli"],
                wait=True, timeout=60,
            )
            assert out["verified"] is True and out["outputs"] == ["RESULT: cli"]
            status = await fabric_runtime.fabric_status(config)
            assert status["chain"] == "fabric:mychannel"
            assert status["checkpoint"]["block"] >= out["block"]
            await bridge._monitor()
            assert bridge.health.problems() == []
            assert bridge.health.metrics["work_orders"][(("state", "COMPLETED"),)] >= 4
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
            for gw in gateways:
                await gw.close()
