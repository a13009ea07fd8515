"""Dataset files: JSONL, CSV and YAML read into the same items; mistakes named by file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.core.datasets import DatasetItem, derived_item_id, item_to_json
from keel.core.evaluation import Document
from keel.evals.dataset_files import load_dataset_file, parse_csv, parse_jsonl, parse_yaml
from keel.evals.datasets import InvalidItems, parse_items

QUESTION = {"question": "How long is the warranty?"}


def problems(error: pytest.ExceptionInfo[InvalidItems]) -> list[str]:
    return [str(problem) for problem in error.value.problems]


def test_the_three_formats_read_into_the_same_items(tmp_path: Path) -> None:
    jsonl = tmp_path / "golden.jsonl"
    jsonl.write_text(
        '{"id": "w1", "input": {"question": "How long is the warranty?"}, "expected": "Two '
        'years.", "context": ["The warranty lasts two years.", {"id": "faq", "text": "FAQ"}], '
        '"metadata": {"topic": "warranty"}}\n'
        "\n"
        '{"input": "Hello"}\n'
    )
    yaml_file = tmp_path / "golden.yaml"
    yaml_file.write_text(
        "items:\n"
        "  - id: w1\n"
        '    input: {question: "How long is the warranty?"}\n'
        "    expected: Two years.\n"
        "    context:\n"
        "      - The warranty lasts two years.\n"
        "      - {id: faq, text: FAQ}\n"
        "    metadata: {topic: warranty}\n"
        "  - input: Hello\n"
    )
    csv_file = tmp_path / "golden.csv"
    csv_file.write_text(
        "id,question,expected,context,metadata.topic\n"
        'w1,How long is the warranty?,Two years.,"[""The warranty lasts two years."", '
        '{""id"": ""faq"", ""text"": ""FAQ""}]",warranty\n'
    )
    first = DatasetItem(
        id="w1",
        input=QUESTION,
        expected="Two years.",
        context=(Document("1", "The warranty lasts two years."), Document("faq", "FAQ")),
        metadata={"topic": "warranty"},
    )
    hello = DatasetItem(id=derived_item_id("Hello"), input="Hello")
    assert load_dataset_file(jsonl) == [first, hello]
    assert load_dataset_file(yaml_file) == [first, hello]
    assert load_dataset_file(csv_file) == [first]


def test_a_csv_input_column_is_a_text_and_empty_cells_mean_none() -> None:
    items = parse_csv("id,input,expected,context\n,Hi there,,\nx,Bye,See you,\n")
    assert [item_to_json(item) for item in items] == [
        {"id": derived_item_id("Hi there"), "input": "Hi there"},
        {"id": "x", "input": "Bye", "expected": "See you"},
    ]


def test_a_csv_cell_may_span_lines_and_lines_are_counted_from_a_row_start() -> None:
    (item,) = parse_csv('question,expected\n"first\nquestion",one\n')
    assert item.input == {"question": "first\nquestion"}
    with pytest.raises(InvalidItems) as error:
        parse_csv('question,expected\n"first\nquestion",one\nonly one cell\n', "q.csv")
    assert problems(error) == ["q.csv:4: has 1 cells; the header has 2"]


def test_jsonl_mistakes_are_all_named_with_line_and_field() -> None:
    text = (
        '{"input": "ok"}\n'
        "{not json}\n"
        '{"expectd": "x", "input": "a"}\n'
        '{"input": 3}\n'
        '{"input": "ok"}\n'
        '{"input": "b", "context": "one text"}\n'
        '["a list"]\n'
    )
    with pytest.raises(InvalidItems) as error:
        parse_jsonl(text, "data.jsonl")
    found = problems(error)
    assert found[0].startswith("data.jsonl:2: not valid JSON")
    assert found[1:] == [
        "data.jsonl:3: expectd: unknown field; did you mean 'expected'? (an item has id, "
        "input, expected, context, metadata)",
        "data.jsonl:4: input: must be a text or an object of prompt variables, not a number",
        f"data.jsonl:5: id: {derived_item_id('ok')!r} is also the id at data.jsonl:1 (derived "
        "from the input: the same input twice); give each item its own id",
        "data.jsonl:6: context: must be a list of texts or of {id, text} documents",
        "data.jsonl:7: an item is an object with an input, not list",
    ]


def test_yaml_problems_point_at_the_field_line() -> None:
    text = (
        "- id: a\n"
        "  input: Hi\n"
        "- id: b\n"
        "  input: Hello\n"
        "  context:\n"
        "    - fine\n"
        "    - {id: x, txt: typo}\n"
        "- id: a\n"
        "  input: Again\n"
        "- expected: no input\n"
    )
    with pytest.raises(InvalidItems) as error:
        parse_yaml(text, "set.yaml")
    assert problems(error) == [
        "set.yaml:7: context[1]: must be a text or {id, text} (id a text, text a text)",
        "set.yaml:8: id: 'a' is also the id at set.yaml:1; give each item its own id",
        "set.yaml:10: input: required: a text, or an object of prompt variables",
    ]


def test_yaml_syntax_and_shape_errors() -> None:
    with pytest.raises(InvalidItems) as error:
        parse_yaml("- input: [unclosed\n", "bad.yaml")
    assert problems(error)[0].startswith("bad.yaml:2: not valid YAML")
    with pytest.raises(InvalidItems) as error:
        parse_yaml("name: x\nitems: []\n", "shape.yaml")
    assert problems(error) == [
        "shape.yaml:1: a dataset file is a list of items or {items: [...]}; unknown key 'name'"
    ]
    with pytest.raises(InvalidItems) as error:
        parse_yaml("just text\n", "text.yaml")
    assert problems(error) == ["text.yaml:1: a dataset file is a list of items or {items: [...]}"]
    with pytest.raises(InvalidItems) as error:
        parse_yaml("[]\n", "empty.yaml")
    assert problems(error) == ["empty.yaml: holds no items"]


def test_csv_header_and_row_mistakes() -> None:
    with pytest.raises(InvalidItems) as error:
        parse_csv("input,question\nx,y\n", "both.csv")
    assert problems(error) == [
        "both.csv:1: input: an input column and variable columns (question); use one or the other"
    ]
    with pytest.raises(InvalidItems) as error:
        parse_csv("id,expected\n1,x\n", "none.csv")
    assert problems(error) == ["none.csv:1: needs an input column or variable columns"]
    with pytest.raises(InvalidItems) as error:
        parse_csv('input,context\nq,not json\nr\nt,"[1, ""ok""]"\n', "rows.csv")
    assert problems(error) == [
        'rows.csv:2: context: must be a JSON list, e.g. ["first text", "second"]',
        "rows.csv:3: has 1 cells; the header has 2",
        "rows.csv:4: context[0]: must be a text or {id, text} (id a text, text a text)",
    ]


def test_broken_csv_quoting_names_the_row() -> None:
    with pytest.raises(InvalidItems) as error:
        parse_csv('input,expected\nfine,yes\n"open"quote,x\n', "q.csv")
    assert problems(error)[0].startswith("q.csv:3: not valid CSV: ")


def test_unknown_suffix_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidItems) as error:
        load_dataset_file(tmp_path / "data.txt")
    assert "unknown file type; use one of .csv, .jsonl, .ndjson, .yaml, .yml" in problems(error)[0]
    with pytest.raises(InvalidItems) as error:
        load_dataset_file(tmp_path / "missing.jsonl")
    assert problems(error)[0].startswith(f"{tmp_path / 'missing.jsonl'}: cannot be read")


def test_given_ids_may_be_numbers_and_ids_stay_stable_when_the_input_changes() -> None:
    (item,) = parse_items([("items[0]", {"id": 7, "input": "a"})])
    assert item.id == "7"
    (before,) = parse_items([("x", {"input": {"q": "a"}})])
    (after,) = parse_items([("x", {"input": {"q": "a"}, "expected": "b"})])
    assert before.id == after.id == derived_item_id({"q": "a"})
