"""Oracle workloads: json-extract and price-median."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enclave_bridge.workload import (
    WorkloadContext,
    WorkloadFailed,
    WorkloadInput,
    default_registry,
)

CTX = WorkloadContext("w", "wo", "rq")


def _run(name: str, *inputs: bytes) -> bytes:
    workload = default_registry().get(name)
    assert workload is not None
    result = workload.run([WorkloadInput(i, d) for i, d in enumerate(inputs)], CTX)
    assert len(result.outputs) == 1 and result.outputs[0].index == 0
    return result.outputs[0].data


DOC = json.dumps(
    {"data": [{"price": 101.5, "sym": "ETH"}], "a/b": {"~k": True}, "name": "é"}
).encode()


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("/data/0/price", b"101.5"),
        ("/data/0", b'{"price":101.5,"sym":"ETH"}'),
        ("/a~1b/~0k", b"true"),
        ("/name", '"é"'.encode()),
        (
            "",
            json.dumps(
                json.loads(DOC),
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode(),
        ),
    ],
    ids=["number", "object", "escapes", "utf8", "whole"],
)
def test_json_extract(pointer: str, expected: bytes) -> None:
    """json-extract returns the value at an RFC 6901 pointer as canonical JSON."""
    assert _run("json-extract", DOC, pointer.encode()) == expected


@pytest.mark.parametrize(
    ("document", "pointer", "message"),
    [
        (b"{not json", b"/a", "not valid JSON"),
        (DOC, b"/missing", "no member"),
        (DOC, b"/data/7", "past the end"),
        (DOC, b"/data/01", "not an index"),
        (DOC, b"data", "start with '/'"),
        (DOC, b"/name/x", "scalar"),
        (b"[" * 100 + b"]" * 100, b"", "deeper"),
        (b'{"x": NaN}', b"/x", "not valid JSON"),
    ],
    ids=[
        "bad-json",
        "missing",
        "past-end",
        "leading-zero",
        "no-slash",
        "scalar",
        "deep",
        "nan",
    ],
)
def test_json_extract_refuses_bad_input(
    document: bytes, pointer: bytes, message: str
) -> None:
    """Bad documents and pointers fail with a WorkloadFailed that says why."""
    with pytest.raises(WorkloadFailed, match=message):
        _run("json-extract", document, pointer)


def test_price_median_odd_and_even() -> None:
    """price-median returns the middle price, or the mean of the two middle ones."""
    odd = [{"source": s, "price": p} for s, p in [("a", "3"), ("b", 1), ("c", "2.5")]]
    even = [*odd, {"source": "d", "price": "10"}]

    assert json.loads(_run("price-median", json.dumps(odd).encode())) == {
        "count": 3,
        "median": "2.5",
    }
    assert json.loads(_run("price-median", json.dumps(even).encode())) == {
        "count": 4,
        "median": "2.75",
    }


@pytest.mark.parametrize(
    ("observations", "message"),
    [
        ([], "non-empty"),
        ([{"source": "a", "price": "x"}], "not a decimal"),
        (
            [{"source": "a", "price": "1"}, {"source": "a", "price": "2"}],
            "more than once",
        ),
        ([{"source": "a", "price": "-1"}], "not negative"),
        ([{"source": "a", "price": "Infinity"}], "finite"),
        ([{"price": "1"}], "no source"),
        ([{"source": "a", "price": True}], "must be a number"),
    ],
    ids=[
        "empty",
        "not-number",
        "repeated-source",
        "negative",
        "infinite",
        "no-source",
        "bool",
    ],
)
def test_price_median_refuses_bad_observations(
    observations: list[Any], message: str
) -> None:
    """Malformed or stuffed observations fail with a WorkloadFailed that says why."""
    with pytest.raises(WorkloadFailed, match=message):
        _run("price-median", json.dumps(observations).encode())
