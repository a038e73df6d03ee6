"""No secret reaches the logs: the bridge's DEBUG log of a whole demo is scanned for every key."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest

from connector import chaos, demo
from connector.devnet import DEV_PRIVATE_KEYS

pytestmark = [pytest.mark.anvil, pytest.mark.slow]


def test_demo_logs_hold_no_key_or_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relayer and operator keys, the pool passphrase and the workers' private keys never appear."""
    passphrase = "secrets-test-passphrase-4242"
    monkeypatch.setenv("TCBRIDGE_POOL_PASSPHRASE", passphrase)
    monkeypatch.setenv("TCBRIDGE_BRIDGE_LOG_LEVEL", "DEBUG")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = demo.main(["--count", "4", "--keep"])
    folder = Path(re.search(r"working folder: (\S+)", out.getvalue()).group(1))  # type: ignore[union-attr]
    try:
        log = folder / "bridge.log"
        secrets = [passphrase, DEV_PRIVATE_KEYS[0][2:], DEV_PRIVATE_KEYS[1][2:]]
        secrets += chaos._worker_secrets(folder / "var" / "workers", passphrase)

        assert code == 0, out.getvalue()
        assert "DEBUG" in log.read_text()  # the scan covers the most verbose level
        assert chaos._secrets_in(log, secrets) == []
        assert len(secrets) == 3 + 3 * 2
    finally:
        shutil.rmtree(folder, ignore_errors=True)
