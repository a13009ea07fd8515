"""The eval response cache: re-running an unchanged task or judge costs nothing.

Two tables in one file. `responses` holds model answers by request; `results` holds whole
item results (the answer and every evaluator's verdict) by everything they depend on: the
task's request, the item, and each evaluator's fingerprint (its type, parameters and code).
A re-run of an unchanged suite reads one result per item and calls and evaluates nothing;
changing one evaluator re-evaluates with the cached answers.

A model call is identified by its request body (canonical JSON) and the repetition it
serves (`--repeat 3` makes three distinct calls per item; a re-run reuses all three).
Answers are kept in a local SQLite file (`~/.cache/keel/eval-responses.sqlite` unless
`KEEL_EVAL_CACHE` names another), so a CI job that caches that path between builds only
pays for what changed. Lookups are single indexed reads; writes are buffered and committed
in batches, so a run of thousands of calls does not wait on a disk sync per call.

A cached answer keeps the trace id, latency and cost of the call that produced it: the
evaluators see the same case, and the result still links to the trace where it was made.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from keel.core.datasets import DatasetItem, item_to_json
from keel.core.eval_runs import ItemResult, result_from_json, result_to_json
from keel.core.usage import Usage
from keel.ports import ChatModel, ModelAnswer, TraceLink

REPETITION_KEY = "keel.eval.repetition"
_FLUSH_EVERY = 200


def default_cache_path() -> Path:
    """Where the cache lives when nothing else is configured."""
    return Path.home() / ".cache" / "keel" / "eval-responses.sqlite"


class ResponseCache:
    """Model answers by request key, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for table in ("responses", "results"):
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} "
                "(key TEXT PRIMARY KEY, answer BLOB NOT NULL, created_at REAL NOT NULL)"
            )
        self._pending: dict[str, bytes] = {}
        self._pending_results: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> ModelAnswer | None:
        """The answer stored under `key`, or None."""
        data = self._read("responses", self._pending, key)
        return None if data is None else _answer_from_json(orjson.loads(data))

    def put(self, key: str, answer: ModelAnswer) -> None:
        """Store an answer (committed with the next batch, or at `flush`)."""
        self._write(self._pending, key, orjson.dumps(_answer_to_json(answer)))

    def get_result(self, key: str) -> ItemResult | None:
        """The item result stored under `key` (as it was stored), or None."""
        data = self._read("results", self._pending_results, key)
        return None if data is None else result_from_json(orjson.loads(data))

    def put_result(self, key: str, result: ItemResult) -> None:
        """Store an item result (committed with the next batch, or at `flush`)."""
        self._write(self._pending_results, key, orjson.dumps(result_to_json(result)))

    def _read(self, table: str, pending: dict[str, bytes], key: str) -> bytes | None:
        with self._lock:
            data = pending.get(key)
            if data is None:
                row = self._db.execute(f"SELECT answer FROM {table} WHERE key = ?", (key,))
                found = row.fetchone()
                data = found[0] if found is not None else None
        return data

    def _write(self, pending: dict[str, bytes], key: str, data: bytes) -> None:
        with self._lock:
            pending[key] = data
            full = len(self._pending) + len(self._pending_results) >= _FLUSH_EVERY
        if full:
            self.flush()

    def flush(self) -> None:
        """Commit every buffered answer and result."""
        with self._lock:
            if not self._pending and not self._pending_results:
                return
            now = time.time()
            self._db.execute("BEGIN")
            for table, pending in (
                ("responses", self._pending),
                ("results", self._pending_results),
            ):
                rows = [(key, data, now) for key, data in pending.items()]
                self._db.executemany(
                    f"INSERT OR REPLACE INTO {table} (key, answer, created_at) VALUES (?, ?, ?)",
                    rows,
                )
                pending.clear()
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self._db.close()


def result_key(request: str, item: DatasetItem, evaluators: list[str], scope: str = "") -> str:
    """The cache key of one item's whole result: the task's request key, the item as the
    evaluators see it (expected, context, metadata) and every evaluator's fingerprint."""
    canonical = orjson.dumps(
        [request, item_to_json(item), evaluators, scope], option=orjson.OPT_SORT_KEYS, default=repr
    )
    return hashlib.sha256(canonical).hexdigest()


def request_key(body: dict[str, Any], repetition: int, namespace: str = "") -> str:
    """The cache key of one call: body, repetition and where it was sent."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical)
    digest.update(f"|{repetition}|{namespace}".encode())
    return digest.hexdigest()


class CachingChatModel:
    """A ChatModel that answers from the cache when it can and fills it when it cannot."""

    def __init__(
        self, inner: ChatModel, cache: ResponseCache, namespace: str = "", *, read: bool = True
    ) -> None:
        """`namespace` separates gateways (their aliases may mean different models);
        `read=False` calls the model every time and only refreshes the cache."""
        self._inner = inner
        self._cache = cache
        self._namespace = namespace
        self._read = read

    async def complete(self, body: dict[str, Any], link: TraceLink | None = None) -> ModelAnswer:
        """A cached answer when this call was made before, else the model's (then cached)."""
        repetition = 0
        if link is not None and link.metadata is not None:
            repetition = int(link.metadata.get(REPETITION_KEY, 0))
        key = request_key(body, repetition, self._namespace)
        found = self._cache.get(key) if self._read else None
        if found is not None:
            return found
        answer = await self._inner.complete(body, link)
        self._cache.put(key, answer)
        return answer


def _answer_to_json(answer: ModelAnswer) -> dict[str, Any]:
    return {
        "text": answer.text,
        "model": answer.model,
        "latency_ms": answer.latency_ms,
        "usage": answer.usage.as_dict() if answer.usage is not None else None,
        "cost_usd": answer.cost_usd,
        "logprobs": answer.logprobs,
        "finish_reason": answer.finish_reason,
        "trace_id": answer.trace_id,
    }


def _answer_from_json(doc: dict[str, Any]) -> ModelAnswer:
    usage = doc.get("usage")
    return ModelAnswer(
        text=doc["text"],
        model=doc["model"],
        latency_ms=doc["latency_ms"],
        usage=Usage(**usage) if isinstance(usage, dict) else None,
        cost_usd=doc.get("cost_usd"),
        logprobs=doc.get("logprobs"),
        finish_reason=doc.get("finish_reason"),
        trace_id=doc.get("trace_id"),
        cached=True,
    )
