"""`keel.get_prompt()`: a prompt version from the Keel registry, cached in process, ready to render.

    prompt = keel.get_prompt("rag_qa", fallback=RAG_QA_DOCUMENT)
    messages = prompt.render(question=question, documents=documents)
    client.chat.completions.create(model=prompt.config["alias"], messages=messages)

A label (default `production`) or a version is resolved with
`GET {host}/api/prompts/{name}/resolve?label=…` (or `?version=N`) and kept in this
process per (name, label, version). A hit is a dictionary lookup: no lock, no I/O,
the same `Prompt` object every time. After `cache_ttl_s` the cached answer is still
returned at once while one background thread per entry asks again
(stale-while-revalidate); a failed refresh keeps the cached answer, logs a warning
(once a minute, logger `keel.sdk`) and is retried after another `cache_ttl_s`.

A label in a rollout serves several versions by weight. Which one a call gets is
`keel.core.rollout.assign` for a unit: `unit=` if given, else `user:<id>` of the
current trace (`keel.update_current_trace(user_id=…)`), else `session:<id>`, else
a new random unit per call. The gateway names units the same way, so a user gets
the same version through both.

Failures. When nothing is cached and Keel cannot be reached (refused, no answer
within `TIMEOUT_S`, a 5xx or an unreadable answer), the call returns its
`fallback` (a prompt document, a text template or a list of chat messages) with
`is_fallback=True`, or raises `PromptUnavailable`. Only the first such call
waits for the server: for the next `RETRY_S` seconds calls for that prompt fail
over at once, then one background thread at a time asks again. A 404 is an
answer: `PromptNotFound`, fallback or not. A malformed fallback raises
`keel.core.prompts.InvalidPrompt` (a ValueError) when it is first needed.
`render` raises `keel.core.templates.RenderError` (a ValueError naming the
variable) when the variables do not fit the prompt.

Inside a recorded span (`@keel.observe`, `keel.span`) `get_prompt` and `render`
set the span attributes `keel.prompt.name`, `keel.prompt.version` and
`keel.prompt.label` (and `keel.prompt.fallback` for a fallback).

Host and API key are the SDK's settings (`keel.configure`, `KEEL_HOST`,
`KEEL_API_KEY`); prompts are fetched even when tracing is disabled. Jinja2 is
imported on the first miss, not by `import keel`.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from keel.sdk.client import get_client
from keel.sdk.config import SdkConfig
from keel.sdk.logs import LimitedLog
from keel.sdk.otlp import SCOPE_VERSION
from keel.sdk.spans import LiveSpan
from keel.sdk.tracer import current_span_var
from keel.sdk.transport import GetTransport, UrllibTransport

if TYPE_CHECKING:
    from keel.core.prompts import PromptTemplate, PromptVersion
    from keel.core.rollout import Target
    from keel.core.templates import PromptRenderer

DEFAULT_LABEL: Final = "production"
TIMEOUT_S: Final = 5.0  # the longest a cold get_prompt waits for the server
RETRY_S: Final = 5.0  # after a failed cold fetch, fail over at once for this long

Fallback = Mapping[str, Any] | str | Sequence[Mapping[str, Any]]
Key = tuple[str, str | None, int | None]

_units = random.Random()  # private: leaves the application's `random` alone
_JSON_TYPES: Final = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (tuple, "array"),
    (dict, "object"),
)


class PromptUnavailable(Exception):
    """The prompt is not cached, Keel could not be reached, and no fallback was given."""


class PromptNotFound(LookupError):
    """Keel has no such prompt, label or version (its 404); `detail` is the server's reason."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class _Unreachable(Exception):
    """No usable answer from the server (the reason is the message)."""


class Prompt:
    """One prompt version as `keel.get_prompt` returns it: its identity, model config, `render`."""

    __slots__ = (
        "_attributes",
        "_included",
        "_loose",
        "_renderer",
        "_renderers",
        "_source",
        "is_fallback",
        "label",
        "name",
        "template",
        "type",
        "version",
    )

    def __init__(
        self,
        source: PromptVersion,
        label: str | None,
        included: Mapping[str, PromptVersion],
        *,
        is_fallback: bool = False,
        loose: bool = False,
    ) -> None:
        self.name: str = source.name
        self.version: int | None = None if is_fallback else source.version
        self.label = label
        self.template: PromptTemplate = source.template
        self.type: str = source.template.type
        self.is_fallback = is_fallback
        self._source = source
        self._included = included
        self._loose = loose  # variables inferred from a fallback: any JSON type is accepted
        self._renderer: PromptRenderer | None = None  # compiled on the first render
        self._renderers: dict[tuple[tuple[str, str], ...], PromptRenderer] = {}
        attributes: dict[str, Any] = {"keel.prompt.name": self.name}
        if self.version is not None:
            attributes["keel.prompt.version"] = self.version
        if label is not None:
            attributes["keel.prompt.label"] = label
        if is_fallback:
            attributes["keel.prompt.fallback"] = True
        self._attributes = attributes

    @property
    def config(self) -> dict[str, Any]:
        """The document's `model` section (a copy), e.g. {"alias": "fast", "temperature": 0.2}."""
        return dict(self.template.model)

    def render(self, **variables: Any) -> str | list[dict[str, str]]:
        """The text (text prompt) or OpenAI-format messages (chat prompt) for `variables`."""
        span = current_span_var.get()
        if span is not None:
            _record(span, self._attributes)
        if self._loose:
            return self._loose_renderer(variables).render(variables)
        renderer = self._renderer
        if renderer is None:
            from keel.core.templates import PromptRenderer

            renderer = self._renderer = PromptRenderer(self._source, self._included)
        return renderer.render(variables)

    def _loose_renderer(self, variables: Mapping[str, Any]) -> PromptRenderer:
        """A renderer declaring each given variable with the type of its value."""
        from keel.core.templates import PromptRenderer, Variable

        declared = self.template.variables
        kinds = tuple(sorted((name, _json_type(value)) for name, value in variables.items()))
        renderer = self._renderers.get(kinds)
        if renderer is None:
            typed = {name: Variable(kind) for name, kind in kinds if name in declared}
            template = replace(self.template, variables={**declared, **typed})
            renderer = PromptRenderer(replace(self._source, template=template), {})
            if len(self._renderers) < 32:
                self._renderers[kinds] = renderer
        return renderer

    def __repr__(self) -> str:
        where = "fallback" if self.is_fallback else f"version={self.version}"
        return f"Prompt({self.name!r}, {where}, label={self.label!r}, type={self.type!r})"


def _json_type(value: Any) -> str:
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    return "string"  # None or an object: refused as "must be a string", naming the variable


def _record(span: LiveSpan, attributes: Mapping[str, Any]) -> None:
    """Put the prompt's attributes on `span` if it is being recorded."""
    if span.recording:
        current = span.attributes
        span.attributes = dict(attributes) if current is None else {**current, **attributes}


def _current_unit() -> str:
    """The unit a rollout assigns without `unit=`: the trace's user, its session, or this call."""
    span = current_span_var.get()
    trace = None if span is None else span.trace
    if trace is not None:
        attributes = trace.attributes
        if attributes.user_id:
            return f"user:{attributes.user_id}"
        if attributes.session_id:
            return f"session:{attributes.session_id}"
    return f"request:{_units.getrandbits(64):016x}"


class _Entry:
    """A resolved (name, label, version): who gets which version, each as a ready `Prompt`."""

    __slots__ = ("checked_at", "prompts", "refreshing", "salt", "single", "targets")

    def __init__(
        self, targets: tuple[Target, ...], salt: str, prompts: dict[int, Prompt], now: float
    ) -> None:
        self.targets = targets
        self.salt = salt
        self.prompts = prompts
        self.single = prompts[targets[0].version] if len(targets) == 1 else None
        self.checked_at = now
        self.refreshing = False

    def pick(self, unit: str | None) -> Prompt:
        """The version `unit` (default: see `_current_unit`) is served."""
        if self.single is not None:
            return self.single
        from keel.core.rollout import assign

        return self.prompts[assign(self.targets, self.salt, unit or _current_unit())]


class _Outage:
    """A prompt never fetched because the server could not be reached: when, and why."""

    __slots__ = ("checked_at", "reason", "refreshing")

    def __init__(self, reason: str, now: float) -> None:
        self.reason = reason
        self.checked_at = now
        self.refreshing = False


class PromptClient:
    """Resolves and caches prompts from one Keel server; `keel.get_prompt` uses the default one."""

    def __init__(
        self,
        host: str,
        api_key: str | None = None,
        *,
        transport: GetTransport | None = None,
        log: LimitedLog | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.host = host.rstrip("/")
        self.api_key = api_key
        self._headers = {"Accept": "application/json", "User-Agent": f"keel-sdk/{SCOPE_VERSION}"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._transport = transport or UrllibTransport()
        self._log = log or LimitedLog()
        self._clock = clock
        self._timeout_s = timeout_s
        self._entries: dict[Key, _Entry] = {}
        self._outages: dict[Key, _Outage] = {}
        self._fallbacks: dict[Key, tuple[Any, Prompt]] = {}
        self._gates: dict[Key, threading.Lock] = {}
        self._lock = threading.Lock()  # guards gates and refresh flags; never held during I/O

    def get(
        self,
        name: str,
        *,
        label: str | None = None,
        version: int | None = None,
        fallback: Fallback | None = None,
        cache_ttl_s: float = 60.0,
        unit: str | None = None,
    ) -> Prompt:
        """The prompt for a label or version (see `keel.get_prompt`)."""
        if version is None:
            if label is None:
                label = DEFAULT_LABEL
        elif label is not None:
            raise ValueError("keel.get_prompt: pass a label or a version, not both")
        key = (name, label, version)
        entry = self._entries.get(key)
        if entry is None:
            prompt = self._miss(key, fallback, unit)
        else:
            if self._clock() - entry.checked_at >= cache_ttl_s:
                self._revalidate(key, entry)
            prompt = entry.single or entry.pick(unit)
        span = current_span_var.get()
        if span is not None:
            _record(span, prompt._attributes)
        return prompt

    def _miss(self, key: Key, fallback: Fallback | None, unit: str | None) -> Prompt:
        """Fetch `key` (one caller at a time per key), or fail over while Keel is unreachable."""
        _check_key(key)
        outage = self._outages.get(key)
        if outage is None:
            with self._gate(key):
                entry, outage = self._entries.get(key), self._outages.get(key)
                if entry is None and outage is None:
                    try:
                        entry = self._fetch(key, None)
                    except _Unreachable as exc:
                        outage = self._outages[key] = _Outage(str(exc), self._clock())
                    else:
                        self._entries[key] = entry
            if entry is not None:
                return entry.pick(unit)
            assert outage is not None
        elif self._clock() - outage.checked_at >= RETRY_S:
            self._revalidate(key, outage)
        name, label, version = key
        if fallback is None:
            raise PromptUnavailable(
                f"keel: prompt {name!r} ({_which(label, version)}) is not cached and Keel at "
                f"{self.host} could not be reached ({outage.reason}); pass fallback=... to "
                "keel.get_prompt to serve a built-in prompt while Keel is down"
            )
        self._log.warn(
            f"fallback:{name}",
            "keel: serving the fallback of prompt %r: Keel at %s could not be reached (%s)",
            name,
            self.host,
            outage.reason,
        )
        return self._fallback(key, fallback)

    def _fallback(self, key: Key, fallback: Fallback) -> Prompt:
        """The fallback as a Prompt, built once while the caller passes an equal value."""
        cached = self._fallbacks.get(key)
        if cached is not None and cached[0] == fallback:
            return cached[1]
        prompt = fallback_prompt(key[0], key[1], fallback)
        self._fallbacks[key] = (copy.deepcopy(fallback), prompt)
        return prompt

    def _gate(self, key: Key) -> threading.Lock:
        with self._lock:
            gate = self._gates.get(key)
            if gate is None:
                gate = self._gates[key] = threading.Lock()
        return gate

    def _revalidate(self, key: Key, state: _Entry | _Outage) -> None:
        """Ask the server again in a daemon thread, unless a thread is already asking for `key`."""
        if state.refreshing:
            return
        with self._lock:
            if state.refreshing:
                return
            state.refreshing = True
        try:
            threading.Thread(
                target=self._refresh, args=(key, state), name="keel-prompt-refresh", daemon=True
            ).start()
        except RuntimeError:  # the interpreter is shutting down
            state.refreshing = False

    def _refresh(self, key: Key, state: _Entry | _Outage) -> None:
        previous = state if isinstance(state, _Entry) else None
        try:
            entry = self._fetch(key, previous)
        except PromptNotFound as exc:
            state.checked_at = self._clock()
            if previous is None:
                self._outages.pop(key, None)  # the next call asks again and raises the 404
            else:
                self._log.warn(f"refresh:{key}", "keel: %s; serving the cached one", exc)
        except _Unreachable as exc:
            state.checked_at = self._clock()
            if previous is not None:
                self._log.warn(
                    f"refresh:{key}",
                    "keel: could not refresh prompt %r (%s); serving the cached one",
                    key[0],
                    exc,
                )
        except Exception as exc:
            state.checked_at = self._clock()
            self._log.internal_error("refreshing a prompt", exc)
        else:
            self._entries[key] = entry
            self._outages.pop(key, None)
        finally:
            state.refreshing = False

    def _fetch(self, key: Key, previous: _Entry | None) -> _Entry:
        """Resolve `key` on the server; PromptNotFound for a 404, _Unreachable without an answer."""
        from urllib.parse import quote

        name, label, version = key
        query = f"label={quote(label, safe='')}" if label is not None else f"version={version}"
        url = f"{self.host}/api/prompts/{quote(name, safe='')}/resolve?{query}"
        try:
            status, body = self._transport.get(url, self._headers, self._timeout_s)
        except Exception as exc:  # TransportError, or whatever an injected transport raises
            raise _Unreachable(str(exc)) from None
        if status == 404:
            detail = _detail(body)
            raise PromptNotFound(
                f"keel: prompt {name!r} ({_which(label, version)}) was not found at "
                f"{self.host}: {detail or 'no such prompt, label or version'}",
                detail,
            )
        if status != 200:
            detail = _detail(body)
            raise _Unreachable(f"HTTP {status}" + (f": {detail}" if detail else ""))
        try:
            return _entry(key, json.loads(body), previous, self._clock())
        except Exception as exc:  # another shape: a proxy's error page, an incompatible server
            raise _Unreachable(f"unreadable answer: {type(exc).__name__}: {exc}") from None


def _check_key(key: Key) -> None:
    name, label, version = key
    if not isinstance(name, str) or not name:
        raise ValueError(f"keel.get_prompt: name must be a prompt's name, not {name!r}")
    if label is not None and (not isinstance(label, str) or not label):
        raise ValueError(f"keel.get_prompt: label must be a label's name, not {label!r}")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ValueError(f"keel.get_prompt: version must be a positive integer, not {version!r}")


def _which(label: str | None, version: int | None) -> str:
    return f"label {label!r}" if label is not None else f"version {version}"


def _detail(body: bytes) -> str | None:
    """The `detail` of an RFC 9457 problem body, if the body is one."""
    try:
        detail = json.loads(body).get("detail")
    except Exception:
        return None
    return detail if isinstance(detail, str) and detail else None


def _entry(key: Key, data: dict[str, Any], previous: _Entry | None, now: float) -> _Entry:
    """The cache entry for a resolve answer, keeping the Prompts (compiled) of known versions."""
    from keel.core.prompts import version_from_json
    from keel.core.rollout import Target, rollout_salt

    name, label, _ = key
    targets = tuple(Target(int(t["version"]), float(t["weight"])) for t in data["targets"])
    if not targets:
        raise ValueError("the answer has no targets")
    included = {str(ref): version_from_json(v) for ref, v in (data.get("included") or {}).items()}
    known = previous.prompts if previous is not None else {}
    prompts: dict[int, Prompt] = {}
    for target in targets:
        found = data["versions"][str(target.version)]
        prompt = known.get(target.version)
        if prompt is None or prompt._source.content_hash != found.get("content_hash"):
            prompt = Prompt(version_from_json(found), label, included)
        prompts[target.version] = prompt
    return _Entry(targets, rollout_salt(name, label or "", targets), prompts, now)


def fallback_prompt(name: str, label: str | None, fallback: Fallback) -> Prompt:
    """A Prompt (is_fallback=True) from a document, a text template or a list of chat messages.

    For a template or messages the variables are the names the templates read, and
    render accepts any JSON value for them. InvalidPrompt if the fallback is malformed.
    """
    from keel.core.prompts import PromptVersion, parse_document
    from keel.core.templates import template_names

    sources: list[Any] = []
    if isinstance(fallback, str):
        document: dict[str, Any] = {"type": "text", "template": fallback}
        sources = [fallback]
    elif isinstance(fallback, Mapping):
        document = dict(fallback)
    elif isinstance(fallback, Sequence):
        messages = [
            {"role": m.get("role"), "content": m.get("content")} if isinstance(m, Mapping) else m
            for m in fallback
        ]
        document = {"type": "chat", "messages": messages}
        sources = [m.get("content") for m in messages if isinstance(m, dict)]
    else:
        raise TypeError(
            "keel.get_prompt: fallback must be a prompt document (a dict), a text template "
            f"(a str) or chat messages (a list of {{role, content}}), not {type(fallback).__name__}"
        )
    loose = not isinstance(fallback, Mapping)
    if loose:
        names: set[str] = set()
        for source in sources:
            if isinstance(source, str):
                names |= template_names(source).variables
        document["variables"] = {variable: {"type": "string"} for variable in sorted(names)}
    document["name"] = name  # the fallback stands in for the prompt asked for
    template = parse_document(document)
    source = PromptVersion(name, 0, template, "", {}, 0.0)
    return Prompt(source, label, {}, is_fallback=True, loose=loose)


class _Default:
    """The process's prompt client and the SDK settings it was made for."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: tuple[SdkConfig, PromptClient] | None = None


_default = _Default()


def prompt_client() -> PromptClient:
    """The default prompt client for the SDK's host and API key (kept while both stay the same)."""
    config = get_client().config
    current = _default.current
    if current is not None and current[0] is config:
        return current[1]
    with _default.lock:
        current = _default.current
        if current is None or (current[1].host, current[1].api_key) != (
            config.host,
            config.api_key,
        ):
            client = PromptClient(config.host, config.api_key, log=get_client().log)
        else:
            client = current[1]
        _default.current = (config, client)
    return client


def get_prompt(
    name: str,
    *,
    label: str | None = None,
    version: int | None = None,
    fallback: Fallback | None = None,
    cache_ttl_s: float = 60.0,
    unit: str | None = None,
) -> Prompt:
    """A prompt by label (default "production") or version, cached; see the module docstring.

    `fallback` (a document dict, a text template, or chat messages) is served when the
    prompt is not cached and Keel cannot be reached; without it PromptUnavailable is
    raised. PromptNotFound when Keel has no such prompt, label or version. `unit` (a
    user, session or request id) decides which version of a rollout is served.
    """
    return prompt_client().get(
        name,
        label=label,
        version=version,
        fallback=fallback,
        cache_ttl_s=cache_ttl_s,
        unit=unit,
    )
