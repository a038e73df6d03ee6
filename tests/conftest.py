"""Suite-wide reporting."""

from __future__ import annotations

import pytest

from tests.enclave import vectors

MISSING = (
    "Avalon vectors NOT FOUND at {where}: the interoperability tests are "
    "skipped; put the shared/ folder beside the repository or set TCBRIDGE_SHARED"
)


def pytest_report_header() -> str:
    if not vectors.available():
        return MISSING.format(where=vectors.vectors_dir())
    return f"Avalon vectors: {vectors.vectors_dir()} ({len(vectors.case_ids())} cases)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Repeated at the end, where a passing run's reader looks.
    if not vectors.available():
        terminalreporter.write_line(
            MISSING.format(where=vectors.vectors_dir()), yellow=True, bold=True
        )
