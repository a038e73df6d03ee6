"""``heart-disease-eval``: Avalon's heart-disease risk model, bit for bit.

An input is ``label: f1 f2 ... f14``. It is split on ``:`` and the second
piece on spaces, dropping empty pieces (the C++ ``split``). Fourteen fields
give one person's risk and add it to the running totals; no fields (also an
input without a ``label:`` prefix) ask for the average over the totals;
anything else is an input-format error. Fields are read like ``std::stoi``
(leading whitespace, sign, digits, trailing junk ignored). The arithmetic
is the C++ one: doubles summed left to right, truncated to int, integer
average.

The totals live in the workload state (``totalRisk``, ``count``), which
the pool commits with each result, instead of C++ function statics. Every
input is evaluated in index order, but only the last one's result is
returned, as one output with index 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from enclave_bridge.workload import (
    WorkloadContext,
    WorkloadInput,
    WorkloadOutput,
    WorkloadResult,
    builtin,
)

INT_MIN, INT_MAX = -(2**31), 2**31 - 1

FORMAT_ERROR = "Error with missing or incorrect input format"
INVALID_DATA = "Invalid data found in input data"
OUT_OF_RANGE = "Caught exception while processing workload data"
NO_HISTORY = "No accumulated heart disease history"

# strtol skips C-locale isspace characters, then reads an optional sign and
# decimal digits, and ignores whatever follows.
_STOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


class _InvalidArgument(Exception):
    pass


class _OutOfRange(Exception):
    pass


def stoi(text: str) -> int:
    """``std::stoi`` in base 10."""
    match = _STOI.match(text)
    if match is None:
        raise _InvalidArgument(text)
    value = int(match.group(1))
    if not INT_MIN <= value <= INT_MAX:
        raise _OutOfRange(text)
    return value


def _split(text: str, delim: str) -> list[str]:
    return [piece for piece in text.split(delim) if piece]


def _model_a(high: float, opt: float, data: float) -> float:
    if data < opt:
        return 100.0
    if data < high:
        return 100 * (high - data) / (high - opt)
    return 0.0


def _model_b(high: float, opt: float, data: float) -> float:
    delta = abs(data - opt)
    if delta < high - opt:
        return 100 - 100 * delta / (high - opt)
    return 0.0


def _table(values: Mapping[int, float], default: float) -> Callable[[int], float]:
    return lambda key: values.get(key, default)


def _thaldur(minutes: int) -> float:
    if 3 <= minutes < 6:
        return 45.0
    if 6 <= minutes < 8:
        return 79.0
    if minutes >= 8:
        return 100.0
    return 0.0


# (score function, weight) per field, in the order of the C++ sum.
_FACTORS: tuple[tuple[Callable[[int], float], float], ...] = (
    (lambda v: _model_a(100, 18, v), 0.03),  # age
    (lambda v: 100.0 if v == 0 else 0.0, 0.01),  # sex
    (_table({1: 0.0, 2: 12.0, 3: 35.0, 4: 100.0}, 100.0), 0.21),  # chest pain
    (lambda v: _model_a(218, 108, v), 0.05),  # resting blood pressure
    (lambda v: _model_a(309, 126, v), 0.05),  # cholesterol
    (lambda v: _model_a(248, 98, v), 0.04),  # fasting blood sugar
    (_table({0: 100.0, 1: 9.0, 2: 7.0}, 100.0), 0.19),  # resting ECG
    (lambda v: _model_b(198, 61, v), 0.06),  # max heart rate
    (_table({0: 100.0, 1: 0.0}, 100.0), 0.18),  # exercise angina
    (lambda v: _model_a(100.0, 0.0, v), 0.05),  # ST depression
    (_table({0: 49.0, 1: 100.0}, 63.0), 0.03),  # ST slope
    (_table({0: 0.0, 1: 35.0, 2: 70.0}, 100.0), 0.04),  # vessels
    (_thaldur, 0.02),  # thallium
    (lambda v: 100.0 if v == 0 else 0.0, 0.04),  # diagnosis
)


def risk_of(fields: Sequence[str]) -> int:
    """One person's risk in percent; raises on a field ``std::stoi`` refuses."""
    total = 0.0
    for (score, weight), field in zip(_FACTORS, fields, strict=True):
        total += score(stoi(field)) * weight
    return 100 - int(total)


def evaluate(text: str, total_risk: int, count: int) -> tuple[str, int, int]:
    """(message, new total, new count) for one input."""
    pieces = _split(text, ":")
    fields = _split(pieces[1] if len(pieces) > 1 else "", " ")
    if not fields:
        if count == 0:
            return NO_HISTORY, total_risk, count
        return (
            f"Heart disease risk is {total_risk // count}% for {count} people",
            total_risk,
            count,
        )
    if len(fields) != len(_FACTORS):
        return FORMAT_ERROR, total_risk, count
    try:
        risk = risk_of(fields)
    except _InvalidArgument:
        return INVALID_DATA, total_risk, count
    except _OutOfRange:
        return OUT_OF_RANGE, total_risk, count
    return f"You have a {risk}% risk of heart disease", total_risk + risk, count + 1


class HeartDiseaseEval:
    name = "heart-disease-eval"
    stateful = True

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        state: Mapping[str, Any] = ctx.state or {}
        total_risk = int(state.get("totalRisk", 0))
        count = int(state.get("count", 0))

        message = FORMAT_ERROR
        for item in sorted(inputs, key=lambda i: i.index):
            # C++ std::string holds bytes: Latin-1 maps each byte to one char.
            message, total_risk, count = evaluate(
                item.data.decode("latin-1"), total_risk, count
            )

        return WorkloadResult(
            outputs=[WorkloadOutput(0, message.encode())],
            new_state={"totalRisk": total_risk, "count": count},
        )


@builtin
def heart_disease_eval() -> HeartDiseaseEval:
    return HeartDiseaseEval()
