"""Tasks: what an eval run calls for each dataset item.

- `PromptTask`: a prompt version with a model alias, called through the gateway. A registry
  version is sent by reference (`prompt: {name, version, variables}`), so the gateway renders
  it and records the version on its span; a version read from a local file (a change not yet
  pushed) is rendered here and sent as messages.
- `ModelTask`: the item's input sent as the user message (or as the messages, when the input
  holds `messages`) to a model alias.
- `CallableTask`: any Python function (sync or async) taking the item's input and returning
  the answer text, or a mapping with `output` and the `context` documents it retrieved.

Item inputs become prompt variables: a mapping is used as is; a text fills the prompt's one
variable. When the prompt declares `context` and the item does not give it, the item's
context documents are filled in as `[Source: id] text` lines.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from keel.core.datasets import DatasetItem
from keel.core.evaluation import Document
from keel.core.prompts import PromptVersion
from keel.core.templates import PromptRenderer, RenderError
from keel.evals.response_cache import request_key
from keel.ports import ChatModel, ModelAnswer, TraceLink


class TaskError(Exception):
    """The task could not produce an answer for an item; the message says why."""


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """A task's answer for one item, with what the call cost."""

    output: str
    latency_ms: float | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    trace_id: str | None = None
    cached: bool = False
    context: tuple[Document, ...] | None = None  # documents the task retrieved, if it says


class Task(Protocol):
    """Something that answers dataset items."""

    @property
    def name(self) -> str: ...

    def describe(self) -> dict[str, Any]:
        """What the task is, pinned (prompt name and version, model, parameters)."""
        ...

    def request_key(self, item: DatasetItem, repetition: int) -> str | None:
        """What identifies the task's call for the item (None: results cannot be cached)."""
        ...

    async def run(self, item: DatasetItem, link: TraceLink) -> TaskOutput: ...


def format_context(documents: tuple[Document, ...]) -> str:
    """Context documents as prompt text, one `[Source: id] text` block per document."""
    return "\n\n".join(f"[Source: {d.id}] {d.text}" for d in documents)


def prompt_variables(version: PromptVersion, item: DatasetItem) -> dict[str, Any]:
    """The item's input as the prompt's variables (see the module docstring)."""
    declared = version.template.variables
    if isinstance(item.input, Mapping):
        variables = dict(item.input)
    elif isinstance(item.input, str):
        required = [name for name, v in declared.items() if v.required and name != "context"]
        if len(required) != 1:
            raise TaskError(
                f"item {item.id}: its input is a text, but {version.ref} takes "
                f"{len(required)} required variables ({', '.join(required) or 'none'}); "
                "give the input as a mapping of variables"
            )
        variables = {required[0]: item.input}
    else:
        raise TaskError(f"item {item.id}: input must be a mapping of variables or a text")
    if "context" in declared and "context" not in variables and item.context:
        variables["context"] = format_context(item.context)
    return variables


def _output(answer: ModelAnswer) -> TaskOutput:
    usage = answer.usage
    return TaskOutput(
        output=answer.text,
        latency_ms=answer.latency_ms,
        cost_usd=answer.cost_usd,
        input_tokens=usage.input_tokens if usage is not None else None,
        output_tokens=usage.output_tokens if usage is not None else None,
        trace_id=answer.trace_id,
        cached=answer.cached,
    )


class _ChatTask:
    """A task that is one chat request per item through the gateway (`body` says which)."""

    _model: ChatModel

    def body(self, item: DatasetItem) -> dict[str, Any]:
        """The chat request for one item; TaskError when the item cannot make one."""
        raise NotImplementedError

    def request_key(self, item: DatasetItem, repetition: int) -> str | None:
        """The request's cache key (None when the item cannot make a request)."""
        try:
            return request_key(self.body(item), repetition)
        except TaskError:
            return None

    async def run(self, item: DatasetItem, link: TraceLink) -> TaskOutput:
        """Make the item's request and call the model."""
        return _output(await self._model.complete(self.body(item), link))


class PromptTask(_ChatTask):
    """A prompt version and a model alias, called through the gateway."""

    def __init__(
        self,
        model: ChatModel,
        version: PromptVersion,
        *,
        included: Mapping[str, PromptVersion] | None = None,
        alias: str | None = None,
        params: Mapping[str, Any] | None = None,
        from_file: str | None = None,
        label: str | None = None,
    ) -> None:
        """`included` (every `name@N` the version includes) is needed only with `from_file`."""
        self._model = model
        self._version = version
        self._alias = alias or version.template.alias
        self._params = {**version.template.params, **(params or {})}
        self._from_file = from_file
        self._label = label
        self._renderer = PromptRenderer(version, included or {}) if from_file is not None else None
        if self._alias is None:
            raise TaskError(f"{version.ref} names no model alias; give the task a `model`")

    @property
    def name(self) -> str:
        """`prompt@version` (or `prompt@file`) on `alias`."""
        where = "file" if self._from_file is not None else str(self._version.version)
        return f"{self._version.name}@{where} on {self._alias}"

    def describe(self) -> dict[str, Any]:
        """The prompt reference (or file and content hash), the alias and the parameters."""
        doc: dict[str, Any] = {
            "kind": "prompt",
            "prompt": self._version.name,
            "model": self._alias,
            "params": dict(self._params),
        }
        if self._from_file is not None:
            doc["file"] = self._from_file
            doc["content_hash"] = self._version.content_hash
        else:
            doc["version"] = self._version.version
            if self._label is not None:
                doc["label"] = self._label
        return doc

    def body(self, item: DatasetItem) -> dict[str, Any]:
        """The chat request for one item."""
        variables = prompt_variables(self._version, item)
        body: dict[str, Any] = {"model": self._alias, **self._params}
        if self._renderer is None:
            body["prompt"] = {
                "name": self._version.name,
                "version": self._version.version,
                "variables": variables,
            }
            return body
        try:
            rendered = self._renderer.render(variables)
        except RenderError as exc:
            raise TaskError(f"item {item.id}: {exc}") from None
        if isinstance(rendered, str):
            rendered = [{"role": "user", "content": rendered}]
        body["messages"] = rendered
        return body


class ModelTask(_ChatTask):
    """The item's input sent straight to a model alias."""

    def __init__(
        self, model: ChatModel, alias: str, params: Mapping[str, Any] | None = None
    ) -> None:
        self._model = model
        self._alias = alias
        self._params = dict(params or {})

    @property
    def name(self) -> str:
        """The alias."""
        return self._alias

    def describe(self) -> dict[str, Any]:
        """The alias and the parameters."""
        return {"kind": "model", "model": self._alias, "params": dict(self._params)}

    def body(self, item: DatasetItem) -> dict[str, Any]:
        """The chat request for one item."""
        value = item.input
        if isinstance(value, Mapping) and isinstance(value.get("messages"), list):
            messages = value["messages"]
        elif isinstance(value, str):
            messages = [{"role": "user", "content": value}]
        elif isinstance(value, Mapping) and isinstance(value.get("input"), str):
            messages = [{"role": "user", "content": value["input"]}]
        else:
            raise TaskError(
                f"item {item.id}: a model task needs a text input or a mapping with "
                "`messages` (use a prompt to turn variables into messages)"
            )
        return {"model": self._alias, **self._params, "messages": messages}


class CallableTask:
    """Any Python function: `fn(input)` returning the answer text, or a mapping with
    `output` (and optionally `context`: the documents it retrieved)."""

    def __init__(self, fn: Callable[[Any], Any], name: str | None = None) -> None:
        self._fn = fn
        self._name: str = name or str(getattr(fn, "__qualname__", repr(fn)))

    @property
    def name(self) -> str:
        """The function's name."""
        return self._name

    def describe(self) -> dict[str, Any]:
        """The function's module and name."""
        return {"kind": "python", "function": f"{self._fn.__module__}:{self._name}"}

    def request_key(self, item: DatasetItem, repetition: int) -> str | None:
        """None: a function may change between runs, so its results are never reused."""
        return None

    async def run(self, item: DatasetItem, link: TraceLink) -> TaskOutput:
        """Call the function (a sync one in a worker thread) and time it."""
        started = time.perf_counter()
        if inspect.iscoroutinefunction(self._fn):
            value = await self._fn(item.input)
        else:
            value = await asyncio.to_thread(self._fn, item.input)
        latency_ms = (time.perf_counter() - started) * 1000.0
        if isinstance(value, str):
            return TaskOutput(output=value, latency_ms=latency_ms)
        if isinstance(value, Mapping) and isinstance(value.get("output"), str):
            return TaskOutput(
                output=value["output"],
                latency_ms=latency_ms,
                context=_documents(value.get("context"), self._name),
            )
        raise TaskError(
            f"{self._name} returned {type(value).__name__}; return the answer text or "
            "{'output': text, 'context': [...]}"
        )


def _documents(raw: Any, where: str) -> tuple[Document, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise TaskError(f"{where}: `context` must be a list of texts or {{id, text}} mappings")
    documents = []
    for index, entry in enumerate(raw):
        if isinstance(entry, str):
            documents.append(Document(id=str(index + 1), text=entry))
        elif isinstance(entry, Mapping) and isinstance(entry.get("text"), str):
            documents.append(Document(id=str(entry.get("id", index + 1)), text=entry["text"]))
        else:
            raise TaskError(f"{where}: context[{index}] must be a text or an {{id, text}} mapping")
    return tuple(documents)
