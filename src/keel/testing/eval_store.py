"""`MemoryRunStore`: eval runs and results kept in memory, for tests and embedded use."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from keel.core.eval_runs import EvalRun, ItemResult, RunStatus


class MemoryRunStore:
    """A `keel.evals.runner.RunStore` in a dict; results upsert by (item, repetition)."""

    def __init__(self) -> None:
        self.runs: dict[str, EvalRun] = {}
        self.stored: dict[str, dict[tuple[str, int], ItemResult]] = {}
        self.batches = 0
        self._ids = itertools.count(1)

    async def create(self, run: EvalRun) -> EvalRun:
        """Store a new run under the next id."""
        created = replace(run, run_id=f"run-{next(self._ids)}")
        self.runs[created.run_id] = created
        self.stored[created.run_id] = {}
        return created

    async def get(self, run_id: str) -> EvalRun | None:
        """The run, or None."""
        return self.runs.get(run_id)

    async def completed(self, run_id: str) -> set[tuple[str, int]]:
        """The (item, repetition) pairs stored."""
        return set(self.stored[run_id])

    def add_results(self, run_id: str, results: Sequence[ItemResult]) -> asyncio.Future[None]:
        """Upsert a batch (done at once)."""
        self.batches += 1
        for result in results:
            self.stored[run_id][(result.item_id, result.repetition)] = result
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def results(self, run_id: str) -> list[ItemResult]:
        """Every result, by repetition then item id."""
        return sorted(self.stored[run_id].values(), key=lambda r: (r.repetition, r.item_id))

    async def finish(
        self, run_id: str, status: RunStatus, summary: dict[str, Any] | None
    ) -> EvalRun:
        """Mark the run finished (or interrupted) with its summary."""
        run = replace(self.runs[run_id], status=status, summary=summary, finished_at=0.0)
        self.runs[run_id] = run
        return run
