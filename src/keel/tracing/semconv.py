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
_INDEXED = re.compile(r"^(gen_ai\.(?:prompt|completion))\.(\d+)\.(.+)$")


def to_span(otlp: OtlpSpan) -> Span:
    """The Keel span for one OTLP span; unmapped attributes kept in `attributes`."""
    attrs = dict(otlp.attributes)
    used: set[str] = set()

    def take(*names: str) -> Any:
        for name in names:
            if name in attrs and attrs[name] is not None:
                used.add(name)
                return attrs[name]
        return None

    kind = _kind(attrs, take)
    model = _str(take(*_MODEL))
    usage = _usage(take)
    error = None
    status = "ok"
    if otlp.status_code == STATUS_ERROR:
        status = "error"
        error = otlp.status_message or _exception(otlp) or "error"
    indexed = _indexed_messages(attrs, used)
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
        provider=_str(take(*_PROVIDER)),
        model=model,
        usage=usage,
        user_id=_str(take(*_USER)),
        session_id=_str(take(*_SESSION)),
        tags=_tags(take("keel.tags", "tag.tags")),
        metadata=_metadata(take("keel.metadata", "metadata")),
        input=_payload(
            take("keel.input", "gen_ai.input.messages", "input.value", "traceloop.entity.input")
        ),
        output=_payload(
            take("keel.output", "gen_ai.output.messages", "output.value", "traceloop.entity.output")
        ),
    )
    if span.input is None and indexed.get("gen_ai.prompt"):
        span.input = indexed["gen_ai.prompt"]
    if span.output is None and indexed.get("gen_ai.completion"):
        span.output = indexed["gen_ai.completion"]
    release = _str(take("keel.release")) or _str(otlp.resource.get("service.version"))
    environment = _str(take("keel.environment")) or _str(
        otlp.resource.get("deployment.environment.name")
        or otlp.resource.get("deployment.environment")
    )
    rest = {k: _jsonable(v) for k, v in attrs.items() if k not in used}
    if release:
        rest["keel.release"] = release
    if environment:
        rest["keel.environment"] = environment
    if otlp.resource:
        rest["resource"] = {k: _jsonable(v) for k, v in otlp.resource.items()}
    if otlp.scope:
        rest["otel.scope"] = otlp.scope
    span.attributes = rest
    return span


def _kind(attrs: dict[str, Any], take: Any) -> str:
    own = take("keel.span.kind")
    if isinstance(own, str) and own in SPAN_KINDS:
        return own
    openinference = take("openinference.span.kind")
    if isinstance(openinference, str) and openinference.upper() in _OPENINFERENCE_KINDS:
        return _OPENINFERENCE_KINDS[openinference.upper()]
    operation = attrs.get("gen_ai.operation.name")  # kept as an attribute: it says more
    if isinstance(operation, str) and operation in _GENAI_OPERATIONS:
        return _GENAI_OPERATIONS[operation]
    traceloop = take("traceloop.span.kind")
    if isinstance(traceloop, str) and traceloop in _TRACELOOP_KINDS:
        return _TRACELOOP_KINDS[traceloop]
    if any(name in attrs for name in _MODEL):
        return "generation"
    return "span"


def _usage(take: Any) -> Usage | None:
    counts = {field: _count(take(*names)) for field, names in _USAGE.items()}
    total = _count(take(*_TOTAL))
    if counts["input_tokens"] is None and counts["output_tokens"] is None:
        if total is None:
            return None
        counts["input_tokens"] = total
    return Usage(
        input_tokens=counts["input_tokens"] or 0,
        output_tokens=counts["output_tokens"] or 0,
        cache_read_tokens=counts["cache_read_tokens"] or 0,
        cache_write_tokens=counts["cache_write_tokens"] or 0,
        reasoning_tokens=counts["reasoning_tokens"] or 0,
    )


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value >= 0 and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _indexed_messages(attrs: dict[str, Any], used: set[str]) -> dict[str, list[dict[str, Any]]]:
    """OpenLLMetry's `gen_ai.prompt.0.role` / `.content` style, as message lists."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in attrs.items():
        match = _INDEXED.match(key)
        if match is None:
            continue
        prefix, index, field = match.group(1), int(match.group(2)), match.group(3)
        found.setdefault(prefix, {}).setdefault(index, {})[field] = _jsonable(value)
        used.add(key)
    return {prefix: [items[i] for i in sorted(items)] for prefix, items in found.items()}


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


def _payload(value: Any) -> Any:
    """JSON text becomes the value it encodes; anything else is kept as it is."""
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return _jsonable(value)


def _tags(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    if isinstance(value, str):
        parsed = _payload(value)
        if isinstance(parsed, list):
            return [str(v) for v in parsed]
        return [t.strip() for t in value.split(",") if t.strip()]
    return []


def _metadata(value: Any) -> dict[str, Any]:
    parsed = _payload(value)
    if isinstance(parsed, dict):
        return parsed
    return {} if parsed is None else {"value": parsed}


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
