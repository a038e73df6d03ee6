"""An in-memory watcher sink: the double the watcher's unit tests share."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from connector.ethereum.events import RegistryEvent
from connector.ethereum.watcher import Checkpoint, WatchBatch


@dataclass
class MemorySink:
    checkpoint: Checkpoint | None = None
    events: list[RegistryEvent] = field(default_factory=list)
    rollbacks: list[int] = field(default_factory=list)
    fail_commits: int = 0

    async def load_checkpoint(self) -> Checkpoint | None:
        return copy.deepcopy(self.checkpoint)

    async def commit(self, batch: WatchBatch) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise RuntimeError("simulated database failure")
        self.events.extend(batch.events)
        self.checkpoint = copy.deepcopy(batch.checkpoint)

    async def rollback_above(self, block: int, checkpoint: Checkpoint) -> None:
        self.rollbacks.append(block)
        self.events = [e for e in self.events if e.ref.block_number <= block]
        self.checkpoint = copy.deepcopy(checkpoint)
