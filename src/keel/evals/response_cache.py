"""The eval response cache: re-running an unchanged task or judge costs nothing.

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

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
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses "
            "(key TEXT PRIMARY KEY, answer BLOB NOT NULL, created_at REAL NOT NULL)"
        )
        self._pending: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ModelAnswer | None:
        """The answer stored under `key`, or None."""
        with self._lock:
            data = self._pending.get(key)
            if data is None:
                row = self._db.execute(
                    "SELECT answer FROM responses WHERE key = ?", (key,)
                ).fetchone()
                data = row[0] if row is not None else None
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        return _answer_from_json(orjson.loads(data))

    def put(self, key: str, answer: ModelAnswer) -> None:
        """Store an answer (committed with the next batch, or at `flush`)."""
        with self._lock:
            self._pending[key] = orjson.dumps(_answer_to_json(answer))
            full = len(self._pending) >= _FLUSH_EVERY
        if full:
            self.flush()

    def flush(self) -> None:
        """Commit every buffered answer."""
        with self._lock:
            if not self._pending:
                return
            now = time.time()
            rows = [(key, data, now) for key, data in self._pending.items()]
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO responses (key, answer, created_at) VALUES (?, ?, ?)", rows
            )
            self._db.execute("COMMIT")
            self._pending.clear()

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self._db.close()


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
    answer = ModelAnswer(
        text=doc["text"],
        model=doc["model"],
        latency_ms=doc["latency_ms"],
        usage=Usage(**usage) if isinstance(usage, dict) else None,
        cost_usd=doc.get("cost_usd"),
        logprobs=doc.get("logprobs"),
        finish_reason=doc.get("finish_reason"),
        trace_id=doc.get("trace_id"),
    )
    return replace(answer, cached=True)
