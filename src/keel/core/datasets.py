"""Datasets: named, versioned lists of items to evaluate a task on.

An item carries an input (prompt variables as a mapping, or a text), an optional expected
output, the context documents of a RAG question and free metadata. Item ids are stable
across versions (given in the file, else derived from the input), so runs on two versions
of a dataset can still be paired item by item. A version is immutable: editing a dataset
makes a new version, and every eval run records the version it used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.core.evaluation import Document


@dataclass(frozen=True, slots=True)
class DatasetItem:
    """One example: input, expected output, context documents and metadata."""

    id: str
    input: Any
    expected: Any = None
    context: tuple[Document, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """One immutable version of a dataset and its items, in order."""

    name: str
    version: int
    items: tuple[DatasetItem, ...]
    content_hash: str
    created_at: float
    author: str | None = None
    message: str | None = None
    source: str | None = None  # the file or trace filter it was made from


def derived_item_id(input_value: Any) -> str:
    """A stable id for an item that has none: a hash of its input."""
    canonical = orjson.dumps(input_value, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:12]


def item_to_json(item: DatasetItem) -> dict[str, Any]:
    """An item as the API and the files write it."""
    doc: dict[str, Any] = {"id": item.id, "input": item.input}
    if item.expected is not None:
        doc["expected"] = item.expected
    if item.context:
        doc["context"] = [{"id": d.id, "text": d.text} for d in item.context]
    if item.metadata:
        doc["metadata"] = dict(item.metadata)
    return doc


def items_hash(items: tuple[DatasetItem, ...] | list[DatasetItem]) -> str:
    """The content hash of a list of items (order matters)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(orjson.dumps(item_to_json(item), option=orjson.OPT_SORT_KEYS))
        digest.update(b"\n")
    return digest.hexdigest()
