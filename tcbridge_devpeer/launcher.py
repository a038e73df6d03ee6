"""Start and stop the development peer as a child process (for tests and demos).

``DevPeerProcess.start(folder)`` runs ``python -m tcbridge_devpeer`` on a free
127.0.0.1 port and returns once ``connection.json`` shows it ready;
``stop()`` ends it by its PID (the peer stops its chaincode server itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave_bridge.errors import NodeUnavailable
from tcbridge_devpeer.msp import Identity, load_identity

# The peer is ready in one to two seconds here; allow for a loaded machine.
START_TIMEOUT = 30.0


@dataclass
class DevPeerProcess:
    folder: Path
    process: subprocess.Popen[bytes]
    info: dict[str, Any]

    @classmethod
    def start(cls, folder: Path, port: int = 0) -> DevPeerProcess:
        folder.mkdir(parents=True, exist_ok=True)
        info_path = folder / "connection.json"
        info_path.unlink(missing_ok=True)
        log = (folder / "peer.log").open("ab")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tcbridge_devpeer",
                "--folder",
                str(folder),
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not info_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                tail = (folder / "peer.log").read_text(errors="replace")[-2000:]
                raise NodeUnavailable(f"the development peer did not start:\n{tail}")
            time.sleep(0.05)
        return cls(folder, process, json.loads(info_path.read_text()))

    @property
    def address(self) -> str:
        return str(self.info["gatewayAddress"])

    def identity(self, name: str = "user1") -> Identity:
        entry = self.info["identities"][name]
        return load_identity(
            entry["mspId"], Path(entry["certPath"]), Path(entry["keyPath"])
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self._kill_orphaned_chaincode()

    def _kill_orphaned_chaincode(self) -> None:
        pid = self.info.get("chaincodePid")
        if isinstance(pid, int):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
