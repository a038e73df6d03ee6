"""The [fabric] configuration section and the chain switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config
from connector.fabric.runtime import fabric_identity
from enclave_bridge.errors import ConfigurationError


def test_fabric_section_reads_from_file_and_environment(tmp_path: Path) -> None:
    """Settings come from [fabric]; TCBRIDGE_FABRIC_* overrides them."""
    path = tmp_path / "t.toml"
    path.write_text(
        '[bridge]\nchain = "fabric"\n'
        '[fabric]\ngateway_address = "127.0.0.1:9999"\nchannel = "c1"\n'
        'cert_path = "id/cert.pem"\nkey_path = "id/key.pem"\n'
    )
    config = load_config(path, env={"TCBRIDGE_FABRIC_CHAINCODE": "cc2"})
    assert config.bridge.chain == "fabric"
    assert (config.fabric.gateway_address, config.fabric.channel) == ("127.0.0.1:9999", "c1")
    assert config.fabric.chaincode == "cc2"
    assert config.fabric.tls is False


def test_unknown_chain_is_refused(tmp_path: Path) -> None:
    """[bridge] chain accepts only ethereum or fabric."""
    path = tmp_path / "t.toml"
    path.write_text('[bridge]\nchain = "solana"\n')
    with pytest.raises(ConfigurationError, match="must be 'ethereum' or 'fabric'"):
        load_config(path, env={})


def test_missing_identity_files_name_the_setting(tmp_path: Path) -> None:
    """An unreadable certificate or key is a configuration error naming the files."""
    path = tmp_path / "t.toml"
    path.write_text('[fabric]\ncert_path = "nope.pem"\nkey_path = "nope.key"\n')
    with pytest.raises(ConfigurationError, match="cannot read the Fabric identity"):
        fabric_identity(load_config(path, env={}))
    empty = tmp_path / "e.toml"
    empty.write_text("")
    with pytest.raises(ConfigurationError, match="no Fabric identity"):
        fabric_identity(load_config(empty, env={}))
