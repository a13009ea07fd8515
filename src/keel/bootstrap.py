"""Composition root: Settings -> engine, writer, transport, providers, router, gateway."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine, inspect

from keel.core.errors import KeelError
from keel.gateway.pipeline import Gateway
from keel.gateway.recorder import Recorder
from keel.gateway.router import Router
from keel.providers.registry import create_provider
from keel.providers.transport import HttpTransport
from keel.settings import Settings
from keel.store.engine import create_engine_for
from keel.store.migrate import upgrade
from keel.store.queries import TraceQueries
from keel.store.scores import ScoreRepository
from keel.store.spans import SpanRepository
from keel.store.writer import SpanWriter
from keel.store.writer_process import ProcessSpanWriter
from keel.tracing.ingest import Ingestor

log = logging.getLogger("keel")


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

    async def start(self) -> None:
        """Open the upstream pool and start the span writer (inside the event loop)."""
        await self.transport.start()
        self.writer.start()

    async def stop(self) -> None:
        """Finish token counts, close the upstream pool, drain every queued span."""
        await self.recorder.drain()
        await self.transport.close()
        self.writer.close()
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
    recorder = Recorder(writer, settings.prices, capture_messages=settings.capture_messages)
    gateway = Gateway(Router(settings.aliases, providers), settings.retry, recorder)
    ingestor = Ingestor(writer, settings.prices)
    scores, queries = ScoreRepository(engine), TraceQueries(engine)
    return Container(settings, transport, writer, recorder, gateway, ingestor, scores, queries)


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
