"""The development peer with a test-only chaincode hook, and small Fabric helpers.

TEST-ONLY HOOK: the real tcbridge chaincode only emits well-formed events.
To push malformed events through the real peer, ``start_hooked_peer``
runs the development peer on a chaincode folder of its own (in the test's
temporary directory) whose entry point serves the real ``TcbridgeRegistry``
as the default contract plus a ``TestHooks`` contract with one function,
``TestHooks:emitRaw(name, payloadBase64)``, that sets any event. It is
never part of the shipped chaincode.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connector.fabric.gateway import FabricGateway
from connector.fabric.identity import FabricIdentity, load_identity
from enclave_bridge.errors import NodeUnavailable
from tcbridge_devpeer.chaincode import CHAINCODE_DIR
from tcbridge_devpeer.launcher import START_TIMEOUT, DevPeerProcess

CHANNEL = "mychannel"
CHAINCODE = "tcbridge"

_HOOK_INDEX = """'use strict';
// TEST-ONLY chaincode entry: the real registry plus an event hook for tests.
const {Contract} = require('fabric-contract-api');
const {TcbridgeRegistry} = require(%s);

class TestHooks extends Contract {
    constructor() {
        super('TestHooks');
    }

    async emitRaw(ctx, name, payloadBase64) {
        ctx.stub.setEvent(name, Buffer.from(payloadBase64, 'base64'));
        return '';
    }
}

module.exports.contracts = [TcbridgeRegistry, TestHooks];
"""

_RUN_PEER = (
    "import sys, pathlib, tcbridge_devpeer.chaincode as cc;"
    "cc.CHAINCODE_DIR = pathlib.Path(sys.argv.pop(1));"
    "from tcbridge_devpeer.__main__ import main; main()"
)


def hook_chaincode(folder: Path) -> Path:
    """Write the test-only chaincode entry point into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    registry = json.dumps(str(CHAINCODE_DIR / "lib" / "registry.js"))
    (folder / "index.js").write_text(_HOOK_INDEX % registry)
    (folder / "package.json").write_text(
        json.dumps({"name": "tcbridge-test-hooks", "version": "1.0.0", "main": "index.js"})
    )
    link = folder / "node_modules"
    if not link.exists():
        link.symlink_to(CHAINCODE_DIR / "node_modules")
    return folder


def start_hooked_peer(folder: Path, port: int = 0) -> DevPeerProcess:
    """The development peer (a child process on 127.0.0.1) with the test hook."""
    folder.mkdir(parents=True, exist_ok=True)
    code = hook_chaincode(folder / "hook-chaincode")
    info_path = folder / "connection.json"
    info_path.unlink(missing_ok=True)
    with (folder / "peer.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _RUN_PEER, str(code), "--folder", str(folder),
             "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not info_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
            tail = (folder / "peer.log").read_text(errors="replace")[-2000:]
            raise NodeUnavailable(f"the hooked development peer did not start:\n{tail}")
        time.sleep(0.05)
    return DevPeerProcess(folder, process, json.loads(info_path.read_text()))


def identity_of(peer: DevPeerProcess, name: str = "user1") -> FabricIdentity:
    entry = peer.info["identities"][name]
    return load_identity(entry["mspId"], Path(entry["certPath"]), Path(entry["keyPath"]))


def gateway_for(peer: DevPeerProcess, name: str = "user1") -> FabricGateway:
    return FabricGateway(peer.address, identity_of(peer, name), CHANNEL, CHAINCODE)


class WorkerKey:
    """A secp256k1 worker key: raw bytes for signing, PEM for the registry."""

    def __init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256K1())
        self.private = key.private_numbers().private_value.to_bytes(32, "big")
        self.pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


async def invoke(gateway: FabricGateway, function: str, *args: str) -> tuple[str, int, int]:
    """Endorse, submit and wait: ``(tx id, validation code, block)``."""
    prepared = await gateway.endorse(gateway.propose(function, *args))
    await gateway.submit(prepared.tx_id, prepared.envelope)
    code, block = await gateway.commit_status(prepared.tx_id, timeout=30)
    return prepared.tx_id, code, block


async def register_worker(gateway: FabricGateway, worker_id: str, pem: str,
                          details: str = "{}") -> int:
    """``workerRegister``; returns its block."""
    _, code, block = await invoke(
        gateway, "workerRegister", worker_id, "1", "org", "[]", details, pem
    )
    assert code == 0
    return block


async def submit_order(gateway: FabricGateway, work_order_id: str, worker_id: str,
                       request: str = '{"test":true}') -> tuple[str, str, int]:
    """``workOrderSubmit``: ``(order key, tx id, block)``."""
    deadline = str(int(time.time()) + 3600)
    prepared = await gateway.endorse(gateway.propose(
        "workOrderSubmit", work_order_id, worker_id, "requester", request, deadline
    ))
    await gateway.submit(prepared.tx_id, prepared.envelope)
    code, block = await gateway.commit_status(prepared.tx_id, timeout=30)
    assert code == 0
    return json.loads(prepared.result)["orderKey"], prepared.tx_id, block


async def emit_raw(gateway: FabricGateway, name: str, payload: bytes) -> tuple[str, int]:
    """TEST-ONLY: set an arbitrary event through the hook contract."""
    tx_id, code, block = await invoke(
        gateway, "TestHooks:emitRaw", name, base64.b64encode(payload).decode()
    )
    assert code == 0
    return tx_id, block


async def wait_until(predicate: object, timeout: float = 15.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
