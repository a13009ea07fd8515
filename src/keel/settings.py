"""The one Settings object: keel.yaml plus `KEEL_*` environment variables, validated once.

Validation happens here, at the edge, with pydantic; every error names the key,
its line in the file and what to write instead. Inner layers receive plain
frozen dataclasses (`Deployment`, `ModelAlias`, `RetryPolicy`, `PriceTable`).

Environment variables (each overrides the file):

- KEEL_CONFIG: path of keel.yaml (default: ./keel.yaml when present).
- KEEL_DATABASE_URL: `sqlite:///path` or `postgresql://user@host:port/db`
  (default: sqlite:///keel.db).
- KEEL_MASTER_KEY: conventional variable for `auth.master_key: env:KEEL_MASTER_KEY`.
- KEEL_LOG_LEVEL: debug, info, warning or error (default: info).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keel.core.deployments import Deployment, ModelAlias, RetryPolicy
from keel.core.errors import ConfigError
from keel.core.pricing import ModelPrice, PriceTable
from keel.providers.registry import provider_names

DEFAULT_DATABASE_URL = "sqlite:///keel.db"
_SECRET_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")


# --- the file's schema (edge validation only) ---------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeploymentConfig(_Strict):
    provider: str = Field(description="Dialect: one of the registered providers.")
    model: str = Field(min_length=1, description="Model name upstream.")
    api_base: str | None = Field(default=None, description="Base URL, e.g. http://vllm:8000/v1")
    api_key: str | None = Field(default=None, description="Secret reference: env:NAME")
    weight: float = Field(default=1.0, gt=0, description="Share of traffic among deployments.")
    timeout_s: float = Field(default=60.0, gt=0, le=3600, description="Per-attempt timeout.")

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        known = provider_names()
        if value not in known:
            raise ValueError(f"unknown provider {value!r}; write one of: {', '.join(known)}")
        return value

    @field_validator("api_key")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_REF.match(value):
            raise ValueError(
                "api_key must be a reference, not the secret itself: write `env:NAME` "
                "and export NAME"
            )
        return value

    @field_validator("api_base")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("api_base must start with http:// or https://")
        return value


class AliasConfig(_Strict):
    deployments: list[DeploymentConfig] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)


class RetriesConfig(_Strict):
    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_s: float = Field(default=0.2, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)


class CaptureConfig(_Strict):
    messages: bool = True


class PriceConfig(_Strict):
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)


class AuthConfig(_Strict):
    master_key: str | None = None

    @field_validator("master_key")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_REF.match(value):
            raise ValueError("master_key must be a reference: write `env:KEEL_MASTER_KEY`")
        return value


class ServerConfig(_Strict):
    max_body_mb: float = Field(default=32, gt=0, le=1024)
    access_log: bool = False


class RecordingConfig(_Strict):
    writer: Literal["process", "thread"] = "process"
    queue_size: int = Field(default=10_000, ge=10)
    batch_size: int = Field(default=256, ge=1)
    flush_interval_s: float = Field(default=0.2, gt=0)


class DatabaseConfig(_Strict):
    url: str = DEFAULT_DATABASE_URL

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        return check_database_url(value)


def check_database_url(value: str) -> str:
    """The URL if Keel can store to it, else ValueError saying which forms work."""
    if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ValueError(
            "database url must be sqlite:///path/to/keel.db or postgresql://user@host:5432/dbname"
        )
    return value


class OnlineEvaluatorConfig(_Strict):
    type: str = Field(min_length=1, description="An evaluator type (`keel eval evaluators`).")
    name: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    threshold: float | None = None
    negate: bool = False


class OnlineEvalConfig(_Strict):
    """Score a sample of live calls: which ones, how many, with what."""

    name: str = Field(min_length=1, description="Names the rule in scores and stats.")
    sample: float = Field(ge=0, le=1, description="Fraction of matching traces to score.")
    kind: str = "generation"
    prompt: str | None = Field(default=None, description="Only calls that named this prompt.")
    model: str | None = Field(default=None, description="Only calls to this alias.")
    tags: list[str] = Field(default_factory=list, description="Only calls with all these tags.")
    judge: str | None = Field(default=None, description="The alias LLM judges call.")
    evaluators: list[OnlineEvaluatorConfig] = Field(min_length=1)


class FileConfig(_Strict):
    """The whole of keel.yaml."""

    models: dict[str, AliasConfig] = Field(default_factory=dict)
    retries: RetriesConfig = RetriesConfig()
    capture: CaptureConfig = CaptureConfig()
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    auth: AuthConfig = AuthConfig()
    server: ServerConfig = ServerConfig()
    recording: RecordingConfig = RecordingConfig()
    database: DatabaseConfig = DatabaseConfig()
    online_evals: list[OnlineEvalConfig] = Field(default_factory=list)


# --- what the rest of Keel receives --------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything Keel needs to start, validated; secrets already resolved."""

    aliases: Mapping[str, ModelAlias]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    capture_messages: bool = True
    prices: PriceTable = field(default_factory=lambda: PriceTable({}))
    master_key: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    max_body_bytes: int = 32 * 1024 * 1024
    access_log: bool = False
    span_writer: Literal["process", "thread"] = "process"
    queue_size: int = 10_000
    batch_size: int = 256
    flush_interval_s: float = 0.2
    log_level: str = "info"
    config_path: str | None = None
    warnings: tuple[str, ...] = ()
    online_evals: tuple[OnlineEvalConfig, ...] = ()


def packaged_prices() -> PriceTable:
    """The list prices shipped with Keel (USD per 1M tokens)."""
    text = resources.files("keel.data").joinpath("prices.json").read_text(encoding="utf-8")
    return PriceTable.from_mapping(json.loads(text)["models"])


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read keel.yaml (if any) and the environment into Settings, or raise ConfigError."""
    env = {} if env is None else env
    path = path or env.get("KEEL_CONFIG")
    if path is None and Path("keel.yaml").exists():
        path = "keel.yaml"
    text = ""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    return settings_from_text(text, env, source=str(path) if path else "<defaults>")


def settings_from_text(text: str, env: Mapping[str, str], *, source: str) -> Settings:
    """Validate the YAML text of a keel.yaml and resolve it against `env`."""
    try:
        root = yaml.compose(text) if text.strip() else None
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys (models:, ...)")
    try:
        config = FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, root, source)) from None
    return _resolve(config, root, env, source)


def _resolve(
    config: FileConfig, root: yaml.Node | None, env: Mapping[str, str], source: str
) -> Settings:
    warnings: list[str] = []
    aliases: dict[str, ModelAlias] = {}
    for alias_name, alias in config.models.items():
        for fallback in alias.fallbacks:
            if fallback not in config.models:
                line = _line_of(root, ("models", alias_name, "fallbacks"))
                hint = _did_you_mean(fallback, config.models)
                raise ConfigError(
                    f"{source}{line}: models.{alias_name}.fallbacks names {fallback!r}, "
                    f"which is not a model alias{hint}"
                )
        deployments = []
        for index, dep in enumerate(alias.deployments):
            key = None
            if dep.api_key is not None:
                var = dep.api_key[4:]
                key = env.get(var) or None
                if key is None:
                    warnings.append(
                        f"models.{alias_name}.deployments[{index}]: {var} is not set; "
                        "calls to this deployment will fail over to the next one"
                    )
            deployments.append(
                Deployment(
                    name=f"{alias_name}[{index}]",
                    provider=dep.provider,
                    model=dep.model,
                    api_base=dep.api_base,
                    api_key=key,
                    key_ref=dep.api_key,
                    weight=dep.weight,
                    timeout_s=dep.timeout_s,
                )
            )
        aliases[alias_name] = ModelAlias(alias_name, tuple(deployments), tuple(alias.fallbacks))

    names: set[str] = set()
    for index, rule in enumerate(config.online_evals):
        where = f"{source}{_line_of(root, ('online_evals', index))}: online_evals[{index}]"
        if rule.name in names:
            raise ConfigError(f"{where}: two online_evals rules are named {rule.name!r}")
        names.add(rule.name)
        for wanted in (rule.judge, rule.model):
            if wanted is not None and wanted not in config.models:
                hint = _did_you_mean(wanted, config.models)
                raise ConfigError(f"{where}: {wanted!r} is not a model alias{hint}")

    master_key = None
    if config.auth.master_key is not None:
        var = config.auth.master_key[4:]
        master_key = env.get(var) or None
        if master_key is None:
            raise ConfigError(
                f"{source}{_line_of(root, ('auth', 'master_key'))}: auth.master_key refers to "
                f"{var}, which is not set; export {var} or remove auth.master_key"
            )
    overrides = {
        name: ModelPrice(p.input, p.output, p.cache_read, p.cache_write)
        for name, p in config.prices.items()
    }
    database_url = env.get("KEEL_DATABASE_URL") or config.database.url
    try:
        check_database_url(database_url)
    except ValueError as exc:
        raise ConfigError(f"KEEL_DATABASE_URL: {exc}") from None
    log_level = env.get("KEEL_LOG_LEVEL", "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"KEEL_LOG_LEVEL={log_level!r}: write debug, info, warning or error")
    return Settings(
        aliases=aliases,
        retry=RetryPolicy(
            config.retries.max_attempts, config.retries.backoff_s, config.retries.max_backoff_s
        ),
        capture_messages=config.capture.messages,
        prices=packaged_prices().with_overrides(overrides),
        master_key=master_key,
        database_url=database_url,
        max_body_bytes=int(config.server.max_body_mb * 1024 * 1024),
        access_log=config.server.access_log,
        span_writer=config.recording.writer,
        queue_size=config.recording.queue_size,
        batch_size=config.recording.batch_size,
        flush_interval_s=config.recording.flush_interval_s,
        log_level=log_level,
        config_path=None if source == "<defaults>" else source,
        warnings=tuple(warnings),
        online_evals=tuple(config.online_evals),
    )


# --- error messages that name the line and the fix -----------------------------------------


def _explain(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for error in exc.errors():
        loc = tuple(error["loc"])
        dotted = _dotted(loc)
        line = _line_of(root, loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            hint = _did_you_mean(str(loc[-1]), parent.model_fields) if parent else ""
            allowed = ", ".join(parent.model_fields) if parent else ""
            message = f"unknown key {str(loc[-1])!r}{hint}" + (
                f" (allowed here: {allowed})" if allowed else ""
            )
        elif kind == "missing":
            message = f"missing required key {str(loc[-1])!r}"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            secret = str(loc[-1]) in ("api_key", "master_key", "url")
            if "input" in error and not secret and not isinstance(error["input"], dict | list):
                message += f" (got {error['input']!r})"
        lines.append(f"  {dotted}{line}: {message}")
    return "\n".join(lines)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `loc` (for listing allowed keys)."""
    model: Any = FileConfig
    path = list(loc)
    while path:
        step = path.pop(0)
        if isinstance(model, type) and issubclass(model, BaseModel):
            info = model.model_fields.get(str(step))
            if info is None:
                return None
            model = info.annotation
            # dict[str, X] and list[X]: the next step is a key or an index
            args: tuple[Any, ...] = getattr(model, "__args__", ())
            origin = getattr(model, "__origin__", None)
            if origin in (dict, list) and path:
                path.pop(0)
                model = args[-1]
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for step in loc:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "(top level)"


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    """` (line N)` for the deepest node of `loc` found in the YAML tree, or ``."""
    node = root
    found = None
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if key.value == str(step):
                    found, nxt = key, value
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            node = node.value[step] if step < len(node.value) else None
            found = node or found
        else:
            break
        if node is None:
            break
    return f" (line {found.start_mark.line + 1})" if found is not None else ""


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
