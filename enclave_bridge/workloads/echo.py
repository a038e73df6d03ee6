"""``echo-result``: every input comes back prefixed with ``RESULT: ``.

As Avalon's echo workload: inputs in index order, bytes passed through
unchanged, each output keeps its input's index.
"""

from __future__ import annotations

from collections.abc import Sequence

from enclave_bridge.workload import (
    WorkloadContext,
    WorkloadInput,
    WorkloadOutput,
    WorkloadResult,
    builtin,
)

PREFIX = b"RESULT: "


class EchoResult:
    name = "echo-result"
    stateful = False

    def run(
        self, inputs: Sequence[WorkloadInput], ctx: WorkloadContext
    ) -> WorkloadResult:
        ordered = sorted(inputs, key=lambda item: item.index)
        return WorkloadResult(
            outputs=[WorkloadOutput(item.index, PREFIX + item.data) for item in ordered]
        )


@builtin
def echo_result() -> EchoResult:
    return EchoResult()
