"""Configuration of the listener and the adapter, the URL allow-list, and restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from connector.chainlink import AdapterSettings
from connector.config import load_config
from enclave_bridge.eea import WorkOrderStatus
from enclave_bridge.errors import ConfigurationError
from enclave_bridge.identity import SealedIdentity
from enclave_bridge.listener import ListenerSettings, serve_from_config
from enclave_bridge.listener_schema import url_allowed
from enclave_bridge.requester import WorkerDetails, build_work_order, verify_response
from tests.enclave.conftest import requires_vectors
from tests.listener.conftest import ADMIN_TOKEN, POLL_S, POLLS, run_listener

ALLOW = ("hooks.example", "127.0.0.1:8081", "[::1]:9000")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example/notify", True),
        ("http://HOOKS.example:8443/x", True),
        ("http://127.0.0.1:8081/resume/1", True),
        ("http://127.0.0.1:8080/notify", False),
        ("http://127.0.0.1/notify", False),
        ("http://[::1]:9000/", True),
        ("http://[::1]:9001/", False),
        ("https://evil-hooks.example/", False),
        ("https://hooks.example.evil.test/", False),
        ("https://user:pw@hooks.example/", False),
        ("ftp://hooks.example/", False),
        ("file:///etc/passwd", False),
        ("hooks.example", False),
        (" ", False),
        ("http://", False),
    ],
)
def test_url_allow_list(url: str, allowed: bool) -> None:
    """Only http(s) URLs whose exact host (and port, when the entry names one) is listed pass."""
    assert url_allowed(url, ALLOW) is allowed


def test_empty_allow_list_allows_nothing() -> None:
    """With no allow-list configured no requester URL is ever called."""
    assert not url_allowed("http://127.0.0.1:8081/", ())


def test_settings_from_config_read_secrets(tmp_path: Path) -> None:
    """Tokens come from the environment or from files; the TOML carries everything else."""
    token_file = tmp_path / "admin.token"
    token_file.write_text("from-a-file\n")
    config_file = tmp_path / "tcbridge.toml"
    config_file.write_text(
        "[listener]\n"
        'admin_token_file = "admin.token"\n'
        "max_body_bytes = 1000\n"
        "[guards]\n"
        'url_allowlist = ["hooks.example"]\n'
        "[chainlink]\n"
        "pending_after_s = 0.25\n"
    )
    env = {
        "TCBRIDGE_LISTENER_PROXY_TOKEN": "proxy-from-env",
        "TCBRIDGE_CHAINLINK_BRIDGE_TOKEN": "bridge-from-env",
    }
    config = load_config(config_file, env)

    listener = ListenerSettings.from_config(config, env)
    assert listener.admin_token == "from-a-file"
    assert listener.proxy_token == "proxy-from-env"
    assert listener.max_body_bytes == 1000
    assert listener.url_allowlist == ("hooks.example",)
    assert "from-a-file" not in repr(listener)

    adapter = AdapterSettings.from_config(config, env)
    assert adapter.bridge_token == "bridge-from-env"
    assert adapter.callback_token is None
    assert adapter.pending_after_s == 0.25
    assert "bridge-from-env" not in repr(adapter)


@pytest.mark.parametrize("key", ["admin_token", "proxy_token", "bridge_token"])
def test_tokens_in_the_toml_file_are_refused(tmp_path: Path, key: str) -> None:
    """A token written into the configuration file is refused with a pointer to the file setting."""
    section = "chainlink" if key == "bridge_token" else "listener"
    config_file = tmp_path / "tcbridge.toml"
    config_file.write_text(f'[{section}]\n{key} = "oops"\n')

    with pytest.raises(ConfigurationError, match="secrets do not belong"):
        load_config(config_file, {})


def test_adapter_needs_its_token(tmp_path: Path) -> None:
    """Without a bridge token the adapter's settings cannot be made: every call would be open."""
    with pytest.raises(ConfigurationError, match="Chainlink bridge token"):
        AdapterSettings.from_config(load_config(None, {}), {})


@requires_vectors
async def test_restart_resumes_an_unfinished_order(
    tmp_path: Path, sealed_worker: SealedIdentity, vector_details: WorkerDetails
) -> None:
    """An order still running when the listener stops is handed to the pool again at the next start."""
    sent = build_work_order(
        vector_details, "echo-result", [b"survive"], timeout_msecs=0
    )
    work_order_id = sent.request["params"]["workOrderId"]
    async with run_listener(tmp_path, sealed_worker) as first:
        first.listener.backend = _Stalled()  # type: ignore[assignment]
        answer = await first.call("WorkOrderSubmit", sent.request["params"])
        assert answer["error"]["code"] == WorkOrderStatus.SCHEDULED

    async with run_listener(tmp_path, sealed_worker) as second:
        for _ in range(POLLS):
            answer = await second.call(
                "WorkOrderGetResult", {"workOrderId": work_order_id}
            )
            if "result" in answer:
                break
            await asyncio.sleep(POLL_S)

    verdict = verify_response(sent, answer, vector_details)
    assert verdict.accepted, verdict.reason
    assert verdict.outputs[0].data == b"RESULT: survive"


class _Stalled:
    """A backend with no workers whose orders never finish."""

    async def submit(self, job: object) -> object:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def worker_records(self) -> dict[str, object]:
        return {}


async def test_serve_from_config(tmp_path: Path) -> None:
    """The configured listener binds 127.0.0.1, keeps its book where [listener] says, and answers."""
    config_file = tmp_path / "tcbridge.toml"
    config_file.write_text('[listener]\nbook = "var/book.db"\n')
    (tmp_path / "var").mkdir()
    config = load_config(config_file, {})

    async with (
        serve_from_config(config, _Stalled(), {}) as url,  # type: ignore[arg-type]
        aiohttp.ClientSession() as http,
    ):
        assert url.startswith("http://127.0.0.1:")
        body = {"jsonrpc": "2.0", "id": 1, "method": "WorkerLookUp", "params": {}}
        async with http.post(url, json=body) as answer:
            assert (await answer.json())["result"]["totalCount"] == 0
        admin = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "WorkerSetStatus",
            "params": {"workerId": "ab", "status": 2},
        }
        async with http.post(url, json=admin) as answer:
            refused = await answer.json()
            assert refused["error"]["code"] == 3
            assert "no token is configured" in refused["error"]["message"]
    assert (tmp_path / "var" / "book.db").exists()


@requires_vectors
async def test_restart_keeps_worker_status_and_details(
    tmp_path: Path, sealed_worker: SealedIdentity, vector_details: WorkerDetails
) -> None:
    """An operator's status and detail changes survive a restart; keys still come from the pool."""
    worker_id = vector_details.worker_id
    async with run_listener(tmp_path, sealed_worker) as first:
        await first.call(
            "WorkerUpdate",
            {"workerId": worker_id, "details": {"workOrderSyncUri": "http://w/"}},
            token=ADMIN_TOKEN,
        )
        await first.call(
            "WorkerSetStatus", {"workerId": worker_id, "status": 2}, token=ADMIN_TOKEN
        )

    async with run_listener(tmp_path, sealed_worker) as second:
        retrieved = (await second.call("WorkerRetrieve", {"workerId": worker_id}))[
            "result"
        ]
        sent = build_work_order(vector_details, "echo-result", [b"x"])
        refused = await second.call("WorkOrderSubmit", sent.request["params"])

    assert retrieved["status"] == 2
    assert retrieved["details"]["workOrderSyncUri"] == "http://w/"
    type_data = retrieved["details"]["workerTypeData"]
    assert type_data["encryptionKey"] == vector_details.encryption_key_pem
    assert "not active" in refused["error"]["message"]
