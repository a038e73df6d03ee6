"""Fixtures for the contract tests: one eth-tester deployment per module,
rolled back to a snapshot after every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import EthereumTesterProvider, Web3

from tests.contracts.support import Env


@pytest.fixture(scope="module")
def deployed() -> Env:
    return Env.create(Web3(EthereumTesterProvider()))


@pytest.fixture
def env(deployed: Env) -> Iterator[Env]:
    tester = deployed.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snapshot = tester.take_snapshot()
    yield deployed
    tester.revert_to_snapshot(snapshot)
