"""Captured inputs and outputs: named arguments, masked, as JSON text cut to a size limit.

When to serialise: a value that cannot change any more (a string, a number, or
a dict/list the SDK built itself holding only those, e.g. the arguments of
`ask(question: str, k: int)` or a stream of text chunks) is serialised later, on
the exporter thread (`is_frozen`). Anything else (a list of messages, a response
object) is serialised on the calling thread when the span starts (arguments) or
ends (return value): the application may mutate it right after the call, and
reading it from another thread meanwhile could record the wrong value or fail
mid-iteration. The C JSON encoder makes that cheap for the small values that
are the common case (~1-2 µs); a big mutable value costs what encoding it costs,
then it is cut to `max_field_bytes`.

What JSON cannot represent is converted: dataclasses and pydantic models to
objects, sets to arrays, datetimes and UUIDs to strings, bytes to a length note,
anything else to its (shortened) repr. Nothing here raises: a value that still
cannot be serialised becomes a note saying so.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import inspect
import json
import math
from collections.abc import Callable, Mapping
from json import encoder as json_encoder
from json.encoder import encode_basestring
from typing import Any, Final

from keel.sdk.logs import LimitedLog

_REPR_CHARS: Final = 200
_MASK_FAILED: Final = '"<withheld: the mask hook failed>"'


def _jsonable(obj: Any) -> Any:
    """JSON-ready stand-in for an object the encoder does not know (the `default` hook)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    model_dump = getattr(obj, "model_dump", None)  # pydantic v2 models
    if callable(model_dump) and not isinstance(obj, type):
        return model_dump()
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, bytes | bytearray | memoryview):
        return f"<{len(obj)} bytes>"
    if isinstance(obj, Mapping):
        return dict(obj)
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__}>"
    return text if len(text) <= _REPR_CHARS else text[:_REPR_CHARS] + "…"


_encoder = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_jsonable
)
_c_make_encoder: Callable[..., Any] | None = getattr(json_encoder, "c_make_encoder", None)


def to_json(value: Any) -> str:
    """`value` as compact JSON text, converting unknown types.

    Raises ValueError for what JSON cannot hold: cycles and non-finite floats.
    """
    if _c_make_encoder is None:
        return _encoder.encode(value)
    # The C encoder made directly: JSONEncoder.encode's Python layer costs as much again.
    encode = _c_make_encoder({}, _jsonable, encode_basestring, None, ":", ",", False, False, False)
    return "".join(encode(value, 0))


def _plain(value: Any, path: set[int]) -> Any:
    """`value` with cycles, non-finite floats and odd keys spelt out (the slow path)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if id(value) in path:
        return "<cycle>"
    if not isinstance(value, dict | list | tuple):
        return _plain(_jsonable(value), path)
    path.add(id(value))
    try:
        if isinstance(value, dict):
            return {
                key if isinstance(key, str) else str(key): _plain(item, path)
                for key, item in value.items()
            }
        return [_plain(item, path) for item in value]
    finally:
        path.discard(id(value))


def truncate(text: str, limit: int) -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else a JSON string of its start and a note.

    The note says how many bytes of `text` were left out; the result fits in `limit`.
    """
    if len(text) * 4 <= limit:  # cannot exceed the limit even at 4 bytes per character
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    budget = limit - 40
    while True:
        head = data[:budget].decode("utf-8", "ignore")
        kept = len(head.encode("utf-8", "surrogatepass"))
        note = json.dumps(f"{head}…[truncated {len(data) - kept} bytes]", ensure_ascii=False)
        excess = len(note.encode("utf-8", "surrogatepass")) - limit
        if excess <= 0 or budget <= 0:
            return note
        budget -= excess  # escaping made it longer; cut more of the head


def json_text(value: Any, limit: int, mask: Callable[[Any], Any] | None, log: LimitedLog) -> str:
    """`value`, masked, as JSON text of at most `limit` bytes. Never raises."""
    if mask is not None:
        try:
            value = mask(value)
        except Exception as exc:
            log.internal_error("the mask hook", exc)
            return _MASK_FAILED
    try:
        try:
            text = to_json(value)
        except (ValueError, TypeError, RecursionError):  # cycles, NaN, keys of odd types
            text = to_json(_plain(value, set()))
        return truncate(text, limit)
    except Exception as exc:  # a failing model_dump, a nesting too deep
        log.internal_error("serialising a captured value", exc)
        return json.dumps(f"<unserialisable {type(value).__qualname__}: {exc}>")


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def is_frozen(value: Any, owned: bool = False) -> bool:
    """Whether `value` cannot change any more, so serialising it later records the same thing.

    True for strings, numbers, booleans and None; for an `owned` dict or list (one the
    SDK built and nobody else holds) when all its values are such scalars.
    """
    kind = type(value)
    if kind in _SCALARS:
        return True
    if not owned:
        return False
    if kind is dict:
        return all(type(item) in _SCALARS for item in value.values())
    if kind is list:
        return all(type(item) in _SCALARS for item in value)
    return False


def json_safe(value: Any) -> Any:
    """A deep copy of `value` made only of JSON types (cycles and NaN spelt out as text)."""
    return json.loads(to_json(_plain(value, set())))


class ArgumentNames:
    """How a function's positional arguments are named, worked out once per decorated function.

    `self` and `cls` are left out of the captured input.
    """

    __slots__ = ("positional", "skip", "var_positional")

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            parameters = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # some builtins have no signature
            parameters = []
        self.positional = tuple(
            p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        self.var_positional = next(
            (p.name for p in parameters if p.kind is p.VAR_POSITIONAL),
            "args" if not parameters else None,
        )
        self.skip = 1 if self.positional[:1] in (("self",), ("cls",)) else 0

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by name (defaults not filled in), without self/cls."""
        names, skip = self.positional, self.skip
        captured = dict(zip(names[skip:], args[skip:], strict=False))
        if len(args) > len(names) and self.var_positional is not None:
            captured[self.var_positional] = args[max(len(names), skip) :]
        if kwargs:
            captured.update(kwargs)
        return captured
