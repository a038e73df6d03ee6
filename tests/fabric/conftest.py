"""Fixtures: the development peer with the real chaincode, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tcbridge_devpeer.chaincode import CHAINCODE_DIR
from tcbridge_devpeer.client import GatewayClient
from tcbridge_devpeer.launcher import DevPeerProcess

if not (CHAINCODE_DIR / "node_modules" / ".bin" / "fabric-chaincode-node").exists():
    pytest.skip(
        "chaincode/node_modules is missing: run ./scripts/setup",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def devpeer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPeerProcess]:
    peer = DevPeerProcess.start(tmp_path_factory.mktemp("devpeer"))
    yield peer
    peer.stop()


@pytest.fixture
async def client(devpeer: DevPeerProcess) -> AsyncIterator[GatewayClient]:
    gateway = GatewayClient(
        devpeer.address, devpeer.identity("user1"), "mychannel", "tcbridge"
    )
    yield gateway
    await gateway.close()


class WorkerKey:
    """A secp256k1 worker key: raw bytes for signing, PEM for the registry."""

    def __init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256K1())
        self.private = key.private_numbers().private_value.to_bytes(32, "big")
        self.pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            .decode()
        )


@pytest.fixture
def worker_key() -> WorkerKey:
    return WorkerKey()
