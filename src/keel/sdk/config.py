"""SDK settings: arguments to `keel.configure()` or `KEEL_*` environment variables.

An argument to `keel.configure(...)` wins over the environment, the environment
over the default. Without a `configure()` call the SDK reads the environment the
first time a span starts. A malformed argument raises `ValueError` from
`configure()`; a malformed environment value is logged once (logger `keel.sdk`)
and the default is used, so a typo in a deployment never breaks the application.

Each setting as argument, environment variable, default, meaning:

- `host`, `KEEL_HOST`, `http://127.0.0.1:4000`: the Keel server; spans go to
  `{host}/v1/traces` (OTLP/HTTP JSON), scores to `{host}/api/scores`.
- `api_key`, `KEEL_API_KEY`, none: sent as `Authorization: Bearer <key>`.
- `sample_rate`, `KEEL_SAMPLE_RATE`, `1.0`: fraction of traces recorded (0 to 1),
  decided once per trace at its root span; children follow the root; the sampled
  flag of an incoming `traceparent` (`keel.span(..., traceparent=...)`) wins.
- `enabled`, `KEEL_ENABLED`, `true`: `false` turns every `@keel.observe` and
  `keel.span` into a plain call; nothing is recorded or sent.
- `capture`, `KEEL_CAPTURE`, `true`: record the arguments and return values of
  `@keel.observe` functions as input and output (per function:
  `observe(capture_input=..., capture_output=...)`). Values passed explicitly to
  `update_current_span`/`update_current_trace` are recorded either way.
- `release`, `KEEL_RELEASE`, none: your application's version; resource attribute
  `service.version` and span attribute `keel.release`.
- `environment`, `KEEL_ENVIRONMENT`, none: e.g. `production`; resource attribute
  `deployment.environment.name` and span attribute `keel.environment`.
- `service_name`, `KEEL_SERVICE_NAME`, `keel-app`: resource attribute `service.name`.
- `flush_interval_s`, `KEEL_FLUSH_INTERVAL_S`, `1.0`: the background exporter
  sends what is queued at least this often.
- `max_batch`, `KEEL_MAX_BATCH`, `512`: spans per request; a full batch is sent
  at once.
- `max_batch_bytes`, `KEEL_MAX_BATCH_BYTES`, `4000000`: request body size above
  which a batch is split.
- `max_queue`, `KEEL_MAX_QUEUE`, `10000`: spans waiting to be sent; when the
  queue is full, new spans are dropped and counted (`keel.sdk.stats()`).
- `max_field_bytes`, `KEEL_MAX_FIELD_BYTES`, `65536`: size limit of each captured
  input and output (JSON text, UTF-8 bytes); a longer value is sent as a JSON
  string ending in `…[truncated N bytes]`.
- `mask`, argument only, none: `mask(data) -> data`, applied to every input and
  output before it is serialised (on the calling thread or on the exporter
  thread, so it must be thread-safe and must not mutate `data` in place); if it
  raises, the value is withheld (never sent unmasked).
- `max_retries`, argument only, `3`: retries of a request after a connection
  error, a 5xx, 408 or 429 (exponential backoff with full jitter; `Retry-After`
  honoured).
- `backoff_s`, argument only, `0.5`: the first backoff; doubles per retry, capped
  at 30 s.
- `export_timeout_s`, argument only, `10.0`: timeout of one request to the server.
- `shutdown_timeout_s`, argument only, `2.0`: how long `keel.shutdown()` and the
  interpreter's exit wait for the last spans.

Booleans accept `1/true/yes/on` and `0/false/no/off`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.sdk.logs import LimitedLog

Mask = Callable[[Any], Any]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class SdkConfig:
    """The resolved settings of one SDK client (see the module docstring for each)."""

    host: str = "http://127.0.0.1:4000"
    api_key: str | None = None
    sample_rate: float = 1.0
    enabled: bool = True
    capture: bool = True
    release: str | None = None
    environment: str | None = None
    service_name: str = "keel-app"
    mask: Mask | None = None
    flush_interval_s: float = 1.0
    max_batch: int = 512
    max_batch_bytes: int = 4_000_000
    max_queue: int = 10_000
    max_field_bytes: int = 65_536
    max_retries: int = 3
    backoff_s: float = 0.5
    export_timeout_s: float = 10.0
    shutdown_timeout_s: float = 2.0


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of 1/true/yes/on or 0/false/no/off")


def _check_host(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL, e.g. http://127.0.0.1:4000")
    return value.rstrip("/")


def _check_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ValueError("expected a string")


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected True or False")
    return value


def _check_rate(value: Any) -> float:
    rate = _check_number(value, minimum=0.0)
    if rate > 1.0:
        raise ValueError("expected a number from 0 to 1")
    return rate


def _check_number(value: Any, minimum: float = 0.0, exclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("expected a finite number")
    if value < minimum or (exclusive and value == minimum):
        raise ValueError(f"expected a number {'above' if exclusive else 'of at least'} {minimum}")
    return float(value)


def _check_positive(value: Any) -> float:
    return _check_number(value, exclusive=True)


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected a whole number of at least {minimum}")
        return value

    return check


def _check_mask(value: Any) -> Mask | None:
    if value is not None and not callable(value):
        raise ValueError("expected a function mask(data) -> data")
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class _Setting:
    name: str
    env: str | None
    parse: Callable[[str], Any]  # environment text -> value (then checked)
    check: Callable[[Any], Any]


def _int(text: str) -> int:
    return int(text.strip())


def _float(text: str) -> float:
    return float(text.strip())


def _text(text: str) -> str:
    return text.strip()


SETTINGS: tuple[_Setting, ...] = (
    _Setting("host", "KEEL_HOST", _text, _check_host),
    _Setting("api_key", "KEEL_API_KEY", _text, _check_text),
    _Setting("sample_rate", "KEEL_SAMPLE_RATE", _float, _check_rate),
    _Setting("enabled", "KEEL_ENABLED", _parse_bool, _check_bool),
    _Setting("capture", "KEEL_CAPTURE", _parse_bool, _check_bool),
    _Setting("release", "KEEL_RELEASE", _text, _check_text),
    _Setting("environment", "KEEL_ENVIRONMENT", _text, _check_text),
    _Setting("service_name", "KEEL_SERVICE_NAME", _text, _check_name),
    _Setting("mask", None, _text, _check_mask),
    _Setting("flush_interval_s", "KEEL_FLUSH_INTERVAL_S", _float, _check_positive),
    _Setting("max_batch", "KEEL_MAX_BATCH", _int, _int_at_least(1)),
    _Setting("max_batch_bytes", "KEEL_MAX_BATCH_BYTES", _int, _int_at_least(1024)),
    _Setting("max_queue", "KEEL_MAX_QUEUE", _int, _int_at_least(1)),
    _Setting("max_field_bytes", "KEEL_MAX_FIELD_BYTES", _int, _int_at_least(64)),
    _Setting("max_retries", None, _int, _int_at_least(0)),
    _Setting("backoff_s", None, _float, lambda value: _check_number(value)),
    _Setting("export_timeout_s", None, _float, _check_positive),
    _Setting("shutdown_timeout_s", None, _float, lambda value: _check_number(value)),
)


def resolve_config(
    environ: Mapping[str, str], overrides: Mapping[str, Any], log: LimitedLog
) -> SdkConfig:
    """Settings from `overrides` (None means unset), else `environ`, else the defaults.

    Raises ValueError naming the argument when an override is invalid; an invalid
    environment value is logged and replaced by its default.
    """
    unknown = set(overrides) - {setting.name for setting in SETTINGS}
    if unknown:
        raise ValueError(f"keel.configure: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        given = overrides.get(setting.name)
        if given is not None:
            try:
                values[setting.name] = setting.check(given)
            except ValueError as exc:
                raise ValueError(f"keel.configure({setting.name}={given!r}): {exc}") from None
            continue
        text = environ.get(setting.env) if setting.env else None
        if text is None or not text.strip():
            continue
        try:
            values[setting.name] = setting.check(setting.parse(text))
        except ValueError as exc:
            log.warn(
                f"env:{setting.env}",
                "keel: ignoring %s=%r (%s); using the default",
                setting.env,
                text,
                exc,
            )
    return SdkConfig(**values)
