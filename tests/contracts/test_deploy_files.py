"""Deployment files, key files and the gas report's EEA-shaped payloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.deploy import Deployment, load_key
from connector.devnet import DEV_PRIVATE_KEYS, free_port
from enclave_bridge.errors import ConfigurationError
from scripts.gas_report import eea_request, eea_response


def test_deployment_file_round_trips(tmp_path: Path) -> None:
    """A written deployment file reads back equal, with checksummed addresses."""
    deployment = Deployment(
        chain_id=31337,
        contracts={"WorkOrderRegistry": "0x5fbdb2315678afecb367f032d93f642f64180aa3"},
        block=3,
    )
    path = tmp_path / "deployment.json"
    deployment.write(path)

    again = Deployment.read(path)

    assert json.loads(path.read_text())["chainId"] == 31337
    assert again.contracts == {
        "WorkOrderRegistry": "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    }
    assert (again.chain_id, again.block) == (31337, 3)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"chainId": 1}',
        '{"chainId": 1, "contracts": {"A": "0x12"}, "block": 0}',
    ],
)
def test_bad_deployment_file_is_a_configuration_error(
    tmp_path: Path, content: str
) -> None:
    """Unreadable or incomplete deployment files raise ConfigurationError."""
    path = tmp_path / "deployment.json"
    path.write_text(content)

    with pytest.raises(ConfigurationError):
        Deployment.read(path)


def test_key_file_loads_and_rejects_garbage(tmp_path: Path) -> None:
    """A hex key file yields its account; other content or a missing file is refused."""
    good, bad = tmp_path / "good.key", tmp_path / "bad.key"
    good.write_text(DEV_PRIVATE_KEYS[0] + "\n")
    bad.write_text("hello")

    assert load_key(good).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    for path in (bad, tmp_path / "missing.key"):
        with pytest.raises(ConfigurationError):
            load_key(path)


@pytest.mark.parametrize("size", [256, 1024, 4096])
def test_gas_report_payloads_have_exact_sizes(size: int) -> None:
    """The gas report's requests and responses are valid EEA JSON of the stated size."""
    request, response = eea_request(size, 1), eea_response(size, 1)

    assert (len(request), len(response)) == (size, size)
    assert json.loads(request)["method"] == "WorkOrderSubmit"
    assert "outData" in json.loads(response)["result"]


def test_free_port_is_on_loopback() -> None:
    """free_port hands out a usable port number."""
    assert 0 < free_port() < 65536
