"""The SDK client (settings, sampler, capture, exporter) and the process's default client.

`keel.configure(...)` builds a client and makes it the default, shutting down the
previous one; without it, the first span builds one from the `KEEL_*` environment.
`keel.shutdown()` flushes and forgets the default, so tests and notebooks can
start over with a fresh `configure()`.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Mapping
from typing import Any

from keel.sdk.capture import json_safe, json_text
from keel.sdk.config import Mask, SdkConfig, resolve_config
from keel.sdk.exporter import Exporter, ExportStats
from keel.sdk.logs import LimitedLog
from keel.sdk.spans import LiveSpan
from keel.sdk.transport import Transport, UrllibTransport


class Client:
    """One SDK configuration with its background exporter."""

    def __init__(
        self,
        config: SdkConfig,
        transport: Transport | None = None,
        log: LimitedLog | None = None,
    ) -> None:
        self.config = config
        self.log = log or LimitedLog()
        self.enabled = config.enabled
        self.capture = config.capture
        self._limit = config.max_field_bytes
        self._mask = config.mask
        self._rate = config.sample_rate
        self._sampler = random.Random()  # private: leaves the application's `random` alone
        self.exporter = Exporter(config, transport or UrllibTransport(), self.log)

    def sample(self) -> bool:
        """Whether a new trace is recorded (called once per trace, at its root)."""
        rate = self._rate
        return rate >= 1.0 or (rate > 0.0 and self._sampler.random() < rate)

    def capture_json(self, value: Any) -> str:
        """`value` masked, as JSON text within `max_field_bytes`. Never raises."""
        return json_text(value, self._limit, self._mask, self.log)

    def json_safe_mapping(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON-safe deep copy of `values` (metadata); empty if it cannot be made."""
        try:
            copied = json_safe(dict(values))
        except Exception as exc:
            self.log.internal_error("copying metadata", exc)
            return {}
        return copied if isinstance(copied, dict) else {}

    def attribute_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Attribute values OTLP can carry as they are; anything else as JSON text."""
        plain = (str, bool, int, float)
        kept: dict[str, Any] = {}
        for key, value in values.items():
            if value is None or isinstance(value, plain):
                kept[str(key)] = value
            elif isinstance(value, list | tuple) and all(isinstance(v, plain) for v in value):
                kept[str(key)] = list(value)
            else:
                kept[str(key)] = self.capture_json(value)
        return kept

    def record(self, span: LiveSpan) -> None:
        """Hand an ended span to the exporter."""
        self.exporter.add_span(span)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Send everything queued; True if it was done within `timeout_s` seconds."""
        return self.exporter.flush(timeout_s)

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Send what is queued (one last try each, no backoff), stop the exporter thread.

        Returns True if that finished within `timeout_s` (default `shutdown_timeout_s`).
        Spans ending later are dropped.
        """
        timeout = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
        return self.exporter.shutdown(timeout)

    def stats(self) -> ExportStats:
        """Export counters: queued, exported, dropped (queue full), failed, retries."""
        return self.exporter.stats()


class _Default:
    """The process's default client, created on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: Client | None = None


_default = _Default()


def configure(
    *,
    host: str | None = None,
    api_key: str | None = None,
    sample_rate: float | None = None,
    enabled: bool | None = None,
    capture: bool | None = None,
    release: str | None = None,
    environment: str | None = None,
    service_name: str | None = None,
    mask: Mask | None = None,
    flush_interval_s: float | None = None,
    max_batch: int | None = None,
    max_batch_bytes: int | None = None,
    max_queue: int | None = None,
    max_field_bytes: int | None = None,
    max_retries: int | None = None,
    backoff_s: float | None = None,
    export_timeout_s: float | None = None,
    shutdown_timeout_s: float | None = None,
    transport: Transport | None = None,
) -> Client:
    """Make a client from these settings (None: from `KEEL_*`, else default) the default.

    The previous default client is flushed and shut down. Raises ValueError for an
    invalid argument. Every setting is described in `keel.sdk.config`.
    """
    overrides = {
        "host": host,
        "api_key": api_key,
        "sample_rate": sample_rate,
        "enabled": enabled,
        "capture": capture,
        "release": release,
        "environment": environment,
        "service_name": service_name,
        "mask": mask,
        "flush_interval_s": flush_interval_s,
        "max_batch": max_batch,
        "max_batch_bytes": max_batch_bytes,
        "max_queue": max_queue,
        "max_field_bytes": max_field_bytes,
        "max_retries": max_retries,
        "backoff_s": backoff_s,
        "export_timeout_s": export_timeout_s,
        "shutdown_timeout_s": shutdown_timeout_s,
    }
    log = LimitedLog()
    client = Client(resolve_config(os.environ, overrides, log), transport, log)
    with _default.lock:
        previous, _default.client = _default.client, client
    if previous is not None:
        previous.shutdown()
    return client


def get_client() -> Client:
    """The default client, made from the environment on first use."""
    client = _default.client
    if client is None:
        with _default.lock:
            if _default.client is None:
                log = LimitedLog()
                _default.client = Client(resolve_config(os.environ, {}, log), log=log)
            client = _default.client
    return client


def active_client() -> Client | None:
    """The default client, or None when the SDK is disabled (the decorators' first check)."""
    client = _default.client or get_client()
    return client if client.enabled else None


def flush(timeout_s: float = 5.0) -> bool:
    """Send every span and score queued so far; True if done within `timeout_s` seconds."""
    client = _default.client
    return True if client is None else client.flush(timeout_s)


def shutdown(timeout_s: float | None = None) -> bool:
    """Flush and stop the default client; the next span starts a new one from the env."""
    with _default.lock:
        client, _default.client = _default.client, None
    return True if client is None else client.shutdown(timeout_s)


def stats() -> ExportStats:
    """Export counters of the default client (spans queued, exported, dropped, failed…)."""
    return get_client().stats()
