"""Oracle workloads: pick a value out of a JSON document; aggregate prices.

``json-extract``
    Input 0 is a JSON document (UTF-8), input 1 an RFC 6901 JSON Pointer
    (``""`` is the whole document, ``/data/0/price`` a member of an array
    element; ``~1`` stands for ``/`` and ``~0`` for ``~``). The output, with
    index 0, is the value found, as canonical JSON: keys sorted, no spaces,
    UTF-8. Inputs are taken in index order.

``price-median``
    Input 0 is a JSON array of observations ``{"source": "...", "price":
    "123.45"}`` (a price may also be a JSON number). Sources must be distinct,
    so one source cannot outvote the rest by repeating itself. The output is
    canonical JSON ``{"count": n, "median": "<decimal>"}``; with an even
    count the median is the mean of the two middle prices. Decimal arithmetic
    throughout, so the answer does not depend on binary floating point.

Both answer bad input with :class:`~enclave_bridge.workload.WorkloadFailed`
and a message saying what to fix; the EEA signature of the response makes
the answer a signed oracle report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from enclave_bridge.workload import (
    WorkloadContext,
    WorkloadFailed,
    WorkloadInput,
    WorkloadOutput,
    WorkloadResult,
    builtin,
)

# A work order's inputs are bounded by the processor; these bound the work
# done on them (deep nesting makes json.loads recurse).
MAX_DEPTH = 64
MAX_OBSERVATIONS = 1024


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode()


def _load_json(data: bytes, what: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkloadFailed(f"{what} is not UTF-8") from exc
    if _nesting(text) > MAX_DEPTH:
        raise WorkloadFailed(f"{what} nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise WorkloadFailed(f"{what} is not valid JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _nesting(text: str) -> int:
    """Upper bound of bracket depth (brackets inside strings count too)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value ``pointer`` (RFC 6901) designates in ``document``."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise WorkloadFailed(
            f"JSON pointer {pointer!r} must be empty or start with '/'"
        )

    value = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            if token not in value:
                raise WorkloadFailed(f"JSON pointer {pointer!r}: no member {token!r}")
            value = value[token]
        elif isinstance(value, list):
            if not (token == "0" or (token.isdigit() and not token.startswith("0"))):
                raise WorkloadFailed(
                    f"JSON pointer {pointer!r}: {token!r} is not an index"
                )
            if int(token) >= len(value):
                raise WorkloadFailed(
                    f"JSON pointer {pointer!r}: index {token} is past the end"
                )
            value = value[int(token)]
        else:
            raise WorkloadFailed(
                f"JSON pointer {pointer!r}: cannot descend into a scalar"
            )
    return value


class JsonExtract:
    name = "json-extract"
    stateful = False

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        ordered = sorted(inputs, key=lambda item: item.index)
        if len(ordered) != 2:
            raise WorkloadFailed(
                "json-extract takes two inputs: a JSON document, then a JSON pointer"
            )
        document = _load_json(ordered[0].data, "the document (input 0)")
        try:
            pointer = ordered[1].data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkloadFailed("the JSON pointer (input 1) is not UTF-8") from exc

        value = resolve_pointer(document, pointer)

        return WorkloadResult(outputs=[WorkloadOutput(0, canonical_json(value))])


def _price(observation: Any, position: int) -> tuple[str, Decimal]:
    if not isinstance(observation, dict):
        raise WorkloadFailed(f"observation {position} is not an object")
    source, price = observation.get("source"), observation.get("price")
    if not isinstance(source, str) or not source:
        raise WorkloadFailed(f"observation {position} has no source name")
    if isinstance(price, bool) or not isinstance(price, str | int | float):
        raise WorkloadFailed(
            f"observation {position} ({source}): price must be a number"
        )
    try:
        value = Decimal(str(price))
    except InvalidOperation as exc:
        raise WorkloadFailed(
            f"observation {position} ({source}): {price!r} is not a decimal number"
        ) from exc
    if not value.is_finite() or value < 0:
        raise WorkloadFailed(
            f"observation {position} ({source}): price must be finite and not negative"
        )
    return source, value


def median(values: Sequence[Decimal]) -> Decimal:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


class PriceMedian:
    name = "price-median"
    stateful = False

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        if len(inputs) != 1:
            raise WorkloadFailed(
                "price-median takes one input: a JSON array of observations"
            )
        observations = _load_json(inputs[0].data, "the observations (input 0)")
        if not isinstance(observations, list) or not observations:
            raise WorkloadFailed("the observations must be a non-empty JSON array")
        if len(observations) > MAX_OBSERVATIONS:
            raise WorkloadFailed(
                f"at most {MAX_OBSERVATIONS} observations per work order"
            )

        prices: dict[str, Decimal] = {}
        for position, observation in enumerate(observations):
            source, value = _price(observation, position)
            if source in prices:
                raise WorkloadFailed(f"source {source!r} appears more than once")
            prices[source] = value
        answer = {"count": len(prices), "median": str(median(list(prices.values())))}

        return WorkloadResult(outputs=[WorkloadOutput(0, canonical_json(answer))])


@builtin
def json_extract() -> JsonExtract:
    return JsonExtract()


@builtin
def price_median() -> PriceMedian:
    return PriceMedian()
