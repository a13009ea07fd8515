"""Evaluation's part of the OpenAPI document: /api/datasets and /api/evals/runs.

Request bodies come from the pydantic models the handlers validate with, so the document
cannot disagree with them; query parameter bounds come from the handlers' tables.
"""

from __future__ import annotations

from pydantic import BaseModel

from keel.core.eval_runs import RUN_STATUSES
from keel.server.api_datasets import ITEMS_LIMIT, DatasetPushBody, FromTracesBody
from keel.server.api_eval_runs import (
    RESULTS_LIMIT,
    RUNS_LIMIT,
    FinishBody,
    ResultsBody,
    RunCreateBody,
)
from keel.server.openapi_parts import EPOCH, JSON, TEXT, nullable, path_param, query, ref

_PROBLEM = {"application/problem+json": {"schema": ref("Problem")}}
_STATUS_TEXT = {
    400: "A query parameter (or the JSON) is wrong; errors[].parameter names it.",
    401: "The master key is configured and was not sent.",
    404: "No such dataset, version or run; the detail names it.",
    409: "The run is finished and takes no more results.",
    413: "The body is too large.",
    422: "The body is invalid; errors[].field names what is wrong (items[3].input).",
}
_INT: JSON = {"type": "integer"}
_ANY: JSON = {}
_OBJECT: JSON = {"type": "object", "additionalProperties": True}
_NAME = path_param("name", "The dataset's name.")
_RUN_ID = path_param("run_id", "The run's id (32 hex digits).")
_CURSOR = query("cursor", TEXT, "The `next_cursor` of the previous page.")
_VERSION = query("version", {"type": "integer", "minimum": 1}, "A version (default: the newest).")


def _operation(
    tag: str,
    operation_id: str,
    summary: str,
    ok: JSON,
    *problems: int,
    parameters: list[JSON] | None = None,
    body: str | None = None,
) -> JSON:
    responses: JSON = {
        "200": {"description": "OK.", "content": {"application/json": {"schema": ok}}}
    }
    for status in sorted(
        {401, *problems, *((400,) if parameters and _queries(parameters) else ())}
    ):
        responses[str(status)] = {"description": _STATUS_TEXT[status], "content": _PROBLEM}
    operation: JSON = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        }
    return operation


def _queries(parameters: list[JSON]) -> bool:
    return any(p["in"] == "query" for p in parameters)


def _limit(bounds: dict[str, int], what: str) -> JSON:
    return query("limit", {"type": "integer", **bounds}, f"How many {what} to return.")


def eval_paths() -> JSON:
    """The /api/datasets and /api/evals/runs paths."""
    return {
        "/api/datasets": {
            "get": _operation(
                "datasets",
                "listDatasets",
                "Every dataset with its newest version.",
                ref("DatasetList"),
            ),
            "post": _operation(
                "datasets",
                "pushDataset",
                "Store the items as the dataset's next immutable version (bodies up to 64 MiB). "
                "Items identical to the newest version create nothing (status unchanged); "
                "with dry_run, say what would change.",
                ref("DatasetPushResult"),
                400,
                413,
                422,
                body="DatasetPushBody",
            ),
        },
        "/api/datasets/{name}": {
            "get": _operation(
                "datasets",
                "getDataset",
                "A version's header (default: the newest).",
                ref("DatasetVersion"),
                404,
                parameters=[_NAME, _VERSION],
            )
        },
        "/api/datasets/{name}/versions": {
            "get": _operation(
                "datasets",
                "listDatasetVersions",
                "Every version of a dataset, newest first.",
                ref("DatasetVersionList"),
                404,
                parameters=[_NAME],
            )
        },
        "/api/datasets/{name}/items": {
            "get": _operation(
                "datasets",
                "listDatasetItems",
                "A version's items in order, a page at a time.",
                ref("DatasetItemPage"),
                404,
                parameters=[_NAME, _VERSION, _limit(ITEMS_LIMIT, "items"), _CURSOR],
            )
        },
        "/api/datasets/{name}/from-traces": {
            "post": _operation(
                "datasets",
                "datasetFromTraces",
                "Make the dataset's next version from the newest traces a filter selects (the "
                "filters of GET /api/traces, and the prompt a trace used): one item per trace, "
                "its input the prompt variables the root span carries, else the root span's "
                "input; expected the trace's output when asked; metadata the trace id and the "
                "filter.",
                ref("DatasetFromTracesResult"),
                404,
                422,
                parameters=[_NAME],
                body="FromTracesBody",
            )
        },
        "/api/evals/runs": {
            "post": _operation(
                "evals",
                "createEvalRun",
                "Start a run: what it pins (a stored dataset version, the task, evaluators).",
                ref("EvalRun"),
                422,
                body="RunCreateBody",
            ),
            "get": _operation(
                "evals",
                "listEvalRuns",
                "Runs, newest first, filtered.",
                ref("EvalRunList"),
                parameters=[
                    query("suite", TEXT, "Only runs of this suite."),
                    query("name", TEXT, "Only runs with this name."),
                    query("dataset", TEXT, "Only runs on this dataset."),
                    query("status", {"type": "string", "enum": list(RUN_STATUSES)}, "Status."),
                    _limit(RUNS_LIMIT, "runs"),
                    _CURSOR,
                ],
            ),
        },
        "/api/evals/runs/{run_id}": {
            "get": _operation(
                "evals", "getEvalRun", "One run.", ref("EvalRun"), 404, parameters=[_RUN_ID]
            )
        },
        "/api/evals/runs/{run_id}/results": {
            "post": _operation(
                "evals",
                "recordEvalResults",
                "Upsert a batch of results by (item_id, repetition), and record each new "
                "result's root span (name `eval <run name>`, the result's trace_id and "
                "span_id) in the tracing store. A failed or interrupted run runs again.",
                ref("EvalResultsRecorded"),
                404,
                409,
                422,
                parameters=[_RUN_ID],
                body="ResultsBody",
            ),
            "get": _operation(
                "evals",
                "listEvalResults",
                "A run's results by repetition, then item id.",
                ref("EvalResultPage"),
                404,
                parameters=[_RUN_ID, _limit(RESULTS_LIMIT, "results"), _CURSOR],
            ),
        },
        "/api/evals/runs/{run_id}/completed": {
            "get": _operation(
                "evals",
                "listCompletedEvalItems",
                "The (item_id, repetition) pairs the run has results for: what a resumed run "
                "skips.",
                ref("EvalCompleted"),
                404,
                parameters=[_RUN_ID],
            )
        },
        "/api/evals/runs/{run_id}/finish": {
            "post": _operation(
                "evals",
                "finishEvalRun",
                "End a run as finished, failed or interrupted, with its summary.",
                ref("EvalRun"),
                404,
                422,
                parameters=[_RUN_ID],
                body="FinishBody",
            )
        },
    }


def _object(properties: JSON, description: str = "") -> JSON:
    out: JSON = {"type": "object", "properties": properties, "required": sorted(properties)}
    if description:
        out["description"] = description
    return out


def _page(item: JSON, description: str, **more: JSON) -> JSON:
    return _object(
        {
            **more,
            "data": {"type": "array", "items": item},
            "next_cursor": {
                **nullable(TEXT),
                "description": "Pass as `cursor` for the next page; null on the last.",
            },
        },
        description,
    )


def _bodies(*models: type[BaseModel]) -> dict[str, JSON]:
    out: dict[str, JSON] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def eval_schemas() -> dict[str, JSON]:
    """The schemas the evaluation paths refer to."""
    header = {
        "name": TEXT,
        "version": _INT,
        "item_count": _INT,
        "content_hash": TEXT,
        "created_at": EPOCH,
        "author": nullable(TEXT),
        "message": nullable(TEXT),
        "source": {**nullable(TEXT), "description": "The file or trace filter it came from."},
    }
    push = {
        "name": TEXT,
        "status": {"type": "string", "enum": ["created", "unchanged"]},
        "version": {**_INT, "description": "The new version (or, unchanged, the newest)."},
        "previous": nullable(_INT),
        "item_count": _INT,
        "content_hash": TEXT,
        "added": {**_INT, "description": "Item ids not in the previous version."},
        "removed": {**_INT, "description": "Item ids of the previous version left out."},
        "changed": {**_INT, "description": "Item ids kept with other content."},
        "dry_run": {"type": "boolean"},
    }
    verdict = {
        "type": "object",
        "properties": {
            "score": nullable({"type": "number"}),
            "passed": nullable({"type": "boolean"}),
            "explanation": TEXT,
            "error": TEXT,
            "raw": TEXT,
            "details": _OBJECT,
        },
        "required": ["score", "passed", "explanation"],
    }
    number = nullable({"type": "number"})
    result = _object(
        {
            "item_id": TEXT,
            "repetition": _INT,
            "output": nullable(TEXT),
            "error": nullable(TEXT),
            "latency_ms": number,
            "cost_usd": number,
            "input_tokens": nullable(_INT),
            "output_tokens": nullable(_INT),
            "trace_id": nullable(TEXT),
            "span_id": nullable(TEXT),
            "started_at": number,
            "cached": {"type": "boolean"},
            "verdicts": {"type": "object", "additionalProperties": ref("Verdict")},
        },
        "One task call on one item (one repetition) and every evaluator's verdict.",
    )
    run = _object(
        {
            "run_id": TEXT,
            "name": TEXT,
            "suite": nullable(TEXT),
            "variant": nullable(TEXT),
            "dataset": TEXT,
            "dataset_version": _INT,
            "task": _OBJECT,
            "evaluators": {"type": "array", "items": _OBJECT},
            "repeat": _INT,
            "status": {"type": "string", "enum": list(RUN_STATUSES)},
            "started_at": EPOCH,
            "finished_at": nullable(EPOCH),
            "metadata": _OBJECT,
            "summary": nullable(_OBJECT),
        },
        "A run and what it pinned; its results are read apart.",
    )
    item = {
        "type": "object",
        "properties": {
            "id": TEXT,
            "input": {**_ANY, "description": "A text, or an object of prompt variables."},
            "expected": _ANY,
            "context": {
                "type": "array",
                "items": _object({"id": TEXT, "text": TEXT}),
            },
            "metadata": _OBJECT,
        },
        "required": ["id", "input"],
    }
    return {
        **_bodies(DatasetPushBody, FromTracesBody, RunCreateBody, ResultsBody, FinishBody),
        "DatasetList": _object(
            {
                "data": {
                    "type": "array",
                    "items": _object(
                        {
                            "name": TEXT,
                            "latest": _INT,
                            "item_count": _INT,
                            "content_hash": TEXT,
                            "updated_at": EPOCH,
                            "author": nullable(TEXT),
                            "message": nullable(TEXT),
                        }
                    ),
                }
            }
        ),
        "DatasetVersion": _object(
            {**header, "latest": {**_INT, "description": "The dataset's newest version."}}
        ),
        "DatasetVersionList": _object(
            {"name": TEXT, "data": {"type": "array", "items": _object(header)}}
        ),
        "DatasetItem": item,
        "DatasetItemPage": _page(
            ref("DatasetItem"),
            "Items of one version, in order.",
            name=TEXT,
            version=_INT,
            item_count=_INT,
        ),
        "DatasetPushResult": _object(push, "What the push did (or would do)."),
        "DatasetFromTracesResult": _object(
            {
                **push,
                "traces": {**_INT, "description": "Traces the filter selected."},
                "without_input": {**_INT, "description": "Of those, without a recorded input."},
                "duplicates": {**_INT, "description": "Of those, repeating an item's input."},
                "kept": {**_INT, "description": "Items kept from the newest version (append)."},
            },
            "What the push from traces did.",
        ),
        "Verdict": verdict,
        "EvalResult": result,
        "EvalRun": run,
        "EvalRunList": _page(ref("EvalRun"), "Runs, newest first."),
        "EvalResultPage": _page(ref("EvalResult"), "Results by repetition, then item id."),
        "EvalResultsRecorded": _object(
            {
                "stored": _INT,
                "spans": {**_INT, "description": "Root spans recorded (new results only)."},
                "status": {"type": "string", "enum": list(RUN_STATUSES)},
            }
        ),
        "EvalCompleted": _object(
            {
                "data": {
                    "type": "array",
                    "items": _object({"item_id": TEXT, "repetition": _INT}),
                }
            }
        ),
    }
