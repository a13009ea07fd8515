"""Composition root: Settings -> engine, writer, transport, providers, router, gateway,
registries and the evaluation services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine, inspect

from keel.core.errors import ConfigError, KeelError
from keel.evals.datasets import DatasetService
from keel.evals.online import OnlineEvaluator, OnlineRule, SamplingSink, SpanMatch
from keel.evals.registry import EvaluatorSpec, Services, builtin_registry
from keel.evals.run_records import RunRecords
from keel.gateway.local_model import LocalChatModel
from keel.gateway.pipeline import Gateway
from keel.gateway.prompting import PromptApplier
from keel.gateway.recorder import Recorder
from keel.gateway.router import Router
from keel.prompts.cache import PromptCache
from keel.prompts.registry import PromptRegistry
from keel.providers.registry import create_provider
from keel.providers.transport import HttpTransport
from keel.settings import Settings
from keel.store.datasets import DatasetStore
from keel.store.engine import create_engine_for
from keel.store.eval_runs import EvalRunStore
from keel.store.migrate import upgrade
from keel.store.prompts import PromptStore
from keel.store.queries import TraceQueries
from keel.store.scores import ScoreRepository
from keel.store.spans import SpanRepository
from keel.store.trace_selection import TraceSelector
from keel.store.writer import SpanWriter
from keel.store.writer_process import ProcessSpanWriter
from keel.tracing.ingest import Ingestor

log = logging.getLogger("keel")
# How soon a push or label move made by another process reaches this one's prompt cache.
PROMPT_REFRESH_S = 2.0


@dataclass
class Container:
    """Everything a running Keel process holds; built once, started and stopped by the server."""

    settings: Settings
    transport: HttpTransport
    writer: ProcessSpanWriter | SpanWriter
    recorder: Recorder
    gateway: Gateway
    ingestor: Ingestor
    scores: ScoreRepository
    queries: TraceQueries
    prompts: PromptRegistry
    prompt_cache: PromptCache
    datasets: DatasetService
    eval_runs: RunRecords
    trace_selector: TraceSelector
    engine: Engine | None = None  # the in-process pool, closed at stop
    online: OnlineEvaluator | None = None  # scores sampled live traffic (online_evals)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Open the upstream pool, start the span writer and the prompt cache's watch."""
        await self.transport.start()
        self.writer.start()
        self._tasks.append(asyncio.create_task(self.prompt_cache.follow(PROMPT_REFRESH_S)))
        if self.online is not None:
            self.online.start()

    async def stop(self) -> None:
        """Finish token counts, close the upstream pool, drain every queued span."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.online is not None:
            await self.online.stop()
        await self.recorder.drain()
        await self.transport.close()
        self.writer.close()
        if self.engine is not None:
            self.engine.dispose()
        stats = self.writer.stats()
        log.info("span writer drained: %s", stats.as_dict())


def build_container(settings: Settings, *, migrate: bool = True) -> Container:
    """Wire the services for `settings`; migrates the database to head unless told not to."""
    if migrate:
        upgrade(settings.database_url)
    engine = create_engine_for(settings.database_url)  # one pool for every in-process use
    writer: ProcessSpanWriter | SpanWriter
    if settings.span_writer == "process":
        writer = ProcessSpanWriter(
            settings.database_url,
            queue_size=settings.queue_size,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
        )
    else:
        writer = SpanWriter(
            engine,
            queue_size=settings.queue_size,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
        )
    transport = HttpTransport()
    providers = {
        deployment.name: create_provider(deployment, transport)
        for alias in settings.aliases.values()
        for deployment in alias.deployments
    }
    # With online evaluation, every recorded span is also offered to its sampler.
    sink = SamplingSink(writer) if settings.online_evals else writer
    recorder = Recorder(sink, settings.prices, capture_messages=settings.capture_messages)
    gateway = Gateway(Router(settings.aliases, providers), settings.retry, recorder)
    ingestor = Ingestor(sink, settings.prices)
    scores, queries = ScoreRepository(engine), TraceQueries(engine)
    online = None
    if isinstance(sink, SamplingSink):
        online = sink.online = online_evaluator(settings, gateway, scores)
    prompts = PromptRegistry(PromptStore(engine))
    prompt_cache = PromptCache(prompts)
    prompts.on_change = prompt_cache.forget
    dataset_store = DatasetStore(engine)
    datasets = DatasetService(dataset_store)
    eval_runs = RunRecords(EvalRunStore(engine), dataset_store, writer)
    return Container(
        settings, transport, writer, recorder, gateway, ingestor, scores, queries, prompts,
        prompt_cache, datasets, eval_runs, TraceSelector(engine, queries), engine, online,
    )  # fmt: skip


def online_evaluator(
    settings: Settings, gateway: Gateway, scores: ScoreRepository
) -> OnlineEvaluator:
    """The sampler of `online_evals`: its judges call the gateway in process."""
    registry = builtin_registry()
    judge = LocalChatModel(gateway, settings.prices)
    rules = []
    for index, config in enumerate(settings.online_evals):
        specs = [
            EvaluatorSpec(e.type, e.name, e.params, e.threshold, e.negate)
            for e in config.evaluators
        ]
        try:
            evaluators = registry.build_all(specs, Services(judge=judge, judge_model=config.judge))
        except ConfigError as exc:
            raise ConfigError(f"online_evals[{index}] ({config.name}): {exc}") from None
        match = SpanMatch(config.kind, config.prompt, config.model, tuple(config.tags))
        rules.append(OnlineRule(config.name, match, config.sample, evaluators))
    return OnlineEvaluator(rules, scores.add)


def prompt_applier(container: Container) -> PromptApplier:
    """What the chat route uses to serve requests that name a prompt."""
    return PromptApplier(container.prompt_cache)


def open_spans(settings: Settings) -> SpanRepository:
    """Read access to recorded spans (for the CLI), without starting the gateway."""
    return SpanRepository(_migrated_engine(settings))


def open_queries(settings: Settings) -> TraceQueries:
    """The API's read queries (for the CLI), without starting the gateway."""
    return TraceQueries(_migrated_engine(settings))


def _migrated_engine(settings: Settings) -> Engine:
    engine = create_engine_for(settings.database_url)
    if not inspect(engine).has_table("spans"):
        raise KeelError(
            f"the database {engine.url.render_as_string(hide_password=True)} has no Keel "
            "tables yet; run `keel db upgrade` (or start `keel serve`, which migrates), or "
            "point KEEL_DATABASE_URL at the database `keel serve` writes to"
        )
    return engine
