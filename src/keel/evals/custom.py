"""User-defined evaluators: plain Python functions, registered like the built-ins.

A function decorated with `@evaluator` takes the `Case` (and, optionally, named keyword
parameters that a suite sets under `params`) and returns a score in [0, 1], a bool, a
`(score, explanation)` tuple or a `Verdict`. It may be sync or async; a sync function runs
in a worker thread so a slow one does not stall the other evaluations. The function
itself stays a plain function, callable in the user's own tests.

`register_functions` registers every decorated function found in a module or a dict, and
`load_plugin_file` imports a Python file by path (as a suite's `plugins:` list names it)
and registers what it defines.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import math
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, overload

from keel.core.evaluation import Case, Verdict
from keel.evals.registry import (
    Check,
    EvaluatorConfigError,
    EvaluatorRegistry,
    EvaluatorType,
    Params,
    Services,
    code_fingerprint,
)

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__keel_evaluator__"
_RETURNS = "return a score in [0, 1], a bool, a (score, explanation) tuple or a Verdict"
# Parameter annotations checked when a suite sets the parameter; others are passed as is.
_SIMPLE_TYPES: dict[Any, tuple[tuple[type, ...], str]] = {
    str: ((str,), "a string"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    bool: ((bool,), "true or false"),
    list: ((list,), "a list"),
    dict: ((dict,), "a mapping"),
}


@dataclass(frozen=True, slots=True)
class CustomEvaluator:
    """What `@evaluator` records on a function: its type name, threshold and summary."""

    name: str
    function: Callable[..., Any]
    threshold: float
    summary: str

    def build(self, params: Params, services: Services) -> Check:
        """Read the function's keyword parameters from the spec and return its check."""
        kwargs = _read_params(self.function, params)
        function, name = self.function, self.name
        is_async = inspect.iscoroutinefunction(function)

        async def check(case: Case) -> Verdict:
            try:
                if is_async:
                    result = await function(case, **kwargs)
                else:
                    result = await asyncio.to_thread(function, case, **kwargs)
                    if inspect.isawaitable(result):
                        result = await result
            except Exception as exc:
                return Verdict.failed(f"evaluator {name!r} raised {type(exc).__name__}: {exc}")
            return to_verdict(result, name)

        return check


@overload
def evaluator(name: F, /) -> F: ...


@overload
def evaluator(
    name: str | None = None, *, threshold: float = 0.5, summary: str = ""
) -> Callable[[F], F]: ...


def evaluator(
    name: str | Callable[..., Any] | None = None, *, threshold: float = 0.5, summary: str = ""
) -> Any:
    """Mark a function as an evaluator type named `name` (default: the function's name).

    Use as `@evaluator`, `@evaluator()` or `@evaluator("tone", threshold=0.7)`.
    """
    if callable(name):
        return evaluator()(name)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"@evaluator threshold must be between 0 and 1, not {threshold}")

    def mark(function: F) -> F:
        _check_signature(function)
        doc = (function.__doc__ or "").strip().splitlines()
        definition = CustomEvaluator(
            name=name or function.__name__,
            function=function,
            threshold=threshold,
            summary=summary or (doc[0] if doc else ""),
        )
        setattr(function, _MARK, definition)
        return function

    return mark


def definition_of(function: Any) -> CustomEvaluator | None:
    """The `@evaluator` marking of an object, or None when it is not a marked function."""
    found = getattr(function, _MARK, None)
    return found if isinstance(found, CustomEvaluator) else None


def register_functions(
    registry: EvaluatorRegistry, namespace: ModuleType | Mapping[str, Any]
) -> list[str]:
    """Register every `@evaluator` function in a module or dict; returns their type names."""
    values = vars(namespace).values() if isinstance(namespace, ModuleType) else namespace.values()
    found: dict[str, CustomEvaluator] = {}
    for value in list(values):
        definition = definition_of(value)
        if definition is None or found.get(definition.name) is definition:
            continue
        if definition.name in found or definition.name in registry.names():
            raise EvaluatorConfigError(
                f"evaluator type {definition.name!r} ({definition.function.__qualname__}) is "
                'already registered; give it another name: @evaluator("another_name")'
            )
        found[definition.name] = definition
    for definition in found.values():
        registry.add(
            EvaluatorType(
                definition.name,
                definition.build,
                definition.threshold,
                definition.summary,
                code=code_fingerprint(definition.function),
            )
        )
    return list(found)


def load_plugin_file(path: str | Path, registry: EvaluatorRegistry) -> list[str]:
    """Import a Python file and register its `@evaluator` functions; returns their names."""
    path = Path(path)
    where = f"evaluator plugin {str(path)!r}"
    if not path.is_file():
        raise EvaluatorConfigError(f"{where}: no such file")
    if path.suffix != ".py":
        raise EvaluatorConfigError(f"{where}: not a Python file (expected a .py file)")
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    module_name = f"keel_plugin_{_identifier(path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise EvaluatorConfigError(f"{where}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise EvaluatorConfigError(
            f"{where}: syntax error at line {exc.lineno}: {exc.msg}"
        ) from exc
    except Exception as exc:
        del sys.modules[module_name]
        raise EvaluatorConfigError(
            f"{where}: importing it raised {type(exc).__name__}: {exc}"
        ) from exc
    names = register_functions(registry, module)
    if not names:
        raise EvaluatorConfigError(
            f"{where}: defines no evaluators; decorate a function with "
            "@evaluator (from keel.evals.custom import evaluator)"
        )
    return names


def to_verdict(result: Any, name: str) -> Verdict:
    """The verdict for what an evaluator function returned; anything else is a failure."""
    if isinstance(result, Verdict):
        if result.score is not None and not _is_score(result.score):
            return _bad_score(name, result.score)
        return result
    if isinstance(result, bool):
        return Verdict(score=1.0 if result else 0.0)
    if isinstance(result, int | float):
        return Verdict(score=float(result)) if _is_score(result) else _bad_score(name, result)
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[0], int | float)
        and isinstance(result[1], str)
    ):
        verdict = to_verdict(result[0], name)
        return verdict if verdict.error else replace(verdict, explanation=result[1])
    return _bad_return(name, result)


def _is_score(value: float) -> bool:
    return not isinstance(value, bool) and math.isfinite(value) and 0.0 <= value <= 1.0


def _bad_score(name: str, value: object) -> Verdict:
    return Verdict.failed(f"evaluator {name!r} returned the score {value!r}; {_RETURNS}")


def _bad_return(name: str, value: object) -> Verdict:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else f"{shown[:77]}..."
    return Verdict.failed(f"evaluator {name!r} returned {type(value).__name__} {shown}; {_RETURNS}")


def _check_signature(function: Callable[..., Any]) -> None:
    """The case first, then only named parameters (a suite sets them by name)."""
    label = getattr(function, "__qualname__", repr(function))
    parameters = list(inspect.signature(function).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not parameters or parameters[0].kind not in positional:
        raise TypeError(f"@evaluator {label}: the first parameter must take the Case")
    for parameter in parameters[1:]:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            stars = "*" if parameter.kind is inspect.Parameter.VAR_POSITIONAL else "**"
            raise TypeError(
                f"@evaluator {label}: {stars}{parameter.name} is not supported; name each "
                "parameter a suite may set"
            )
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"@evaluator {label}: {parameter.name} must be settable by name")


def _read_params(function: Callable[..., Any], params: Params) -> dict[str, Any]:
    """The function's keyword parameters from the spec: required ones must be given, and
    simply annotated ones (str, int, float, bool, list, dict) must have that type."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve: pass values unchecked
        hints = {}
    kwargs: dict[str, Any] = {}
    for parameter in list(inspect.signature(function).parameters.values())[1:]:
        key = parameter.name
        if not params.has(key):
            params.raw(key)  # known, so a misspelling of it gets a did-you-mean
            if parameter.default is inspect.Parameter.empty:
                raise params.error(key, "is required")
            continue
        value = params.raw(key)
        expected = _SIMPLE_TYPES.get(hints.get(key))
        if expected:
            allowed, described = expected
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise params.error(key, f"must be {described}, not {value!r}")
        kwargs[key] = value
    return kwargs


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)
