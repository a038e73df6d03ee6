"""The command line's answers to operator mistakes: clear errors, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.devnet import DEV_PRIVATE_KEYS, open_anvil
from enclave_bridge.requester import WorkerDetails, build_work_order, verify_response


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


def test_listen_serves_the_direct_model_without_a_chain(tmp_path: Path) -> None:
    """`tcbridge listen` needs no node, deployment or relayer key; SIGTERM stops it cleanly."""
    config = _config(tmp_path, "http://127.0.0.1:9")  # nothing listens there
    env = {**os.environ, "TCBRIDGE_POOL_PASSPHRASE": "listen test"}
    made = CliRunner().invoke(
        main, ["--config", str(config), "worker", "create", "--name", "direct"], env=env
    )
    assert made.exit_code == 0, made.output
    url_file = tmp_path / "var" / "listener.url"
    log = tmp_path / "listen.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "--config", str(config), "listen"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        for _ in range(300):
            if url_file.exists() or server.poll() is not None:
                break
            time.sleep(0.1)
        assert url_file.exists(), log.read_text()
        url = url_file.read_text()

        def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
            with urllib.request.urlopen(url, body.encode(), timeout=30) as answer:
                return dict(json.loads(answer.read()))

        worker_id = call("WorkerLookUp", {"workerType": 1})["result"]["ids"][0]
        details = WorkerDetails.from_json(call("WorkerRetrieve", {"workerId": worker_id}), worker_id)
        sent = build_work_order(details, "echo-result", [b"no chain needed"])
        answer = call("WorkOrderSubmit", sent.request["params"])
        verdict = verify_response(sent, answer, details)
        assert verdict.accepted, verdict.reason
        assert verdict.outputs[0].data == b"RESULT: no chain needed"
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(60)
    assert code == 0
    assert not url_file.exists()
