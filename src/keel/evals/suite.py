"""Suite files: one YAML file saying what to evaluate, how, and what must hold for CI.

    name: rag_qa
    dataset: {file: datasets/rag_qa.jsonl, name: rag_qa_golden}   # or `rag_qa_golden@2`
    task: {prompt: rag_qa, label: staging, model: fast, params: {temperature: 0}}
    variants:                          # optional: each variant is one run
      - {name: fast}
      - {name: smart, model: smart}
    matrix: {model: [fast, smart], prompt: ["rag_qa:staging", "../prompts/rag_qa.yaml"]}
    judge: {model: judge}
    evaluators:
      - {type: contains, name: cites, params: {value: "[Source:"}}
      - {type: faithfulness, threshold: 0.8, weight: 2}
    repeat: 1
    concurrency: 16
    gates:
      - {evaluator: faithfulness, metric: mean, min: 0.8}
      - {regression: all, metric: mean, margin: 0.02, confidence: 0.95}

A prompt is named in the registry (`rag_qa`, `rag_qa@3`, `rag_qa:staging`; with no version
or label, `production`) or given as a file path (a change not pushed yet). A variant
overrides the task's fields; `matrix` makes one variant per combination. Paths are relative
to the suite file. `load_suite` checks everything it can without the server and reports the
first problem as `file:line: field: message`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from keel.evals.registry import EvaluatorSpec
from keel.prompts.files import line_of

Metric = Literal["mean", "pass_rate"]
METRICS: tuple[Metric, ...] = ("mean", "pass_rate")
DEFAULT_LABEL = "production"
OVERALL = "overall"  # the weighted mean of every evaluator's mean score
_PROMPT_REF = re.compile(
    r"^(?P<name>[A-Za-z0-9_.\-/]+?)(?:@(?P<version>\d+)|:(?P<label>[\w.\-]+))?$"
)
_DATASET_REF = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+?)(?:@(?P<version>\d+))?$")


class SuiteError(ValueError):
    """A suite file that cannot run: `path:line: field: message`."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class PromptRef:
    """A prompt in the registry (by version or label) or in a local file."""

    name: str | None = None
    version: int | None = None
    label: str | None = None
    file: Path | None = None

    def with_label(self, label: str) -> PromptRef:
        """The same prompt at `label` in the registry (a file's prompt by the name it has)."""
        return PromptRef(name=self.name, label=label)

    def __str__(self) -> str:
        if self.file is not None:
            return str(self.file)
        if self.version is not None:
            return f"{self.name}@{self.version}"
        return f"{self.name}:{self.label or DEFAULT_LABEL}"


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """What a variant calls: a prompt with a model alias, a bare model, or a Python function."""

    prompt: PromptRef | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    python: str | None = None  # "module:function", importable from the suite's folder


@dataclass(frozen=True, slots=True)
class Variant:
    """One run of the suite: a name and its task."""

    name: str
    task: TaskConfig


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """The dataset: a registry name (and version), or a file pushed under `name` first."""

    name: str
    version: int | None = None
    file: Path | None = None


@dataclass(frozen=True, slots=True)
class Gate:
    """An absolute rule: the evaluator's metric must be >= min (and/or <= max)."""

    evaluator: str
    metric: Metric
    min: float | None = None
    max: float | None = None

    def __str__(self) -> str:
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        return f"{self.evaluator} {self.metric} {' and '.join(bounds)}"


@dataclass(frozen=True, slots=True)
class RegressionRule:
    """No evaluator (of `evaluators`, None: all) worse than the baseline by more than
    `margin` at `confidence`."""

    evaluators: tuple[str, ...] | None
    metric: Metric = "mean"
    margin: float = 0.0
    confidence: float = 0.95

    def __str__(self) -> str:
        which = "any evaluator" if self.evaluators is None else ", ".join(self.evaluators)
        return (
            f"{which} {self.metric} not worse than baseline by more than {self.margin:g} "
            f"at {self.confidence:.0%} confidence"
        )


@dataclass(frozen=True, slots=True)
class Suite:
    """A parsed suite file."""

    name: str
    path: Path
    dataset: DatasetRef
    variants: tuple[Variant, ...]
    evaluators: tuple[EvaluatorSpec, ...]
    judge_model: str | None = None
    repeat: int = 1
    concurrency: int = 16
    gates: tuple[Gate, ...] = ()
    regressions: tuple[RegressionRule, ...] = ()
    plugins: tuple[Path, ...] = ()

    def variant(self, name: str) -> Variant:
        """The variant of that name; SuiteError naming the ones there are."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        names = ", ".join(v.name for v in self.variants)
        raise SuiteError(
            str(self.path), None, "variants", f"no variant {name!r} (there are: {names})"
        )


def baseline_variant(variant: Variant, label: str) -> Variant | None:
    """The variant with its prompt at `label` in the registry (None: it uses no prompt)."""
    prompt = variant.task.prompt
    if prompt is None or prompt.name is None:
        return None
    task = replace(variant.task, prompt=prompt.with_label(label))
    return Variant(name=f"{variant.name}@{label}", task=task)


def load_suite(path: Path) -> Suite:
    """Read and check a suite file."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise SuiteError(str(path), None, None, f"cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SuiteError(str(path), line, None, f"not valid YAML: {exc}") from None
    parser = _Parser(path, node)
    return parser.suite(data)


class _Parser:
    def __init__(self, path: Path, node: yaml.Node | None) -> None:
        self.path = path
        self.root = path.parent
        self.node = node

    def fail(self, field: str, message: str) -> SuiteError:
        return SuiteError(str(self.path), line_of(self.node, field), field, message)

    def mapping(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, "must be a mapping")
        return value

    def known(self, data: Mapping[str, Any], field: str, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                where = f"{field}.{key}" if field else str(key)
                raise self.fail(where, f"unknown key (allowed: {', '.join(allowed)})")

    def suite(self, data: Any) -> Suite:
        data = self.mapping(data, "")
        self.known(
            data,
            "",
            (
                "name", "description", "dataset", "task", "variants", "matrix", "judge",
                "evaluators", "repeat", "concurrency", "gates", "plugins",
            ),
        )  # fmt: skip
        if "dataset" not in data:
            raise self.fail("dataset", "is required")
        if "evaluators" not in data:
            raise self.fail("evaluators", "is required: which evaluators score the answers")
        base = self.task(data.get("task") or {}, "task")
        variants = self.variants(data, base)
        judge = self.mapping(data.get("judge") or {}, "judge")
        self.known(judge, "judge", ("model",))
        evaluators = self.evaluators(data["evaluators"])
        rules = self.rules(data.get("gates") or [], {e.label for e in evaluators} | {OVERALL})
        plugins = data.get("plugins") or []
        return Suite(
            name=self.text(data.get("name", self.path.stem), "name"),
            path=self.path,
            dataset=self.dataset(data["dataset"]),
            variants=variants,
            evaluators=evaluators,
            judge_model=self.optional_text(judge.get("model"), "judge.model"),
            repeat=self.count(data.get("repeat", 1), "repeat"),
            concurrency=self.count(data.get("concurrency", 16), "concurrency"),
            gates=tuple(rule for rule in rules if isinstance(rule, Gate)),
            regressions=tuple(rule for rule in rules if isinstance(rule, RegressionRule)),
            plugins=tuple(self.path_of(p, f"plugins[{i}]") for i, p in enumerate(plugins)),
        )

    def text(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(field, "must be a non-empty string")
        return value

    def optional_text(self, value: Any, field: str) -> str | None:
        return None if value is None else self.text(value, field)

    def count(self, value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(field, "must be a whole number of at least 1")
        return value

    def number(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(field, "must be a number")
        return float(value)

    def path_of(self, value: Any, field: str) -> Path:
        path = self.root / self.text(value, field)
        if not path.exists():
            raise self.fail(field, f"no such file: {path}")
        return path

    def dataset(self, value: Any) -> DatasetRef:
        if isinstance(value, str):
            match = _DATASET_REF.match(value)
            if match is None:
                raise self.fail("dataset", "must be a dataset name, name@version or {file, name}")
            version = match["version"]
            return DatasetRef(match["name"], int(version) if version else None)
        data = self.mapping(value, "dataset")
        self.known(data, "dataset", ("file", "name", "version"))
        file = self.path_of(data["file"], "dataset.file") if "file" in data else None
        name = data.get("name") or (file.stem if file is not None else None)
        if name is None:
            raise self.fail("dataset", "give a `name` (registry) or a `file`")
        version = data.get("version")
        if version is not None:
            version = self.count(version, "dataset.version")
        return DatasetRef(self.text(name, "dataset.name"), version, file)

    def prompt(self, value: Any, field: str, label: Any, version: Any) -> PromptRef:
        text = self.text(value, field)
        if text.endswith((".yaml", ".yml")):
            path = self.path_of(text, field)
            try:
                document = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise self.fail(field, f"cannot read the prompt file {path}: {exc}") from None
            name = document.get("name") if isinstance(document, dict) else None
            return PromptRef(name=name if isinstance(name, str) else None, file=path)
        match = _PROMPT_REF.match(text)
        if match is None:
            raise self.fail(field, "must be a prompt name (name, name@3, name:label) or a file")
        if version is not None or match["version"]:
            return PromptRef(name=match["name"], version=int(version or match["version"]))
        return PromptRef(name=match["name"], label=label or match["label"] or DEFAULT_LABEL)

    def task(self, value: Any, field: str, base: TaskConfig | None = None) -> TaskConfig:
        data = self.mapping(value, field)
        self.known(data, field, ("name", "prompt", "label", "version", "model", "params", "python"))
        base = base or TaskConfig()
        prompt = base.prompt
        if "prompt" in data:
            prompt = self.prompt(
                data["prompt"], f"{field}.prompt", data.get("label"), data.get("version")
            )
        elif ("label" in data or "version" in data) and prompt is not None and prompt.name:
            prompt = PromptRef(
                name=prompt.name, label=data.get("label"), version=data.get("version")
            )
        params = {**base.params, **self.mapping(data.get("params") or {}, f"{field}.params")}
        python = data.get("python", base.python)
        if python is not None and ":" not in self.text(python, f"{field}.python"):
            raise self.fail(f"{field}.python", "must be module:function")
        return TaskConfig(
            prompt=prompt,
            model=self.optional_text(data.get("model", base.model), f"{field}.model"),
            params=params,
            python=python,
        )

    def variants(self, data: Mapping[str, Any], base: TaskConfig) -> tuple[Variant, ...]:
        variants: list[Variant] = []
        for index, raw in enumerate(data.get("variants") or []):
            field = f"variants[{index}]"
            raw = self.mapping(raw, field)
            task = self.task(raw, field, base)
            variants.append(
                Variant(self.text(raw.get("name", f"v{index + 1}"), f"{field}.name"), task)
            )
        if "matrix" in data:
            variants.extend(self.matrix(data["matrix"], base))
        if not variants:
            variants.append(Variant("default", base))
        names = [v.name for v in variants]
        for name in names:
            if names.count(name) > 1:
                raise self.fail("variants", f"two variants are named {name!r}")
        for index, variant in enumerate(variants):
            task = variant.task
            if task.python is None and task.model is None and task.prompt is None:
                where = "task" if len(variants) == 1 else f"variants[{index}]"
                raise self.fail(where, "give a `prompt`, a `model` or a `python` function")
        return tuple(variants)

    def matrix(self, value: Any, base: TaskConfig) -> list[Variant]:
        data = self.mapping(value, "matrix")
        self.known(data, "matrix", ("prompt", "model", "params"))
        axes: dict[str, list[Any]] = {}
        for key, options in data.items():
            if not isinstance(options, list) or not options:
                raise self.fail(f"matrix.{key}", "must be a non-empty list")
            axes[key] = options
        variants = []
        for combo in itertools.product(*axes.values()):
            chosen = dict(zip(axes, combo, strict=True))
            task = self.task(chosen, "matrix", base)
            parts = [str(task.prompt)] if "prompt" in chosen and task.prompt else []
            parts += [str(chosen["model"])] if "model" in chosen else []
            parts += (
                [",".join(f"{k}={v}" for k, v in chosen["params"].items())]
                if "params" in chosen
                else []
            )
            variants.append(Variant(" ".join(parts), task))
        return variants

    def evaluators(self, value: Any) -> tuple[EvaluatorSpec, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail("evaluators", "must be a non-empty list")
        specs = []
        for index, raw in enumerate(value):
            field = f"evaluators[{index}]"
            if isinstance(raw, str):
                raw = {"type": raw}
            raw = self.mapping(raw, field)
            self.known(raw, field, ("type", "name", "params", "threshold", "negate", "weight"))
            threshold = raw.get("threshold")
            specs.append(
                EvaluatorSpec(
                    type=self.text(raw.get("type"), f"{field}.type"),
                    name=self.optional_text(raw.get("name"), f"{field}.name") or "",
                    params=self.mapping(raw.get("params") or {}, f"{field}.params"),
                    threshold=None
                    if threshold is None
                    else self.number(threshold, f"{field}.threshold"),
                    negate=bool(raw.get("negate", False)),
                    weight=self.number(raw.get("weight", 1.0), f"{field}.weight"),
                )
            )
        return tuple(specs)

    def rules(self, value: Any, names: set[str]) -> list[Gate | RegressionRule]:
        if not isinstance(value, list):
            raise self.fail("gates", "must be a list of rules")
        rules: list[Gate | RegressionRule] = []
        for index, raw in enumerate(value):
            field = f"gates[{index}]"
            raw = self.mapping(raw, field)
            metric = raw.get("metric", "mean")
            if metric not in METRICS:
                raise self.fail(f"{field}.metric", f"must be one of {', '.join(METRICS)}")
            if "regression" in raw:
                self.known(raw, field, ("regression", "metric", "margin", "confidence"))
                which = raw["regression"]
                if which == "all":
                    evaluators = None
                elif isinstance(which, list) and all(w in names for w in which):
                    evaluators = tuple(which)
                else:
                    raise self.fail(
                        f"{field}.regression",
                        f"must be `all` or a list of evaluator names ({', '.join(sorted(names))})",
                    )
                confidence = self.number(raw.get("confidence", 0.95), f"{field}.confidence")
                if not 0.5 <= confidence < 1:
                    raise self.fail(f"{field}.confidence", "must be at least 0.5 and below 1")
                rules.append(
                    RegressionRule(
                        evaluators,
                        metric,
                        self.number(raw.get("margin", 0.0), f"{field}.margin"),
                        confidence,
                    )
                )
                continue
            self.known(raw, field, ("evaluator", "metric", "min", "max"))
            low = raw.get("min")
            high = raw.get("max")
            if low is None and high is None:
                raise self.fail(field, "give `min` and/or `max`")
            evaluator = self.text(raw.get("evaluator"), f"{field}.evaluator")
            if evaluator not in names:
                raise self.fail(
                    f"{field}.evaluator",
                    f"no evaluator named {evaluator!r} (there are: {', '.join(sorted(names))})",
                )
            rules.append(
                Gate(
                    evaluator,
                    metric,
                    None if low is None else self.number(low, f"{field}.min"),
                    None if high is None else self.number(high, f"{field}.max"),
                )
            )
        return rules
