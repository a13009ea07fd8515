"""Datasets' rules: what an item may hold, pushes that make versions, datasets from traces.

Storage is behind `keel.ports.DatasetRepository`; this module decides what a push means.
Items are checked field by field (`parse_items`), every problem named with where it is
(`data.jsonl:4`, `items[3]`) and the field; one problem and nothing is stored. Item ids are
the ones given, else `derived_item_id(input)`, and must be unique within a version. A push
whose items hash the same as the newest version creates nothing ("unchanged"); otherwise
the next version holds exactly the items pushed, and the outcome counts what was added,
removed and changed against the previous version by item id.

A dataset can also be made from traces: each selected trace's root span becomes an item
(`item_from_trace`), its input the prompt variables the span carries (attribute
`keel.prompt.variables`), else the span's own input: a text, a mapping of arguments, or
chat messages (one user message becomes its text).
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from keel.core.datasets import (
    DatasetItem,
    DatasetVersion,
    derived_item_id,
    item_to_json,
    items_hash,
)
from keel.core.evaluation import Document
from keel.core.spans import Span
from keel.ports import DatasetRepository, DatasetVersionInfo, NewDatasetVersion

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ITEM_FIELDS = ("id", "input", "expected", "context", "metadata")
MAX_ID_LENGTH = 200
PROMPT_VARIABLES = "keel.prompt.variables"


class DatasetError(Exception):
    """A request the dataset service refuses; `status` is its HTTP status (404, 422)."""

    status = 422
    title = "Invalid request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DatasetNotFound(DatasetError):
    """An unknown dataset or version."""

    status = 404
    title = "Not Found"


@dataclass(frozen=True, slots=True)
class ItemProblem:
    """What is wrong with one item: where it is (`file:line`, `items[3]`), the field, why."""

    where: str
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.where}: {self.field}" if self.field else self.where
        return f"{where}: {self.message}"


class InvalidItems(DatasetError):
    """Items that cannot be stored; `problems` lists every one found."""

    title = "Invalid dataset"

    def __init__(self, problems: Sequence[ItemProblem]) -> None:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{count} in the items; nothing was stored")
        self.problems = list(problems)


# --- items -------------------------------------------------------------------------------


def parse_item(doc: Any, where: str) -> tuple[DatasetItem | None, list[ItemProblem]]:
    """The item a JSON object describes (`id`, `input`, `expected`, `context`, `metadata`),
    or None and every problem found in it."""
    if not isinstance(doc, Mapping):
        kind = type(doc).__name__ if doc is not None else "null"
        return None, [ItemProblem(where, None, f"an item is an object with an input, not {kind}")]
    problems: list[ItemProblem] = []

    def fail(name: str | None, message: str) -> None:
        problems.append(ItemProblem(where, name, message))

    for key in doc:
        if key not in ITEM_FIELDS:
            close = difflib.get_close_matches(str(key), ITEM_FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            fail(str(key), f"unknown field{hint} (an item has {', '.join(ITEM_FIELDS)})")
    value = doc.get("input")
    if value is None:
        fail("input", "required: a text, or an object of prompt variables")
    elif isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            fail("input", "variable names must be text")
    elif not isinstance(value, str):
        fail("input", f"must be a text or an object of prompt variables, not {_kind(value)}")
    item_id = _item_id(doc.get("id"), fail)
    context = _context(doc.get("context"), fail)
    metadata = doc.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        fail("metadata", f"must be an object, not {_kind(metadata)}")
    expected = doc.get("expected")
    for name, payload in (("input", value), ("expected", expected), ("metadata", metadata)):
        if payload is not None and not _is_json(payload):
            fail(name, "holds a value JSON cannot represent")
    if problems:
        return None, problems
    return (
        DatasetItem(
            id=item_id or derived_item_id(value),
            input=dict(value) if isinstance(value, Mapping) else value,
            expected=expected,
            context=context,
            metadata=dict(metadata or {}),
        ),
        [],
    )


def parse_items(docs: Iterable[tuple[str, Any]]) -> list[DatasetItem]:
    """Items from (where, object) pairs; InvalidItems listing every problem, ids included."""
    items: list[DatasetItem] = []
    problems: list[ItemProblem] = []
    seen: dict[str, str] = {}
    for where, doc in docs:
        item, found = parse_item(doc, where)
        problems.extend(found)
        if item is None:
            continue
        if item.id in seen:
            given = isinstance(doc, Mapping) and doc.get("id") is not None
            why = "" if given else " (derived from the input: the same input twice)"
            problems.append(
                ItemProblem(
                    where,
                    "id",
                    f"{item.id!r} is also the id at {seen[item.id]}{why}; "
                    "give each item its own id",
                )
            )
            continue
        seen[item.id] = where
        items.append(item)
    if problems:
        raise InvalidItems(problems)
    return items


def _item_id(value: Any, fail: Callable[[str | None, str], None]) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        fail("id", f"must be a text or a whole number, not {_kind(value)}")
        return None
    text = str(value)
    if not text.strip():
        fail("id", "must not be empty")
    elif len(text) > MAX_ID_LENGTH:
        fail("id", f"longer than {MAX_ID_LENGTH} characters")
    return text


def _context(value: Any, fail: Callable[[str | None, str], None]) -> tuple[Document, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        fail("context", "must be a list of texts or of {id, text} documents")
        return ()
    documents = []
    for index, entry in enumerate(value):
        if isinstance(entry, str):
            documents.append(Document(str(index + 1), entry))
            continue
        if isinstance(entry, Mapping):
            doc_id, text = entry.get("id"), entry.get("text")
            extra = sorted(str(k) for k in entry if k not in ("id", "text"))
            if (
                isinstance(text, str)
                and not extra
                and (
                    doc_id is None
                    or (isinstance(doc_id, str | int) and not isinstance(doc_id, bool))
                )
            ):
                documents.append(Document(str(index + 1 if doc_id is None else doc_id), text))
                continue
        fail(f"context[{index}]", "must be a text or {id, text} (id a text, text a text)")
    return tuple(documents)


def _is_json(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list", str: "a text"}
    return names.get(type(value), "an object" if isinstance(value, Mapping) else "a value")


def check_name(name: str) -> None:
    """DatasetError unless `name` can name a dataset."""
    if not NAME_PATTERN.match(name):
        raise DatasetError(
            f"{name!r} is not a dataset name: letters, digits, '_', '.', '-' (up to 100), "
            "starting with a letter or digit"
        )


# --- items from traces -------------------------------------------------------------------


def item_from_trace(
    root: Span, *, expected_from_output: bool, selection: Mapping[str, Any]
) -> DatasetItem | None:
    """The item a trace's root span makes; None when the span recorded no input."""
    value = trace_input(root)
    if value is None:
        return None
    expected = output_text(root.output) if expected_from_output else None
    return DatasetItem(
        id=derived_item_id(value),
        input=value,
        expected=expected,
        metadata={"trace_id": root.trace_id, "filter": dict(selection)},
    )


def trace_input(root: Span) -> Any:
    """The prompt variables on the span, else its input as a text, mapping or messages."""
    variables = root.attributes.get(PROMPT_VARIABLES)
    if isinstance(variables, Mapping) and variables:
        return dict(variables)
    value = root.input
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, Mapping) and isinstance(value.get("messages"), list):
        value = value["messages"]
    if isinstance(value, list):
        return _messages_input(value) if value else None
    if isinstance(value, Mapping):
        return dict(value) if value else None
    return None


def _messages_input(messages: list[Any]) -> Any:
    if len(messages) == 1 and isinstance(messages[0], Mapping):
        only = messages[0]
        if only.get("role") == "user" and isinstance(only.get("content"), str):
            return only["content"]
    return {"messages": messages}


def output_text(output: Any) -> Any:
    """A recorded output as the expected answer: the first choice's text for a chat
    completion (the gateway records the choices; OTLP spans may hold the whole response),
    the value itself otherwise."""
    choices = output.get("choices") if isinstance(output, Mapping) else output
    if isinstance(choices, list) and choices and all(_is_choice(c) for c in choices):
        for choice in choices:
            content = choice["message"].get("content")
            if isinstance(content, str):
                return content
        return None
    return output


def _is_choice(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("message"), Mapping)


# --- the service -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What a push did (or, in a dry run, would do)."""

    name: str
    status: str  # "created" or "unchanged"
    version: int
    previous: int | None
    item_count: int
    content_hash: str
    added: int = 0
    removed: int = 0
    changed: int = 0


@dataclass(frozen=True, slots=True)
class TracePushOutcome:
    """A push from traces: the push, and how many selected traces made no item."""

    push: PushOutcome
    traces: int
    without_input: int = 0
    duplicates: int = 0
    kept: int = 0  # items of the newest version kept by an append


class DatasetService:
    """Dataset versions with their rules."""

    def __init__(
        self, repository: DatasetRepository, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._repository = repository
        self._clock = clock

    # Reading

    def summaries(self) -> list[DatasetVersionInfo]:
        """The newest version of every dataset."""
        return self._repository.latest_versions()

    def info(self, name: str, version: int | None = None) -> DatasetVersionInfo:
        """A version's header (default: the newest); DatasetNotFound when there is none."""
        if version is None:
            found = self._repository.latest(name)
            if found is None:
                raise DatasetNotFound(self._unknown(name))
            return found
        found = self._repository.version(name, version)
        if found is None:
            self.info(name)
            raise DatasetNotFound(f"dataset {name!r} has no version {version}")
        return found

    def versions(self, name: str) -> list[DatasetVersionInfo]:
        """Every version of `name`, oldest first."""
        versions = self._repository.versions(name)
        if not versions:
            raise DatasetNotFound(self._unknown(name))
        return versions

    def items(
        self, name: str, version: int, *, after: int = -1, limit: int | None = None
    ) -> list[tuple[int, DatasetItem]]:
        """(position, item) of a version in order, from the position after `after`."""
        return self._repository.items(name, version, after=after, limit=limit)

    def load(self, name: str, version: int | None = None) -> DatasetVersion:
        """A whole version with its items (default: the newest)."""
        info = self.info(name, version)
        items = tuple(item for _, item in self._repository.items(name, info.version))
        return DatasetVersion(
            info.name, info.version, items, info.content_hash, info.created_at, info.author,
            info.message, info.source,
        )  # fmt: skip

    # Writing

    def push(
        self,
        name: str,
        items: Sequence[DatasetItem],
        *,
        author: str | None,
        message: str | None,
        source: str | None,
        dry_run: bool = False,
    ) -> PushOutcome:
        """Store `items` as the next version of `name`, unless the newest holds them already."""
        check_name(name)
        if not items:
            raise DatasetError("a dataset version needs at least one item")
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i in ids if ids.count(i) > 1)
            raise DatasetError(f"item id {duplicate!r} is given more than once")
        digest = items_hash(list(items))
        latest = self._repository.latest(name)
        if latest is not None and latest.content_hash == digest:
            return _unchanged(latest)
        added, removed, changed = self._changes(latest, items)
        if dry_run:
            number = (latest.version if latest else 0) + 1
        else:
            new = NewDatasetVersion(name, tuple(items), digest, author, message, source)
            stored, created = self._repository.add_version(new, self._clock())
            if not created:  # an identical push got there first
                return _unchanged(stored)
            number = stored.version
        return PushOutcome(
            name, "created", number, latest.version if latest else None, len(items), digest,
            added, removed, changed,
        )  # fmt: skip

    def push_traces(
        self,
        name: str,
        roots: Sequence[Span],
        *,
        selection: Mapping[str, Any],
        expected_from_output: bool,
        append: bool,
        author: str | None,
        message: str | None,
        dry_run: bool = False,
    ) -> TracePushOutcome:
        """A version made of one item per trace (by its root span); with `append`, the
        newest version's items come first and a trace whose item id is there is left out."""
        check_name(name)
        items: list[DatasetItem] = []
        without_input = 0
        seen: set[str] = set()
        kept = 0
        if append and self._repository.latest(name) is not None:
            items = list(self.load(name).items)
            seen = {item.id for item in items}
            kept = len(items)
        duplicates = 0
        for root in roots:
            item = item_from_trace(
                root, expected_from_output=expected_from_output, selection=selection
            )
            if item is None:
                without_input += 1
            elif item.id in seen:
                duplicates += 1
            else:
                seen.add(item.id)
                items.append(item)
        if not items:
            raise DatasetError(
                f"no trace made an item: {len(roots)} matched the filter, "
                f"{without_input} without a recorded input, {duplicates} repeating an input"
            )
        source = "traces " + orjson.dumps(dict(selection), option=orjson.OPT_SORT_KEYS).decode()
        push = self.push(
            name, items, author=author, message=message, source=source, dry_run=dry_run
        )
        return TracePushOutcome(push, len(roots), without_input, duplicates, kept)

    # Helpers

    def _changes(
        self, latest: DatasetVersionInfo | None, items: Sequence[DatasetItem]
    ) -> tuple[int, int, int]:
        """Items added, removed and changed since `latest`, by item id."""
        if latest is None:
            return len(items), 0, 0
        before = {item.id: item for _, item in self._repository.items(latest.name, latest.version)}
        now = {item.id: item for item in items}
        added = sum(1 for item_id in now if item_id not in before)
        removed = sum(1 for item_id in before if item_id not in now)
        changed = sum(
            1
            for item_id, item in now.items()
            if item_id in before and _canonical(before[item_id]) != _canonical(item)
        )
        return added, removed, changed

    def _unknown(self, name: str) -> str:
        if not NAME_PATTERN.match(name):
            return f"{name!r} is not a dataset name"
        return f"no dataset named {name!r}; `keel datasets list` shows the stored ones"


def _unchanged(latest: DatasetVersionInfo) -> PushOutcome:
    return PushOutcome(
        latest.name, "unchanged", latest.version, latest.version, latest.item_count,
        latest.content_hash,
    )  # fmt: skip


def _canonical(item: DatasetItem) -> bytes:
    return orjson.dumps(item_to_json(item), option=orjson.OPT_SORT_KEYS)
