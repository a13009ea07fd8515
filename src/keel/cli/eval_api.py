"""The eval runner's view of a running Keel: prompts, datasets and run storage over REST.

`ApiEvalBackend` implements the planner's `Backend` (prompt versions, dataset versions, a
dataset file pushed as a new version) and the runner's `RunStore` (runs and their results).
The REST client is blocking, so the runner's async calls go through a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from keel.cli.api_client import ApiProblem, KeelApi, segment
from keel.core.datasets import DatasetVersion, item_to_json, items_hash
from keel.core.eval_runs import (
    EvalRun,
    ItemResult,
    RunStatus,
    result_from_json,
    result_to_json,
    run_from_json,
    run_to_json,
)
from keel.core.prompts import PromptVersion, version_from_json
from keel.evals.dataset_files import load_dataset_file
from keel.evals.datasets import DatasetError, parse_items
from keel.evals.suite import SuiteError

_RESULTS_PER_POST = 500


class ApiEvalBackend:
    """Prompts, datasets and eval runs through the REST API of `api`."""

    def __init__(self, api: KeelApi) -> None:
        self._api = api
        # Result posts go out one at a time, in order: the server's writes serialize anyway,
        # and concurrent writers would only wait on each other's database lock.
        self._poster = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-eval-results")

    # planning -------------------------------------------------------------------------

    def prompt_version(self, name: str, selector: str) -> PromptVersion:
        """The version a number or a label names."""
        doc = self._api.get(f"/api/prompts/{segment(name)}/versions/{segment(selector)}")
        return version_from_json(doc)

    def dataset(self, name: str, version: int | None) -> DatasetVersion:
        """A dataset version with all its items."""
        path = f"/api/datasets/{segment(name)}"
        info = self._api.get(path, {"version": str(version)} if version else None)
        query = {"version": str(info["version"]), "limit": "1000"}
        docs = list(self._api.pages(f"{path}/items", query))
        items = parse_items((f"items[{i}]", doc) for i, doc in enumerate(docs))
        return DatasetVersion(
            name=info["name"],
            version=int(info["version"]),
            items=tuple(items),
            content_hash=str(info.get("content_hash") or items_hash(items)),
            created_at=float(info.get("created_at") or 0.0),
            author=info.get("author"),
            message=info.get("message"),
            source=info.get("source"),
        )

    def push_dataset(self, name: str, file: Path) -> DatasetVersion:
        """Push the file's items (a new version only when they changed) and read it back."""
        try:
            items = load_dataset_file(file)
        except DatasetError as exc:
            raise SuiteError(str(file), None, None, str(exc)) from None
        outcome = self._api.post(
            "/api/datasets",
            {
                "name": name,
                "items": [item_to_json(item) for item in items],
                "source": str(file),
                "message": f"pushed by keel eval run from {file.name}",
            },
        )
        return self.dataset(name, int(outcome["version"]))

    # runs -----------------------------------------------------------------------------

    async def create(self, run: EvalRun) -> EvalRun:
        """Store a new run."""
        body = run_to_json(run)
        for key in ("run_id", "status", "finished_at", "summary"):
            body.pop(key, None)
        return run_from_json(await self._call("POST", "/api/evals/runs", body))

    async def get(self, run_id: str) -> EvalRun | None:
        """The run (None when it does not exist)."""
        try:
            return run_from_json(await self._call("GET", f"/api/evals/runs/{segment(run_id)}"))
        except ApiProblem as exc:
            if exc.status == 404:
                return None
            raise

    async def completed(self, run_id: str) -> set[tuple[str, int]]:
        """The (item, repetition) pairs stored."""
        doc = await self._call("GET", f"/api/evals/runs/{segment(run_id)}/completed")
        return {(entry["item_id"], int(entry["repetition"])) for entry in doc["data"]}

    def add_results(self, run_id: str, results: Sequence[ItemResult]) -> asyncio.Future[None]:
        """Start storing a batch in a worker thread (posts of at most 500); await to wait."""
        path = f"/api/evals/runs/{segment(run_id)}/results"

        def post() -> None:
            for start in range(0, len(results), _RESULTS_PER_POST):
                chunk = results[start : start + _RESULTS_PER_POST]
                self._api.post(path, {"results": [result_to_json(r) for r in chunk]})

        return asyncio.get_running_loop().run_in_executor(self._poster, post)

    async def results(self, run_id: str) -> list[ItemResult]:
        """Every result of the run."""
        return await asyncio.to_thread(self.results_now, run_id)

    def results_now(self, run_id: str) -> list[ItemResult]:
        """Every result of the run (blocking)."""
        path = f"/api/evals/runs/{segment(run_id)}/results"
        return [result_from_json(doc) for doc in self._api.pages(path, {"limit": "10000"})]

    def run_now(self, run_id: str) -> EvalRun:
        """The run (blocking; ApiProblem 404 when it does not exist)."""
        return run_from_json(self._api.get(f"/api/evals/runs/{segment(run_id)}"))

    async def finish(
        self, run_id: str, status: RunStatus, summary: dict[str, Any] | None
    ) -> EvalRun:
        """Mark the run finished or interrupted, with its summary."""
        body = {"status": status, "summary": summary}
        return run_from_json(
            await self._call("POST", f"/api/evals/runs/{segment(run_id)}/finish", body)
        )

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self._api.request, method, path, body=body)
