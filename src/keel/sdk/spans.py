"""The span being recorded in this process, and the trace attributes its trace shares.

A `LiveSpan` is created when an observed function or a `keel.span` block starts
and handed, once ended, to the exporter as is: the calling thread never builds
OTLP. Inputs and outputs are JSON text already, or values that cannot change
any more, serialised by the exporter (see `capture`); metadata and attributes
are JSON-safe copies: the exporter thread reads nothing the application can
still mutate.

An unsampled trace is one `LiveSpan` with `sampled=False`, shared by all the
spans below its root: it only carries ids for `traceparent` propagation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from threading import Lock
from typing import TYPE_CHECKING, Any, Final

from keel.sdk.capture import is_frozen

if TYPE_CHECKING:
    from keel.sdk.client import Client

SPAN_KINDS: Final = (
    "span",
    "generation",
    "retrieval",
    "embedding",
    "rerank",
    "tool",
    "agent",
    "chain",
    "guardrail",
    "evaluator",
)


class _Unset:
    """Marks an argument the caller did not pass (None is a value for input and output)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

# update_current_span(usage=...) keys, OpenAI-style names included, to the GenAI attributes.
_USAGE_KEYS: Final = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "prompt_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "completion_tokens": "gen_ai.usage.output_tokens",
}

_trace_update = Lock()  # trace updates are rare; one lock keeps tags/metadata merges whole


def check_kind(kind: str) -> str:
    """`kind` if it is a known span kind, else a ValueError listing the kinds."""
    if kind not in SPAN_KINDS:
        raise ValueError(f"keel: unknown span kind {kind!r}; use one of: {', '.join(SPAN_KINDS)}")
    return kind


@dataclass(frozen=True, slots=True)
class TraceAttributes:
    """What `update_current_trace` set; every span ending afterwards carries a reference."""

    user_id: str | None = None
    session_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    release: str | None = None
    environment: str | None = None


_NO_TRACE_ATTRIBUTES: Final = TraceAttributes()


class TraceState:
    """The part of a trace shared by its spans in this process: attributes and the root span."""

    __slots__ = ("attributes", "root")

    def __init__(self, root: LiveSpan) -> None:
        self.attributes = _NO_TRACE_ATTRIBUTES
        self.root: LiveSpan | None = root  # cleared when the root ends (no lasting cycle)

    def update(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        release: str | None = None,
        environment: str | None = None,
    ) -> None:
        """Replace the given attributes; tags add to earlier ones, metadata (JSON-safe) merges."""
        with _trace_update:
            current = self.attributes
            changes: dict[str, Any] = {}
            if user_id is not None:
                changes["user_id"] = str(user_id)
            if session_id is not None:
                changes["session_id"] = str(session_id)
            if tags is not None:
                added = [str(tag) for tag in tags if str(tag) not in current.tags]
                changes["tags"] = current.tags + tuple(dict.fromkeys(added))
            if metadata:
                changes["metadata"] = {**current.metadata, **metadata}
            if release is not None:
                changes["release"] = str(release)
            if environment is not None:
                changes["environment"] = str(environment)
            if changes:
                self.attributes = replace(current, **changes)


class LiveSpan:
    """One span from start to export. Ended spans ignore further updates."""

    __slots__ = (
        "attributes",
        "client",
        "end_ns",
        "error_message",
        "error_type",
        "input",
        "input_set",
        "kind",
        "metadata",
        "name",
        "output",
        "output_set",
        "parent_span_id",
        "pending_input",
        "pending_output",
        "sampled",
        "span_id",
        "start_ns",
        "trace",
        "trace_attributes",
        "trace_id",
    )

    def __init__(
        self,
        client: Client | None,
        trace_id: str,
        span_id: str,
        parent_span_id: str | None,
        name: str,
        kind: str,
        sampled: bool,
        trace: TraceState | None,
        start_ns: int,
    ) -> None:
        self.client = client
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.name = name
        self.kind = kind
        self.sampled = sampled
        self.trace = trace
        self.start_ns = start_ns
        self.end_ns = 0
        self.input: str | None = None  # JSON text
        self.output: str | None = None  # JSON text
        self.input_set = False  # set explicitly: the decorator's capture does not overwrite it
        self.output_set = False
        self.pending_input: Any = UNSET  # captured, to be serialised on the exporter thread
        self.pending_output: Any = UNSET
        self.metadata: dict[str, Any] | None = None
        self.attributes: dict[str, Any] | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.trace_attributes = _NO_TRACE_ATTRIBUTES

    @property
    def recording(self) -> bool:
        """True while the span is sampled and not yet ended."""
        return self.sampled and not self.end_ns

    def capture_input(self, value: Any, owned: bool = False) -> None:
        """Record `value` as the input (see `capture_output`)."""
        if self.client is not None:
            self.input, self.pending_input = _captured(self.client, value, owned)

    def capture_output(self, value: Any, owned: bool = False) -> None:
        """Record `value` as the output: serialised now, or later if nothing in it can change.

        `owned` says the SDK built the container itself (the arguments dict, the list of
        yielded items), so only its items need to be immutable to serialise it later.
        """
        if self.client is not None:
            self.output, self.pending_output = _captured(self.client, value, owned)

    def serialise_pending(self) -> None:
        """Serialise what was captured for later (on the exporter thread)."""
        client = self.client
        if client is None:
            return
        if self.pending_input is not UNSET:
            self.input = client.capture_json(self.pending_input)
            self.pending_input = UNSET
        if self.pending_output is not UNSET:
            self.output = client.capture_json(self.pending_output)
            self.pending_output = UNSET

    def update(
        self,
        *,
        name: str | None = None,
        input: Any = UNSET,
        output: Any = UNSET,
        metadata: Mapping[str, Any] | None = None,
        model: str | None = None,
        response_model: str | None = None,
        provider: str | None = None,
        usage: Mapping[str, int] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """Set fields of this span (the same arguments as `keel.update_current_span`)."""
        client = self.client
        if client is None or not self.recording:
            return
        try:
            if name is not None:
                self.name = str(name)
            if input is not UNSET:
                self.capture_input(input)
                self.input_set = True
            if output is not UNSET:
                self.capture_output(output)
                self.output_set = True
            if metadata is not None:
                self.metadata = {**(self.metadata or {}), **client.json_safe_mapping(metadata)}
            extra: dict[str, Any] = {}
            if model is not None:
                extra["gen_ai.request.model"] = str(model)
            if response_model is not None:
                extra["gen_ai.response.model"] = str(response_model)
            if provider is not None:
                extra["gen_ai.provider.name"] = str(provider)
            if usage is not None:
                for key, count in usage.items():
                    if isinstance(count, int) and not isinstance(count, bool):
                        extra[_USAGE_KEYS.get(key, f"gen_ai.usage.{key}")] = count
            if attributes is not None:
                extra.update(client.attribute_values(attributes))
            if extra:
                self.attributes = {**(self.attributes or {}), **extra}
        except Exception as exc:
            client.log.internal_error("updating a span", exc)

    def update_trace(
        self,
        *,
        name: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        release: str | None = None,
        environment: str | None = None,
        input: Any = UNSET,
        output: Any = UNSET,
    ) -> None:
        """Set attributes of this span's trace (the arguments of `keel.update_current_trace`)."""
        client, trace = self.client, self.trace
        if client is None or trace is None or not self.sampled:
            return
        try:
            if isinstance(tags, str):
                tags = [tags]
            trace.update(
                user_id=user_id,
                session_id=session_id,
                tags=tags,
                release=release,
                environment=environment,
                metadata=client.json_safe_mapping(metadata) if metadata else None,
            )
            root = trace.root
            if root is not None and (name is not None or input is not UNSET or output is not UNSET):
                root.update(name=name, input=input, output=output)
        except Exception as exc:
            client.log.internal_error("updating a trace", exc)


def _captured(client: Client, value: Any, owned: bool) -> tuple[str | None, Any]:
    """(JSON text now, UNSET) for a value that may still change, else (None, the value)
    to serialise later on the exporter thread."""
    if is_frozen(value, owned):
        return None, value
    return client.capture_json(value), UNSET
