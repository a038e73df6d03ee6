"""Which request bodies count as encoded: every Content-Encoding header, every coding."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from enclave_bridge.listener_schema import body_encoding


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ([], None),
        ([("Content-Encoding", "identity")], None),
        ([("Content-Encoding", "GZIP ")], "gzip"),
        ([("Content-Encoding", "identity, br")], "br"),
        ([("Content-Encoding", "identity"), ("Content-Encoding", "gzip")], "gzip"),
    ],
)
def test_every_content_coding_counts(
    headers: list[tuple[str, str]], refused: str | None
) -> None:
    """A coding hidden in a second header or after identity is still seen."""
    assert body_encoding(CIMultiDictProxy(CIMultiDict(headers))) == refused
