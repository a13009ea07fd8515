"""Dataset files: JSONL, CSV and YAML in, items out, every problem named by file:line and field.

- **JSONL** (`.jsonl`, `.ndjson`): one object per line with `input` and optionally `id`,
  `expected`, `context`, `metadata`; blank lines are skipped.
- **YAML** (`.yaml`, `.yml`): a list of such objects, or `{items: [...]}`.
- **CSV** (`.csv`, with a header row): the columns `id`, `expected`, `context` (a JSON list)
  and `metadata.<key>` fill those fields; a column `input` is a text input; any other column
  is an input variable (`question`, `context_text`, ...). An empty `expected`, `context`,
  `id` or `metadata.<key>` cell means none.

Every problem is collected, not just the first: `InvalidItems` lists them all, each as
`path:line: field: message`, and nothing is stored when there is one.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

from keel.core.datasets import DatasetItem
from keel.evals.datasets import InvalidItems, ItemProblem, parse_items

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".yaml": "yaml", ".yml": "yaml"}
_CSV_FIELDS = ("id", "expected", "context")
_METADATA = "metadata."


def load_dataset_file(path: Path) -> list[DatasetItem]:
    """The items in `path` (format by suffix); InvalidItems naming every problem."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(FORMATS))
        raise InvalidItems([ItemProblem(str(path), None, f"unknown file type; use one of {known}")])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidItems([ItemProblem(str(path), None, f"cannot be read: {exc}")]) from None
    parse = {"jsonl": parse_jsonl, "csv": parse_csv, "yaml": parse_yaml}[kind]
    return parse(text, str(path))


def _finish(
    path: str, docs: list[tuple[str, Any]], problems: list[ItemProblem]
) -> list[DatasetItem]:
    try:
        items = parse_items(docs)
    except InvalidItems as exc:
        problems = [*problems, *exc.problems]
        items = []
    if not problems and not items:
        problems.append(ItemProblem(path, None, "holds no items"))
    if problems:
        raise InvalidItems(sorted(problems, key=_order))
    return items


def _order(problem: ItemProblem) -> tuple[int, str]:
    line = problem.where.rpartition(":")[2]
    return (int(line) if line.isdigit() else 0, problem.field or "")


# --- JSONL -------------------------------------------------------------------------------


def parse_jsonl(text: str, path: str = "<jsonl>") -> list[DatasetItem]:
    """Items from JSON Lines text: one object per line."""
    docs: list[tuple[str, Any]] = []
    problems: list[ItemProblem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            docs.append((where, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            problems.append(ItemProblem(where, None, f"not valid JSON: {exc}"))
    return _finish(path, docs, problems)


# --- YAML --------------------------------------------------------------------------------


def parse_yaml(text: str, path: str = "<yaml>") -> list[DatasetItem]:
    """Items from YAML text: a list of items, or a mapping with `items`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise InvalidItems([ItemProblem(where, None, f"not valid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise InvalidItems([ItemProblem(path, None, f"not valid YAML: {exc}")]) from None
    if isinstance(data, dict) and isinstance(node, yaml.MappingNode):
        extra = sorted(str(key) for key in data if key != "items")
        if "items" not in data or extra:
            where = f"{path}:1"
            message = "a dataset file is a list of items or {items: [...]}"
            if extra:
                message += f"; unknown key {extra[0]!r}"
            raise InvalidItems([ItemProblem(where, None, message)])
        data, node = data["items"], _value_node(node, "items")
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        line = node.start_mark.line + 1 if node is not None else 1
        raise InvalidItems(
            [
                ItemProblem(
                    f"{path}:{line}", None, "a dataset file is a list of items or {items: [...]}"
                )
            ]
        )
    docs = [
        (f"{path}:{n.start_mark.line + 1}", doc) for n, doc in zip(node.value, data, strict=True)
    ]
    nodes = {where: n for (where, _), n in zip(docs, node.value, strict=True)}
    try:
        return _finish(path, docs, [])
    except InvalidItems as exc:
        raise InvalidItems(
            [_field_line(p, nodes.get(p.where), path) for p in exc.problems]
        ) from None


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _field_line(problem: ItemProblem, node: yaml.Node | None, path: str) -> ItemProblem:
    """`problem` pointing at the line of its field (`context[2]`) inside the item's node."""
    if node is None or problem.field is None:
        return problem
    for key, index in _STEP.findall(problem.field):
        child = None
        if key and isinstance(node, yaml.MappingNode):
            child = _value_node(node, key)
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            child = node.value[int(index)]
        if child is None:
            break
        node = child
    return ItemProblem(f"{path}:{node.start_mark.line + 1}", problem.field, problem.message)


def _value_node(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found: yaml.Node = value_node
            return found
    return None


# --- CSV ---------------------------------------------------------------------------------


def parse_csv(text: str, path: str = "<csv>") -> list[DatasetItem]:
    """Items from CSV text with a header row (see the module's docstring for the columns)."""
    rows = _csv_rows(text, path)
    header_line, header = next(rows, (1, []))
    problems: list[ItemProblem] = []
    names = [name.strip() for name in header]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    variables = [
        n for n in names if n not in (*_CSV_FIELDS, "input") and not n.startswith(_METADATA)
    ]
    where = f"{path}:{header_line}"
    if not names:
        raise InvalidItems([ItemProblem(path, None, "holds no header row")])
    if duplicates:
        problems.append(ItemProblem(where, duplicates[0], "column given twice"))
    if "" in names or _METADATA in names:
        problems.append(ItemProblem(where, None, "a column has no name"))
    if "input" in names and variables:
        problems.append(
            ItemProblem(
                where,
                "input",
                f"an input column and variable columns ({', '.join(variables)}); "
                "use one or the other",
            )
        )
    elif "input" not in names and not variables:
        problems.append(ItemProblem(where, None, "needs an input column or variable columns"))
    if problems:
        raise InvalidItems(problems)
    docs: list[tuple[str, Any]] = []
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) != len(names):
            problems.append(
                ItemProblem(where, None, f"has {len(row)} cells; the header has {len(names)}")
            )
            continue
        doc, found = _csv_item(dict(zip(names, row, strict=True)), variables, where)
        problems.extend(found)
        docs.append((where, doc))
    return _finish(path, docs, problems)


def _csv_rows(text: str, path: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each row; a quoted cell may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = ItemProblem(f"{path}:{line}", None, f"not valid CSV: {exc}")
            raise InvalidItems([problem]) from None
        yield line, row
        line = reader.line_num + 1


def _csv_item(
    cells: dict[str, str], variables: list[str], where: str
) -> tuple[dict[str, Any], list[ItemProblem]]:
    doc: dict[str, Any] = {}
    problems: list[ItemProblem] = []
    if "input" in cells:
        doc["input"] = cells["input"] or None
    else:
        doc["input"] = {name: cells[name] for name in variables}
    if cells.get("id", "").strip():
        doc["id"] = cells["id"].strip()
    if cells.get("expected"):
        doc["expected"] = cells["expected"]
    if cells.get("context", "").strip():
        try:
            doc["context"] = orjson.loads(cells["context"])
        except orjson.JSONDecodeError:
            problems.append(
                ItemProblem(where, "context", 'must be a JSON list, e.g. ["first text", "second"]')
            )
    metadata = {
        name.removeprefix(_METADATA): value
        for name, value in cells.items()
        if name.startswith(_METADATA) and value
    }
    if metadata:
        doc["metadata"] = metadata
    return doc, problems
