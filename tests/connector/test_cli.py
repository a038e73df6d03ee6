"""The command line's answers to operator mistakes: clear errors, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.devnet import DEV_PRIVATE_KEYS, open_anvil


def _config(tmp_path: Path, url: str, chain_id: int = 31337) -> Path:
    path = tmp_path / "tcbridge.toml"
    path.write_text(
        f'[ethereum]\nrpc_url = "{url}"\nchain_id = {chain_id}\n'
        '[pool]\nidentities_dir = "workers"\n'
    )
    return path


def test_worker_create_refuses_a_passphrase_that_differs_from_the_pool(tmp_path: Path) -> None:
    """A second identity sealed under another passphrase would break the pool: refused."""
    config = _config(tmp_path, "http://127.0.0.1:9")
    runner = CliRunner()
    ok = runner.invoke(main, ["--config", str(config), "worker", "create", "--name", "a"],
                       env={"TCBRIDGE_POOL_PASSPHRASE": "first"})
    bad = runner.invoke(main, ["--config", str(config), "worker", "create", "--name", "b"],
                        env={"TCBRIDGE_POOL_PASSPHRASE": "second"})

    assert ok.exit_code == 0, ok.output
    assert bad.exit_code == 2
    assert "TCBRIDGE_POOL_PASSPHRASE" in bad.output
    assert len(list((tmp_path / "workers").glob("*.sealed"))) == 1


@pytest.mark.parametrize("worker_id", ["nothex", "abcd", "0x" + "zz" * 32])
def test_submit_refuses_a_malformed_worker_id(tmp_path: Path, worker_id: str) -> None:
    """A worker id that is not 32 bytes of hex is an error, not a traceback or a padded id."""
    config = _config(tmp_path, "http://127.0.0.1:9")
    result = CliRunner().invoke(
        main, ["--config", str(config), "submit", "--workload", "echo-result", "--input", "x",
               "--worker-id", worker_id],
        env={"TCBRIDGE_REQUESTER_KEY": DEV_PRIVATE_KEYS[2]},
    )

    assert result.exit_code == 2
    assert "32 bytes of hex" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.anvil
def test_commands_refuse_a_node_of_another_chain(tmp_path: Path) -> None:
    """status and worker register say the chain ids differ instead of acting on the wrong chain."""
    with open_anvil() as node:
        config = _config(tmp_path, node.url, chain_id=1)
        (tmp_path / "var").mkdir()
        (tmp_path / "var" / "deployment.json").write_text(
            '{"chainId": 1, "contracts": {"WorkOrderRegistry": "0x' + "11" * 20
            + '", "WorkerRegistry": "0x' + "22" * 20 + '"}, "block": 0}'
        )
        runner = CliRunner()
        env = {"TCBRIDGE_POOL_PASSPHRASE": "p", "TCBRIDGE_OPERATOR_KEY": DEV_PRIVATE_KEYS[0]}
        runner.invoke(main, ["--config", str(config), "worker", "create", "--name", "a"], env=env)
        register = runner.invoke(main, ["--config", str(config), "worker", "register"], env=env)
        status = runner.invoke(main, ["--config", str(config), "status"], env=env)

    assert register.exit_code == 2 and "serves chain id 31337" in register.output
    assert "serves chain id 31337" in status.output
