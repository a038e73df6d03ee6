"""Local Ethereum dev nodes for tests, the demo and benchmarks.

:func:`open_anvil` and :func:`open_ganache` start the pinned binaries from
``node_modules/.bin`` on 127.0.0.1 and a free port, wait until the node
answers JSON-RPC, and stop the process (by its PID) when the ``with`` block
ends. Both nodes get the same funded accounts, :data:`DEV_PRIVATE_KEYS`:
anvil's well-known defaults from the public "test test ... junk" mnemonic.
These keys are public; never use them on a real network.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from enclave_bridge.errors import ConfigurationError, NodeUnavailable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = PROJECT_ROOT / "node_modules" / ".bin"

DEV_PRIVATE_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)
DEV_BALANCE_WEI = 10_000 * 10**18

# A first start of anvil or Ganache (Node loading) takes a few seconds here.
STARTUP_TIMEOUT_S = 30.0
# Grace for a clean exit on SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class DevNode:
    """A running local node: where to reach it and which process it is."""

    kind: str
    url: str
    port: int
    chain_id: int
    pid: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def open_anvil(
    *,
    chain_id: int = 31337,
    block_time: float | None = None,
    gas_limit: int | None = None,
    hardfork: str | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[DevNode]:
    """A fresh anvil on 127.0.0.1; automine unless ``block_time`` is given."""
    port = free_port()
    args = [
        str(_binary("anvil")),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--chain-id", str(chain_id),
        "--accounts", str(len(DEV_PRIVATE_KEYS)),
    ]  # fmt: skip
    if block_time is not None:
        args += ["--block-time", str(block_time)]
    if gas_limit is not None:
        args += ["--gas-limit", str(gas_limit)]
    if hardfork is not None:
        args += ["--hardfork", hardfork]
    args += list(extra_args)
    with _running("anvil", args, port, chain_id) as node:
        yield node


@contextmanager
def open_ganache(
    *, chain_id: int = 1337, extra_args: Sequence[str] = ()
) -> Iterator[DevNode]:
    """A fresh Ganache 7 on 127.0.0.1, funding the same keys as anvil."""
    port = free_port()
    accounts = [
        f"--wallet.accounts={key},{DEV_BALANCE_WEI}" for key in DEV_PRIVATE_KEYS
    ]
    args = [
        str(_binary("ganache")),
        "--server.host", "127.0.0.1",
        "--server.port", str(port),
        "--chain.chainId", str(chain_id),
        "--chain.hardfork", "shanghai",
        "--logging.quiet",
        *accounts,
        *extra_args,
    ]  # fmt: skip
    with _running("ganache", args, port, chain_id) as node:
        yield node


def rpc_call(
    url: str, method: str, params: list[object], timeout: float = 10.0
) -> object:
    """One JSON-RPC call with the standard library (no web3 needed)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise NodeUnavailable(f"{method} failed on {url}: {reply['error']}")
    return reply["result"]


def _binary(name: str) -> Path:
    path = NODE_BIN / name
    if not path.exists():
        raise ConfigurationError(
            f"{path} is missing: run scripts/setup to install the Node tools"
        )
    return path


@contextmanager
def _running(kind: str, args: list[str], port: int, chain_id: int) -> Iterator[DevNode]:
    # stderr goes to a file, not a pipe: a pipe nobody drains would block the node.
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_answering(process, url, kind, stderr)
            yield DevNode(
                kind=kind, url=url, port=port, chain_id=chain_id, pid=process.pid
            )
        finally:
            _stop(process)


def _wait_until_answering(
    process: subprocess.Popen[bytes], url: str, kind: str, stderr: IO[bytes]
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr.seek(0)
            output = stderr.read().decode(errors="replace").strip()
            raise NodeUnavailable(
                f"{kind} exited with {process.returncode} before answering: {output}"
            )
        try:
            rpc_call(url, "eth_chainId", [], timeout=1.0)
            return
        except (OSError, urllib.error.URLError):
            time.sleep(0.05)
    raise NodeUnavailable(
        f"{kind} did not answer on {url} within {STARTUP_TIMEOUT_S} s"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
