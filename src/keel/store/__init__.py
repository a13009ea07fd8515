"""Persistence: schema, engines, migrations, the batching span writer and the span repository."""

from keel.store.engine import create_engine_for
from keel.store.migrate import current, downgrade, upgrade
from keel.store.spans import SpanRepository
from keel.store.writer import SpanWriter, WriterStats

__all__ = [
    "SpanRepository",
    "SpanWriter",
    "WriterStats",
    "create_engine_for",
    "current",
    "downgrade",
    "upgrade",
]
