"""From a suite file to runnable `RunSpec`s: datasets, prompts and evaluators resolved.

The suite names things; a `Backend` (the REST API of a running Keel, for the CLI) turns the
names into pinned values: the dataset version (a file is pushed first, so the run pins the
version it made, or the unchanged one), the prompt version behind a label, and, for a prompt
in a local file, the sibling files it includes. Evaluators come from the built-in registry
plus the suite's plugin files.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from keel.core.datasets import DatasetVersion
from keel.core.prompts import PromptTemplate, PromptVersion, content_hash
from keel.evals.registry import EvaluatorRegistry, Services, builtin_registry
from keel.evals.runner import ResultCache, RunSpec
from keel.evals.suite import DatasetRef, Suite, SuiteError, Variant
from keel.evals.tasks import CallableTask, ModelTask, PromptTask, Task
from keel.ports import ChatModel
from keel.prompts.files import PromptFileError, load_prompt_file, prompt_files


class Backend(Protocol):
    """What planning needs from a running Keel (blocking calls)."""

    def prompt_version(self, name: str, selector: str) -> PromptVersion:
        """The version a number or label names."""
        ...

    def dataset(self, name: str, version: int | None) -> DatasetVersion: ...

    def push_dataset(self, name: str, file: Path) -> DatasetVersion:
        """Push a file's items as the dataset's next version (unchanged: the current one)."""
        ...


def load_registry(plugins: Sequence[Path]) -> EvaluatorRegistry:
    """The built-in evaluators plus every decorated function in the plugin files."""
    from keel.evals.custom import load_plugin_file

    registry = builtin_registry()
    for path in plugins:
        load_plugin_file(path, registry)
    return registry


def resolve_dataset(backend: Backend, ref: DatasetRef) -> DatasetVersion:
    """The dataset version a run will pin (pushing the file first when one is given)."""
    if ref.file is not None:
        return backend.push_dataset(ref.name, ref.file)
    return backend.dataset(ref.name, ref.version)


def build_task(backend: Backend, suite: Suite, variant: Variant, model: ChatModel) -> Task:
    """The task a variant runs."""
    config = variant.task
    if config.python is not None:
        return CallableTask(_import(config.python, suite.path.parent))
    if config.prompt is None:
        assert config.model is not None  # the suite parser requires one of the three
        return ModelTask(model, config.model, config.params)
    prompt = config.prompt
    if prompt.file is not None:
        version, included = _file_prompt(prompt.file)
        return PromptTask(
            model,
            version,
            included=included,
            alias=config.model,
            params=config.params,
            from_file=str(prompt.file),
        )
    assert prompt.name is not None
    selector = str(prompt.version) if prompt.version is not None else str(prompt.label)
    version = backend.prompt_version(prompt.name, selector)
    return PromptTask(
        model,
        version,
        alias=config.model,
        params=config.params,
        label=prompt.label,
    )


def plan_suite(
    backend: Backend,
    suite: Suite,
    model: ChatModel,
    *,
    services: Services,
    variants: Sequence[Variant] | None = None,
    repeat: int | None = None,
    concurrency: int | None = None,
    registry: EvaluatorRegistry | None = None,
    cache: ResultCache | None = None,
    cache_scope: str = "",
) -> list[RunSpec]:
    """Resolve the suite's dataset, tasks and evaluators into one spec per variant."""
    registry = registry or load_registry(suite.plugins)
    evaluators = registry.build_all(suite.evaluators, services)
    dataset = resolve_dataset(backend, suite.dataset)
    specs = []
    for variant in variants or suite.variants:
        specs.append(
            RunSpec(
                name=f"{suite.name} / {variant.name}",
                dataset=dataset,
                task=build_task(backend, suite, variant, model),
                evaluators=evaluators,
                repeat=repeat or suite.repeat,
                concurrency=concurrency or suite.concurrency,
                suite=suite.name,
                variant=variant.name,
                cache=cache,
                cache_scope=f"{cache_scope}|judge={suite.judge_model}",
            )
        )
    return specs


def _file_prompt(path: Path) -> tuple[PromptVersion, dict[str, PromptVersion]]:
    """A prompt file as an unpushed version (number 0), its includes read from its folder."""
    try:
        template, _ = load_prompt_file(path)
        siblings = {}
        for other in prompt_files([path.parent]):
            if other != path:
                sibling, _ = load_prompt_file(other)
                siblings[sibling.name] = sibling
    except PromptFileError as exc:
        raise SuiteError(str(path), None, None, str(exc)) from None
    included: dict[str, PromptVersion] = {}
    visiting: set[str] = set()

    def local(name: str, owner: str) -> PromptVersion:
        sibling = siblings.get(name)
        if sibling is None:
            raise SuiteError(
                str(path), None, None, f"{owner} includes {name!r}, which is not in {path.parent}"
            )
        if name in visiting:
            raise SuiteError(str(path), None, None, f"{name!r} includes itself")
        visiting.add(name)
        return _unpushed(sibling, siblings, included, local)

    return _unpushed(template, siblings, included, local), included


def _unpushed(
    template: PromptTemplate,
    siblings: dict[str, PromptTemplate],
    included: dict[str, PromptVersion],
    local: Callable[[str, str], PromptVersion],
) -> PromptVersion:
    pins = {}
    for reference in template.includes():
        name = reference.partition("@")[0]
        if f"{name}@0" not in included:
            included[f"{name}@0"] = local(name, template.name)
        pins[reference] = 0
    return PromptVersion(
        name=template.name,
        version=0,
        template=template,
        content_hash=content_hash(template, pins),
        pins=pins,
        created_at=0.0,
    )


def _import(target: str, folder: Path) -> Callable[[Any], Any]:
    module_name, _, attribute = target.partition(":")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SuiteError(
            str(folder), None, "task.python", f"cannot import {module_name}: {exc}"
        ) from None
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise SuiteError(str(folder), None, "task.python", f"{target} is not a function")
    return fn  # type: ignore[no-any-return]
