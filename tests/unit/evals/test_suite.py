"""Suite files: the example parses, and mistakes point at the line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.evals.suite import (
    Gate,
    PromptRef,
    RegressionRule,
    SuiteError,
    baseline_variant,
    load_suite,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "evals" / "rag_qa_suite.yaml"


def _suite(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data.jsonl").write_text('{"input": "hi"}\n')
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_the_example_suite_parses() -> None:
    suite = load_suite(EXAMPLE)
    assert suite.name == "rag_qa"
    assert suite.dataset.name == "rag_qa_golden" and suite.dataset.file is not None
    (variant,) = suite.variants
    assert variant.task.prompt is not None and variant.task.prompt.file is not None
    assert variant.task.model == "fast" and variant.task.params == {"temperature": 0}
    assert [e.label for e in suite.evaluators] == [
        "answers", "cites", "overlap", "no_refusal", "fast_enough",
    ]  # fmt: skip
    assert suite.evaluators[3].negate is True
    assert suite.gates[0] == Gate("answers", "pass_rate", min=0.9)
    assert suite.regressions == (RegressionRule(None, "mean", 0.02, 0.95),)
    assert suite.judge_model == "smart"


def test_prompt_references_and_the_matrix(tmp_path: Path) -> None:
    path = _suite(
        tmp_path,
        "dataset: {file: data.jsonl}\n"
        "task: {prompt: rag_qa, model: fast}\n"
        "matrix:\n"
        "  prompt: ['rag_qa@3', 'rag_qa:staging']\n"
        "  model: [fast, smart]\n"
        "evaluators: [is_json]\n",
    )
    suite = load_suite(path)
    assert suite.dataset.name == "data"
    prompts = [(v.task.prompt, v.task.model) for v in suite.variants]
    assert prompts == [
        (PromptRef("rag_qa", version=3), "fast"),
        (PromptRef("rag_qa", version=3), "smart"),
        (PromptRef("rag_qa", label="staging"), "fast"),
        (PromptRef("rag_qa", label="staging"), "smart"),
    ]
    assert [v.name for v in suite.variants][:2] == ["rag_qa@3 fast", "rag_qa@3 smart"]
    baseline = baseline_variant(suite.variants[0], "production")
    assert baseline is not None and baseline.task.prompt == PromptRef("rag_qa", label="production")
    assert baseline.task.model == "fast"


def test_a_bare_prompt_name_means_its_production_label(tmp_path: Path) -> None:
    path = _suite(tmp_path, "dataset: d\ntask: {prompt: rag_qa}\nevaluators: [is_json]\n")
    assert load_suite(path).variants[0].task.prompt == PromptRef("rag_qa", label="production")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dataset: d\ntask: {model: fast}\n", "suite.yaml:1: evaluators: is required"),
        (
            "dataset: d\ntask: {model: fast}\nevaluators:\n  - {type: equals, treshold: 1}\n",
            "suite.yaml:4: evaluators[0].treshold: unknown key",
        ),
        (
            "dataset: {file: missing.jsonl}\ntask: {model: fast}\nevaluators: [equals]\n",
            "suite.yaml:1: dataset.file: no such file",
        ),
        (
            "dataset: d\ntask: {model: fast}\nevaluators: [equals]\n"
            "gates:\n  - {evaluator: equal, min: 1}\n",
            "suite.yaml:5: gates[0].evaluator: no evaluator named 'equal' (there are: equals,",
        ),
        (
            "dataset: d\ntask: {model: fast}\nevaluators: [equals]\n"
            "gates:\n  - {regression: all, confidence: 95}\n",
            "suite.yaml:5: gates[0].confidence: must be at least 0.5 and below 1",
        ),
        ("dataset: d\nevaluators: [equals]\n", "task: give a `prompt`, a `model` or a `python`"),
        (
            "dataset: d\ntask: {model: fast}\nrepeat: 0\nevaluators: [equals]\n",
            "suite.yaml:3: repeat",
        ),
        ("dataset: [d\n", "suite.yaml:2: not valid YAML"),
    ],
)
def test_mistakes_name_the_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SuiteError) as caught:
        load_suite(_suite(tmp_path, text))
    assert message in str(caught.value).replace(str(tmp_path) + "/", "")
