"""The eval run repository: runs and their item results, in SQL.

A run is one row of `eval_runs`; each task call on an item (one repetition) is one row
of `eval_results`, keyed by (run, repetition, item), with the verdicts of every
evaluator as one JSON column. Results are upserted (`INSERT ... ON CONFLICT DO UPDATE`,
spelled once per dialect), so a runner that resumes, or retries a batch whose answer it
never got, can send the same results again. Runs list newest first by (started_at,
run_id) on `ix_eval_runs_*_started_at`; results page by (repetition, item id), the
order of the primary key.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Engine, and_, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from keel.core.eval_runs import (
    EvalRun,
    ItemResult,
    RunStatus,
    result_to_json,
    run_to_json,
    verdict_from_json,
)
from keel.ports import RunFilter
from keel.store.schema import eval_results_table, eval_runs_table
from keel.store.transactions import write

_RUNS = eval_runs_table.c
_RESULTS = eval_results_table.c
_KEY = ("run_id", "repetition", "item_id")


def _run_row(run: EvalRun) -> dict[str, Any]:
    row = run_to_json(run)
    row["metadata"] = row["metadata"] or None  # an empty mapping is stored as NULL
    return row


def _run(row: Mapping[Any, Any]) -> EvalRun:
    return EvalRun(
        run_id=row["run_id"],
        name=row["name"],
        suite=row["suite"],
        variant=row["variant"],
        dataset=row["dataset"],
        dataset_version=row["dataset_version"],
        task=row["task"],
        evaluators=tuple(row["evaluators"]),
        repeat=row["repeat"],
        status=cast(RunStatus, row["status"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        metadata=row["metadata"] or {},
        summary=row["summary"],
    )


def _result_row(run_id: str, result: ItemResult) -> dict[str, Any]:
    return {"run_id": run_id, **result_to_json(result)}


def _result(row: Mapping[Any, Any]) -> ItemResult:
    return ItemResult(
        item_id=row["item_id"],
        repetition=row["repetition"],
        output=row["output"],
        error=row["error"],
        latency_ms=row["latency_ms"],
        cost_usd=row["cost_usd"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        started_at=row["started_at"],
        cached=bool(row["cached"]),
        verdicts={name: verdict_from_json(v) for name, v in (row["verdicts"] or {}).items()},
    )


class EvalRunStore:
    """`keel.ports.EvalRunRepository` on a SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, run: EvalRun) -> None:
        write(self._engine, lambda c: c.execute(insert(eval_runs_table), _run_row(run)))

    def get(self, run_id: str) -> EvalRun | None:
        with self._engine.connect() as connection:
            return _get(connection, run_id)

    def list_runs(
        self, where: RunFilter, limit: int, after: tuple[float, str] | None = None
    ) -> list[EvalRun]:
        query = select(eval_runs_table)
        for column, wanted in (
            (_RUNS.suite, where.suite),
            (_RUNS.name, where.name),
            (_RUNS.dataset, where.dataset),
            (_RUNS.status, where.status),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if after is not None:
            started, run_id = after
            query = query.where(
                or_(
                    _RUNS.started_at < started,
                    and_(_RUNS.started_at == started, _RUNS.run_id < run_id),
                )
            )
        query = query.order_by(_RUNS.started_at.desc(), _RUNS.run_id.desc()).limit(limit)
        with self._engine.connect() as connection:
            return [_run(row) for row in connection.execute(query).mappings()]

    def set_status(
        self,
        run_id: str,
        status: RunStatus,
        finished_at: float | None,
        summary: Mapping[str, Any] | None,
    ) -> EvalRun | None:
        def change(connection: Connection) -> EvalRun | None:
            values: dict[str, Any] = {"status": status, "finished_at": finished_at}
            if summary is not None:
                values["summary"] = dict(summary)
            connection.execute(
                update(eval_runs_table).where(_RUNS.run_id == run_id).values(**values)
            )
            return _get(connection, run_id)

        return write(self._engine, change)

    def upsert_results(self, run_id: str, results: Sequence[ItemResult]) -> list[ItemResult]:
        if not results:
            return []

        def upsert(connection: Connection) -> list[ItemResult]:
            ids = sorted({r.item_id for r in results if r.span_id is not None})
            stored = {  # the spans already recorded, for the results that carry one
                (row.repetition, row.item_id): (row.trace_id, row.span_id)
                for row in connection.execute(
                    select(
                        _RESULTS.repetition, _RESULTS.item_id, _RESULTS.trace_id, _RESULTS.span_id
                    ).where(_RESULTS.run_id == run_id, _RESULTS.item_id.in_(ids))
                )
            } if ids else {}  # fmt: skip
            rows = [_result_row(run_id, result) for result in results]
            connection.execute(_upsert_statement(connection.dialect.name), rows)
            return [
                result
                for result in results
                if result.span_id is not None
                and result.trace_id is not None
                and stored.get((result.repetition, result.item_id))
                != (result.trace_id, result.span_id)
            ]

        return write(self._engine, upsert)

    def results(
        self, run_id: str, limit: int, after: tuple[int, str] | None = None
    ) -> list[ItemResult]:
        query = select(eval_results_table).where(_RESULTS.run_id == run_id)
        if after is not None:
            repetition, item_id = after
            query = query.where(
                or_(
                    _RESULTS.repetition > repetition,
                    and_(_RESULTS.repetition == repetition, _RESULTS.item_id > item_id),
                )
            )
        query = query.order_by(_RESULTS.repetition, _RESULTS.item_id).limit(limit)
        with self._engine.connect() as connection:
            return [_result(row) for row in connection.execute(query).mappings()]

    def completed(self, run_id: str) -> set[tuple[str, int]]:
        query = select(_RESULTS.item_id, _RESULTS.repetition).where(_RESULTS.run_id == run_id)
        with self._engine.connect() as connection:
            return {(row.item_id, row.repetition) for row in connection.execute(query)}


def _get(connection: Connection, run_id: str) -> EvalRun | None:
    row = connection.execute(select(eval_runs_table).where(_RUNS.run_id == run_id)).first()
    return None if row is None else _run(row._mapping)


@functools.cache
def _upsert_statement(dialect: str) -> Any:
    """INSERT of result rows that replaces the row with the same key (per dialect, built once)."""
    values = [column.name for column in eval_results_table.columns if column.name not in _KEY]
    if dialect == "postgresql":
        on_postgresql = postgresql.insert(eval_results_table)
        return on_postgresql.on_conflict_do_update(
            index_elements=list(_KEY), set_={n: on_postgresql.excluded[n] for n in values}
        )
    on_sqlite = sqlite.insert(eval_results_table)
    return on_sqlite.on_conflict_do_update(
        index_elements=list(_KEY), set_={n: on_sqlite.excluded[n] for n in values}
    )
