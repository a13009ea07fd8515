"""Protocols for everything with I/O; implemented in the outer layers, faked in keel.testing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from keel.core.audit import AuditEvent
from keel.core.completions import ModelAnswer as ModelAnswer  # re-exported: the ChatModel result
from keel.core.datasets import DatasetItem
from keel.core.eval_runs import EvalRun, ItemResult, RunStatus
from keel.core.prompts import PromptTemplate, PromptVersion
from keel.core.rollout import LabelEvent, Target
from keel.core.spans import Span
from keel.core.usage import Usage


@dataclass(slots=True)
class ChatResult:
    """A non-streaming chat completion, already in the OpenAI response format.

    `body` is sent to the client as is; `response` is the same document parsed,
    for recording; `usage` is None when the upstream reported none.
    """

    body: bytes
    response: dict[str, Any]
    usage: Usage | None
    model: str


@dataclass(slots=True)
class EmbeddingsResult:
    """An embeddings response in the OpenAI format."""

    body: bytes
    usage: Usage | None
    model: str


class ChatStream(Protocol):
    """An open streaming completion, yielding OpenAI SSE frames (`data: {...}\\n\\n`).

    Each item holds one or more whole frames: everything one upstream read
    completed, so a burst of chunks costs one write to the client. The last
    frame is `data: [DONE]\\n\\n`. After iteration ends, `usage` holds
    what the upstream reported (or None), `output` the assembled assistant
    answer as `{"choices": [{"index", "message", "finish_reason"}]}` (the shape
    of a non-streaming response's choices) and `first_token_at` the
    `time.perf_counter()` at which the first content or tool-call delta arrived.
    Iteration raises `UpstreamError` if the upstream fails mid-stream.
    """

    usage: Usage | None
    output: dict[str, Any]
    model: str
    first_token_at: float | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    """One upstream deployment speaking one dialect; requests and answers in OpenAI format.

    Each call raises `keel.core.errors.UpstreamError` on failure; the gateway
    decides whether to retry or fall back. `body` is the client's request; a
    provider never mutates it.
    """

    async def chat(self, body: dict[str, Any]) -> ChatResult: ...

    async def open_chat_stream(self, body: dict[str, Any]) -> ChatStream: ...

    async def embeddings(self, body: dict[str, Any]) -> EmbeddingsResult: ...


class SpanSink(Protocol):
    """Where finished spans go. `emit` never blocks and never raises."""

    def emit(self, span: Span) -> None: ...


class SpanQueue(SpanSink, Protocol):
    """A sink with a bounded queue that says how many more spans it can take now."""

    def room(self) -> int: ...


# Given a label's current targets (None: the label does not exist yet) and its events,
# the targets to move it to and the id of the event a rollback reverts (else None).
LabelChange = Callable[
    [tuple[Target, ...] | None, Sequence[LabelEvent]], tuple[tuple[Target, ...], int | None]
]


@dataclass(frozen=True, slots=True)
class NewVersion:
    """What a push asks the registry to store."""

    template: PromptTemplate
    content_hash: str
    pins: dict[str, int]
    author: str | None
    message: str | None
    source_path: str | None
    git_commit: str | None


class PromptRepository(Protocol):
    """Prompt versions, labels, label events and the audit log (blocking calls)."""

    def latest(self, name: str) -> PromptVersion | None: ...

    def version(self, name: str, version: int) -> PromptVersion | None: ...

    def versions(self, name: str) -> list[PromptVersion]: ...

    def names(self) -> list[str]: ...

    def labels(self, name: str) -> dict[str, tuple[Target, ...]]: ...

    def add_version(self, new: NewVersion, at: float) -> PromptVersion:
        """Store the next version of the prompt, move `latest` to it and audit the push,
        in one transaction."""
        ...

    def move_label(
        self, name: str, label: str, action: str, change: LabelChange, actor: str | None, at: float
    ) -> LabelEvent:
        """Apply `change` to the label and audit it, in one transaction."""
        ...

    def audit_events(self, target: str | None = None, limit: int = 100) -> list[AuditEvent]: ...

    def revision(self) -> int:
        """A number that grows with every push and label move (for caches to notice)."""
        ...


@dataclass(frozen=True, slots=True)
class TraceLink:
    """Where a model call's span goes: the trace (and parent span) it joins, and the
    tags and metadata recorded on it (an eval run's id, the item, the repetition)."""

    trace_id: str
    parent_span_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None


class ChatModel(Protocol):
    """Chat completions through the gateway, for eval tasks and judges.

    `body` is an OpenAI chat request (it may name a registry prompt in `prompt`). Raises
    `keel.core.errors.UpstreamError` (or a subclass) when the call fails after the
    gateway's own retries and fallbacks.
    """

    async def complete(
        self, body: dict[str, Any], link: TraceLink | None = None
    ) -> ModelAnswer: ...


class Embedder(Protocol):
    """Sentence embeddings from a local model: one unit-length vector per text.

    Blocking and CPU-bound: async callers run it in a worker thread.
    """

    @property
    def model_name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass(frozen=True, slots=True)
class DatasetVersionInfo:
    """One dataset version without its items: what lists and headers show."""

    name: str
    version: int
    item_count: int
    content_hash: str
    created_at: float
    author: str | None = None
    message: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class NewDatasetVersion:
    """What a push asks the dataset store to keep."""

    name: str
    items: tuple[DatasetItem, ...]
    content_hash: str
    author: str | None
    message: str | None
    source: str | None


class DatasetRepository(Protocol):
    """Dataset versions and their items (blocking calls)."""

    def latest_versions(self) -> list[DatasetVersionInfo]:
        """The newest version of every dataset, by name."""
        ...

    def latest(self, name: str) -> DatasetVersionInfo | None: ...

    def version(self, name: str, version: int) -> DatasetVersionInfo | None: ...

    def versions(self, name: str) -> list[DatasetVersionInfo]:
        """Every version of `name`, oldest first."""
        ...

    def items(
        self, name: str, version: int, *, after: int = -1, limit: int | None = None
    ) -> list[tuple[int, DatasetItem]]:
        """(position, item) of the version in order, from the position after `after`."""
        ...

    def items_by_id(self, name: str, version: int, ids: Sequence[str]) -> dict[str, DatasetItem]:
        """The items of the version with these ids (missing ids are left out)."""
        ...

    def item_ids(self, name: str, version: int, ids: Sequence[str]) -> set[str]:
        """Which of these ids the version has (cheaper than reading the items)."""
        ...

    def add_version(self, new: NewDatasetVersion, at: float) -> tuple[DatasetVersionInfo, bool]:
        """Store the next version of the dataset, unless its newest version holds the same
        content already; returns that version and whether it was created (atomically)."""
        ...


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which eval runs to list; unset fields match every run."""

    suite: str | None = None
    name: str | None = None
    dataset: str | None = None
    status: RunStatus | None = None


class EvalRunRepository(Protocol):
    """Eval runs and their item results (blocking calls)."""

    def create(self, run: EvalRun) -> None: ...

    def get(self, run_id: str) -> EvalRun | None: ...

    def list_runs(
        self, where: RunFilter, limit: int, after: tuple[float, str] | None = None
    ) -> list[EvalRun]:
        """Runs matching `where`, newest first (by start time, then id), after the key
        (started_at, run_id) of the previous page."""
        ...

    def set_status(
        self,
        run_id: str,
        status: RunStatus,
        finished_at: float | None,
        summary: Mapping[str, Any] | None,
    ) -> EvalRun | None:
        """Set the run's status, end time and summary; None when there is no such run."""
        ...

    def upsert_results(self, run_id: str, results: Sequence[ItemResult]) -> list[ItemResult]:
        """Store each result in place of the one with the same (item, repetition); returns
        those whose root span (trace_id, span_id) was not stored before."""
        ...

    def results(
        self, run_id: str, limit: int, after: tuple[int, str] | None = None
    ) -> list[ItemResult]:
        """Results by repetition then item id, after the key (repetition, item_id)."""
        ...

    def completed(self, run_id: str) -> set[tuple[str, int]]:
        """The (item id, repetition) pairs the run holds results for."""
        ...
