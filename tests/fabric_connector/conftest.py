"""Fixtures: the development peer with the test-only hook chaincode, a store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from connector.fabric.gateway import FabricGateway
from connector.store import WorkOrderStore, open_store
from tcbridge_devpeer.chaincode import CHAINCODE_DIR
from tcbridge_devpeer.launcher import DevPeerProcess
from tests.fabric_connector.peer import gateway_for, start_hooked_peer

if not (CHAINCODE_DIR / "node_modules" / ".bin" / "fabric-chaincode-node").exists():
    pytest.skip(
        "chaincode/node_modules is missing: run ./scripts/setup",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def devpeer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPeerProcess]:
    peer = start_hooked_peer(tmp_path_factory.mktemp("hooked-peer"))
    yield peer
    peer.stop()


@pytest.fixture
async def gateway(devpeer: DevPeerProcess) -> AsyncIterator[FabricGateway]:
    gw = gateway_for(devpeer)
    yield gw
    await gw.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[WorkOrderStore]:
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as opened:
        yield opened
