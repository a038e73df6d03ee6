"""The TOML configuration: defaults, environment overrides, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config, read_secret
from enclave_bridge.errors import ConfigurationError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tcbridge.toml"
    path.write_text(text)
    return path


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    """The environment overrides the file, with types parsed per field."""
    path = write(
        tmp_path,
        '[ethereum]\nchain_id = 5\nconfirmations = "safe"\n[pool]\nprocesses = 3\n',
    )

    config = load_config(
        path,
        env={
            "TCBRIDGE_POOL_PROCESSES": "7",
            "TCBRIDGE_GUARDS_REQUESTER_ALLOWLIST": "0xa, 0xb",
        },
    )

    assert config.ethereum.chain_id == 5
    assert config.confirmation_depth() == "safe"
    assert config.pool.processes == 7
    assert config.guards.requester_allowlist == ["0xa", "0xb"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[ethereum]\nrelayer_key = "0x11"\n', "secrets do not belong"),
        ('[pool]\npassphrase = "x"\n', "secrets do not belong"),
        ('[ethereum]\nchain_id = "five"\n', "must be int"),
        ("[nope]\nx = 1\n", "unknown configuration sections"),
        ("[ethereum]\ncolour = 1\n", "no setting 'colour'"),
        ('[ethereum]\nconfirmations = "soon"\n', "block count, 'safe' or 'finalized'"),
        ("[ethereum\n", "not valid TOML"),
    ],
    ids=[
        "relayer-key",
        "passphrase",
        "type",
        "section",
        "setting",
        "confirmations",
        "syntax",
    ],
)
def test_bad_configuration_is_refused_with_a_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each kind of configuration mistake is refused with a message that says what is wrong."""
    with pytest.raises(ConfigurationError, match=message):
        load_config(write(tmp_path, text), env={})


def test_bad_environment_value_is_refused(tmp_path: Path) -> None:
    """An environment override that does not parse is refused, naming the variable."""
    with pytest.raises(ConfigurationError, match="TCBRIDGE_ETHEREUM_CHAIN_ID"):
        load_config(None, env={"TCBRIDGE_ETHEREUM_CHAIN_ID": "x"})


def test_secret_comes_from_environment_then_file(tmp_path: Path) -> None:
    """A secret is read from its variable, else from the file the config names, relative to it."""
    (tmp_path / "relayer.key").write_text("0xabc\n")
    config = load_config(
        write(tmp_path, '[ethereum]\nrelayer_key_file = "relayer.key"\n'), env={}
    )

    assert (
        read_secret("k", config.ethereum.relayer_key_file, "K", config, env={})
        == "0xabc"
    )
    assert (
        read_secret(
            "k", config.ethereum.relayer_key_file, "K", config, env={"K": "0xdef"}
        )
        == "0xdef"
    )
    with pytest.raises(ConfigurationError, match="set K or name a file"):
        read_secret("k", "", "K", config, env={})


def test_size_limits_that_cannot_fit_a_block_are_refused() -> None:
    """Limits are checked against the chain's block gas limit and the mempool's size cap."""
    from connector.bridge import check_size_limits

    assert check_size_limits(30_000_000, 65_536, 65_536, 120_000) == []
    too_big = check_size_limits(3_000_000, 65_536, 65_536, 120_000)
    assert len(too_big) == 2 and "block gas limit 3000000" in too_big[0]
    assert "does not fit one completion transaction" in check_size_limits(
        300_000_000, 1024, 200_000, 120_000
    )[0]
