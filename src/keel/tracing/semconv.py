"""OTLP spans -> Keel spans: the attribute names of each instrumentation family, mapped once.

Accepted, in order of precedence where two families name the same thing:
- Keel's own SDK: `keel.span.kind`, `keel.input`, `keel.output`, `keel.tags`,
  `keel.metadata`, `keel.release`, `keel.environment`;
- OpenTelemetry GenAI semantic conventions, current names (`gen_ai.provider.name`,
  `gen_ai.usage.input_tokens`, `gen_ai.input.messages`, `gen_ai.conversation.id`, ...)
  and deprecated ones (`gen_ai.system`, `gen_ai.usage.prompt_tokens`, ...);
- OpenInference (`openinference.span.kind`, `llm.model_name`, `llm.token_count.*`,
  `input.value` / `output.value`, `session.id`, `user.id`, `tag.tags`, `metadata`);
- OpenLLMetry (`traceloop.span.kind`, `traceloop.entity.input/output`, indexed
  `gen_ai.prompt.N.*` / `gen_ai.completion.N.*`).

Mapped attributes fill the span's fields; every attribute that was not mapped is kept
in `attributes` as it came, with the resource's under `resource` and the
instrumentation scope under `otel.scope`. Nothing here drops a span: a value of the
wrong type is kept as an attribute instead of being mapped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from keel.core.spans import Span
from keel.core.usage import Usage
from keel.tracing.otlp import STATUS_ERROR, OtlpSpan

SPAN_KINDS = frozenset(
    (
        "span", "generation", "retrieval", "embedding", "rerank", "tool", "agent", "chain",
        "guardrail", "evaluator",
    )
)  # fmt: skip

_OPENINFERENCE_KINDS = {
    "LLM": "generation",
    "EMBEDDING": "embedding",
    "RETRIEVER": "retrieval",
    "RERANKER": "rerank",
    "TOOL": "tool",
    "AGENT": "agent",
    "CHAIN": "chain",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluator",
}
_GENAI_OPERATIONS = {
    "chat": "generation",
    "text_completion": "generation",
    "generate_content": "generation",
    "embeddings": "embedding",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
}
_TRACELOOP_KINDS = {"workflow": "chain", "task": "span", "agent": "agent", "tool": "tool"}

_MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
_PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
_USAGE = {
    "input_tokens": (
        "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning_tokens", "llm.token_count.completion_details.reasoning",
    ),
}  # fmt: skip
_TOTAL = ("gen_ai.usage.total_tokens", "llm.token_count.total")
_USER = ("user.id", "keel.user_id", "enduser.id")
_SESSION = ("session.id", "keel.session_id", "gen_ai.conversation.id")
_INPUT = ("keel.input", "gen_ai.input.messages", "input.value", "traceloop.entity.input")
_OUTPUT = ("keel.output", "gen_ai.output.messages", "output.value", "traceloop.entity.output")
_INDEXED = re.compile(r"^(gen_ai\.(?:prompt|completion))\.(\d+)\.(.+)$")
_INDEXED_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.")
_MISSING: Any = object()  # a converter's "this value does not map; keep the attribute"


def _kind_of(table: dict[str, str], upper: bool = False) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if not isinstance(value, str):
            return _MISSING
        return table.get(value.upper() if upper else value, _MISSING)

    return convert


def _count(value: Any) -> Any:
    if isinstance(value, bool):
        return _MISSING
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value >= 0 and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return _MISSING


def _str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _tags(value: Any) -> Any:
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    if isinstance(value, str):
        parsed = _payload(value)
        if isinstance(parsed, list):
            return [str(v) for v in parsed]
        return [t.strip() for t in value.split(",") if t.strip()]
    return _MISSING


def _metadata(value: Any) -> dict[str, Any]:
    parsed = _payload(value)
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _payload(value: Any) -> Any:
    """JSON text becomes the value it encodes; anything else is kept as it is."""
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return _jsonable(value)


# Every mapped attribute: the field it fills, its precedence among the names of that field
# (0 first) and how its value converts. One dictionary lookup per attribute, instead of
# asking for each of some fifty names.
_FIELDS: dict[str, tuple[str, int, Callable[[Any], Any]]] = {}
for _field, _names, _convert in (
    ("keel_kind", ("keel.span.kind",), _kind_of({k: k for k in SPAN_KINDS})),
    ("openinference_kind", ("openinference.span.kind",), _kind_of(_OPENINFERENCE_KINDS, True)),
    ("traceloop_kind", ("traceloop.span.kind",), _kind_of(_TRACELOOP_KINDS)),
    ("model", _MODEL, _str),
    ("provider", _PROVIDER, _str),
    *((name, names, _count) for name, names in _USAGE.items()),
    ("total_tokens", _TOTAL, _count),
    ("user_id", _USER, _str),
    ("session_id", _SESSION, _str),
    ("tags", ("keel.tags", "tag.tags"), _tags),
    ("metadata", ("keel.metadata", "metadata"), _metadata),
    ("input", _INPUT, _payload),
    ("output", _OUTPUT, _payload),
    ("release", ("keel.release",), _str),
    ("environment", ("keel.environment",), _str),
):
    for _rank, _name in enumerate(_names):
        _FIELDS[_name] = (_field, _rank, _convert)


def to_span(otlp: OtlpSpan) -> Span:
    """The Keel span for one OTLP span; unmapped attributes kept in `attributes`."""
    attrs = otlp.attributes
    mapped, used, indexed = _map(attrs)
    get = mapped.get
    model = get("model")
    usage = _usage(mapped)
    error = None
    status = "ok"
    if otlp.status_code == STATUS_ERROR:
        status = "error"
        error = otlp.status_message or _exception(otlp) or "error"
    kind = _kind(mapped, attrs)
    span = Span(
        trace_id=otlp.trace_id,
        span_id=otlp.span_id,
        parent_span_id=otlp.parent_span_id,
        name=otlp.name or kind,
        kind=kind,
        start_time=otlp.start_ns / 1e9,
        end_time=max(otlp.end_ns, otlp.start_ns) / 1e9,
        status=status,
        error=error,
        provider=get("provider"),
        model=model,
        usage=usage,
        user_id=get("user_id"),
        session_id=get("session_id"),
        tags=get("tags", []),
        metadata=get("metadata", {}),
        input=get("input", indexed.get("gen_ai.prompt")),
        output=get("output", indexed.get("gen_ai.completion")),
    )
    resource = otlp.resource
    release = get("release") or _text(resource.get("service.version"))
    environment = get("environment") or _text(
        resource.get("deployment.environment.name") or resource.get("deployment.environment")
    )
    rest = {k: v if type(v) in _PLAIN else _jsonable(v) for k, v in attrs.items() if k not in used}
    if release:
        rest["keel.release"] = release
    if environment:
        rest["keel.environment"] = environment
    if resource:
        rest["resource"] = {k: _jsonable(v) for k, v in resource.items()}
    if otlp.scope:
        rest["otel.scope"] = otlp.scope
    span.attributes = rest
    return span


_PLAIN = frozenset((str, int, float, bool))


def _map(attrs: dict[str, Any]) -> tuple[dict[str, Any], set[str], dict[str, list[Any]]]:
    """Fields filled from `attrs`, the attribute names used, and indexed messages by prefix.

    For each field the first name by precedence whose value converts wins; a value that
    does not convert is left as an attribute, and the next name is tried.
    """
    offers: dict[str, list[tuple[int, str, Any, Callable[[Any], Any]]]] = {}
    used: set[str] = set()
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in attrs.items():
        role = _FIELDS.get(key)
        if role is not None:
            if value is not None:
                field, rank, convert = role
                offers.setdefault(field, []).append((rank, key, value, convert))
        elif key.startswith(_INDEXED_PREFIXES):
            match = _INDEXED.match(key)
            if match is not None:
                prefix, index, part = match.group(1), int(match.group(2)), match.group(3)
                found.setdefault(prefix, {}).setdefault(index, {})[part] = _jsonable(value)
                used.add(key)
    mapped: dict[str, Any] = {}
    for field, offered in offers.items():
        if len(offered) > 1:
            offered.sort(key=lambda offer: offer[0])
        for _, key, value, convert in offered:
            converted = convert(value)
            if converted is not _MISSING:
                mapped[field] = converted
                used.add(key)
                break
    indexed = {prefix: [items[i] for i in sorted(items)] for prefix, items in found.items()}
    return mapped, used, indexed


def _kind(mapped: dict[str, Any], attrs: dict[str, Any]) -> str:
    for field in ("keel_kind", "openinference_kind"):
        if field in mapped:
            return str(mapped[field])
    operation = attrs.get("gen_ai.operation.name")  # kept as an attribute: it says more
    if isinstance(operation, str) and operation in _GENAI_OPERATIONS:
        return _GENAI_OPERATIONS[operation]
    if "traceloop_kind" in mapped:
        return str(mapped["traceloop_kind"])
    if "model" in mapped:
        return "generation"
    return "span"


def _usage(mapped: dict[str, Any]) -> Usage | None:
    input_tokens = mapped.get("input_tokens")
    output_tokens = mapped.get("output_tokens")
    if input_tokens is None and output_tokens is None:
        input_tokens = mapped.get("total_tokens")
        if input_tokens is None:
            return None
    return Usage(
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens or 0,
        cache_read_tokens=mapped.get("cache_read_tokens", 0),
        cache_write_tokens=mapped.get("cache_write_tokens", 0),
        reasoning_tokens=mapped.get("reasoning_tokens", 0),
    )


def _exception(otlp: OtlpSpan) -> str | None:
    for name, attrs in otlp.events:
        if name == "exception":
            kind = attrs.get("exception.type") or ""
            message = attrs.get("exception.message") or ""
            return f"{kind}: {message}".strip(": ") or None
    kind = otlp.attributes.get("exception.type")
    message = otlp.attributes.get("exception.message")
    if kind or message:
        return f"{kind or ''}: {message or ''}".strip(": ")
    return None


def _text(value: Any) -> str | None:
    return None if value is None else _str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
