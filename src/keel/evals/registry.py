"""The one table of evaluator types, and configured evaluators built from it.

An evaluator type is registered by name with a `build(params, services)` function that
checks its parameters and returns the check to run on each case. Built-in evaluators are
registered the same way as user-defined ones: each built-in module has a
`register(registry)` hook, and `builtin_registry()` calls them all. A suite (or the API)
names a type with its parameters, threshold, negation and weight (`EvaluatorSpec`), and
`EvaluatorRegistry.build` turns that into an `Evaluator` whose `evaluate(case)` always
returns a `Verdict`: a check that raises becomes a failed evaluation, never an exception in
the runner.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

import keel
from keel.core.errors import ConfigError, UpstreamError
from keel.core.evaluation import Case, Verdict, judge
from keel.ports import ChatModel, Embedder

Check = Callable[[Case], Awaitable[Verdict]]


class EvaluatorConfigError(ConfigError):
    """An evaluator's configuration is wrong; the message names the evaluator and the field."""


@dataclass(frozen=True, slots=True)
class Services:
    """What evaluators may call: the judge model (through the gateway) and the embedder.

    `embedder` is a factory: loading a sentence-embedding model takes seconds, so it is
    loaded only when a suite uses a semantic evaluator (and once per registry user).
    """

    judge: ChatModel | None = None
    judge_model: str | None = None
    embedder: Callable[[], Embedder] | None = None


class Params:
    """An evaluator's parameters, read with types; unknown or mistyped ones are errors."""

    def __init__(self, evaluator: str, raw: Mapping[str, Any]) -> None:
        self._evaluator = evaluator
        self._raw = dict(raw)
        self._read: set[str] = set()

    def error(self, key: str, message: str) -> EvaluatorConfigError:
        """An error naming this evaluator and parameter."""
        return EvaluatorConfigError(f"evaluator {self._evaluator!r}: {key}: {message}")

    def has(self, key: str) -> bool:
        """Whether the parameter was given."""
        return key in self._raw

    def raw(self, key: str, default: Any = None) -> Any:
        """The parameter as given (any JSON value)."""
        self._read.add(key)
        return self._raw.get(key, default)

    def text(self, key: str, default: str | None = None) -> str:
        """A required (or defaulted) string."""
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self.error(key, "must be a string" if key in self._raw else "is required")
        return value

    def texts(self, key: str) -> list[str]:
        """One string or a list of strings, as a list (required, not empty)."""
        value = self.raw(key)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        if key not in self._raw:
            raise self.error(key, "is required")
        raise self.error(key, "must be a string or a non-empty list of strings")

    def number(self, key: str, default: float | None = None) -> float:
        """A required (or defaulted) number."""
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "must be a number" if key in self._raw else "is required")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        """A number, or None when not given."""
        return self.number(key) if key in self._raw else self.raw(key)

    def flag(self, key: str, default: bool) -> bool:
        """A true/false parameter."""
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """One of `choices`."""
        value = self.raw(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}")
        return str(value)

    def check_all_read(self) -> None:
        """Refuse parameters the evaluator did not read (a typo, most likely)."""
        unknown = sorted(set(self._raw) - self._read)
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, sorted(self._read), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(key, f"unknown parameter{hint}")


Build = Callable[[Params, Services], Check]


@dataclass(frozen=True, slots=True)
class EvaluatorType:
    """A kind of evaluator: how to build its check, and its default pass threshold.

    `code` fingerprints the code that decides the verdicts (the source file that defines
    the type, and Keel's version): a cached verdict is reused only while it is unchanged.
    """

    name: str
    build: Build
    threshold: float
    summary: str
    code: str = ""


def code_fingerprint(obj: object) -> str:
    """A hash of the source file defining `obj` (a function or class) and Keel's version."""
    return _file_fingerprint(inspect.getsourcefile(obj) or repr(obj))  # type: ignore[arg-type]


@functools.cache
def _file_fingerprint(path: str) -> str:
    digest = hashlib.sha256(keel.__version__.encode())
    try:
        digest.update(Path(path).read_bytes())
    except OSError:
        digest.update(path.encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class EvaluatorSpec:
    """One configured evaluator: the type, its parameters, threshold, negation and weight.

    `name` labels its column in results (defaults to the type); `threshold` None means the
    type's default. A score >= threshold passes.
    """

    type: str
    name: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    negate: bool = False
    weight: float = 1.0

    @property
    def label(self) -> str:
        """The name results are reported under."""
        return self.name or self.type


@dataclass(frozen=True, slots=True)
class Evaluator:
    """A configured evaluator, ready to run on cases."""

    spec: EvaluatorSpec
    kind: EvaluatorType
    check: Check
    # What the verdicts depend on besides the case: type, parameters, threshold, negation
    # and the type's code (`EvaluatorType.code`); a cached verdict is reused while it holds.
    fingerprint: str = ""

    @property
    def name(self) -> str:
        """The name results are reported under."""
        return self.spec.label

    @property
    def threshold(self) -> float:
        """The score at or above which a case passes."""
        return self.kind.threshold if self.spec.threshold is None else self.spec.threshold

    async def evaluate(self, case: Case) -> Verdict:
        """Run the check; a check that raises is a failed evaluation, not an exception."""
        try:
            verdict = await self.check(case)
        except UpstreamError as exc:
            verdict = Verdict.failed(f"model call failed: {exc.message}")
        except Exception as exc:
            verdict = Verdict.failed(f"{type(exc).__name__}: {exc}")
        return judge(verdict, self.threshold, self.spec.negate)


class EvaluatorRegistry:
    """Evaluator types by name."""

    def __init__(self) -> None:
        self._types: dict[str, EvaluatorType] = {}

    def register(
        self, name: str, *, threshold: float = 1.0, summary: str = ""
    ) -> Callable[[Build], Build]:
        """Decorator: register `build` as the evaluator type `name`."""

        def decorate(build: Build) -> Build:
            self.add(EvaluatorType(name, build, threshold, summary or (build.__doc__ or "")))
            return build

        return decorate

    def add(self, kind: EvaluatorType) -> None:
        """Register a type; a second type of the same name is a configuration error."""
        if kind.name in self._types:
            raise EvaluatorConfigError(f"evaluator type {kind.name!r} is registered twice")
        if not kind.code:
            kind = replace(kind, code=code_fingerprint(kind.build))
        self._types[kind.name] = kind

    def get(self, name: str) -> EvaluatorType:
        """The type of that name; an error with the closest names when there is none."""
        kind = self._types.get(name)
        if kind is None:
            close = difflib.get_close_matches(name, sorted(self._types), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise EvaluatorConfigError(f"unknown evaluator type {name!r}{hint}")
        return kind

    def names(self) -> list[str]:
        """Every registered type name, sorted."""
        return sorted(self._types)

    def types(self) -> list[EvaluatorType]:
        """Every registered type, sorted by name."""
        return [self._types[n] for n in self.names()]

    def build(self, spec: EvaluatorSpec, services: Services) -> Evaluator:
        """A runnable evaluator from its configuration; errors name the evaluator and field."""
        kind = self.get(spec.type)
        params = Params(spec.label, spec.params)
        check = kind.build(params, services)
        params.check_all_read()
        evaluator = Evaluator(spec, kind, check)
        document = [spec.type, spec.params, evaluator.threshold, spec.negate, kind.code]
        canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS, default=repr)
        return replace(evaluator, fingerprint=hashlib.sha256(canonical).hexdigest()[:16])

    def build_all(self, specs: Iterable[EvaluatorSpec], services: Services) -> list[Evaluator]:
        """Build several; two with the same name are an error."""
        built: list[Evaluator] = []
        for spec in specs:
            if any(e.name == spec.label for e in built):
                raise EvaluatorConfigError(
                    f"two evaluators are named {spec.label!r}; give one a `name`"
                )
            built.append(self.build(spec, services))
        return built


def builtin_registry() -> EvaluatorRegistry:
    """A registry holding every built-in evaluator type."""
    from keel.evals import deterministic, judges, rag, semantic

    registry = EvaluatorRegistry()
    for module in (deterministic, semantic, judges, rag):
        module.register(registry)
    return registry
