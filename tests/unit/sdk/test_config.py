"""Settings from keel.configure() arguments and KEEL_* environment variables."""

from __future__ import annotations

import logging

import pytest

import keel
import keel.sdk
from keel.sdk import config as config_module
from keel.sdk.config import SETTINGS, SdkConfig, resolve_config
from keel.sdk.logs import LimitedLog
from tests.unit.sdk.collector import Collector

ENVIRONMENT = {
    "KEEL_HOST": "http://keel.internal:4000/",
    "KEEL_API_KEY": "sk-keel",
    "KEEL_SAMPLE_RATE": "0.25",
    "KEEL_ENABLED": "yes",
    "KEEL_CAPTURE": "off",
    "KEEL_RELEASE": "2.0.1",
    "KEEL_ENVIRONMENT": "production",
    "KEEL_SERVICE_NAME": "support-bot",
    "KEEL_FLUSH_INTERVAL_S": "0.5",
    "KEEL_MAX_BATCH": "100",
    "KEEL_MAX_BATCH_BYTES": "100000",
    "KEEL_MAX_QUEUE": "5000",
    "KEEL_MAX_FIELD_BYTES": "4096",
}


def test_every_setting_can_come_from_the_environment() -> None:
    config = resolve_config(ENVIRONMENT, {}, LimitedLog())
    assert config == SdkConfig(
        host="http://keel.internal:4000",
        api_key="sk-keel",
        sample_rate=0.25,
        enabled=True,
        capture=False,
        release="2.0.1",
        environment="production",
        service_name="support-bot",
        flush_interval_s=0.5,
        max_batch=100,
        max_batch_bytes=100_000,
        max_queue=5000,
        max_field_bytes=4096,
    )


def test_without_anything_the_defaults_apply() -> None:
    config = resolve_config({}, {}, LimitedLog())
    assert config == SdkConfig()
    assert config.host == "http://127.0.0.1:4000" and config.sample_rate == 1.0


def test_arguments_win_over_the_environment() -> None:
    config = resolve_config(ENVIRONMENT, {"sample_rate": 1.0, "capture": True}, LimitedLog())
    assert (config.sample_rate, config.capture, config.release) == (1.0, True, "2.0.1")


def test_a_bad_environment_value_is_logged_and_the_default_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="keel.sdk"):
        config = resolve_config(
            {"KEEL_SAMPLE_RATE": "lots", "KEEL_ENABLED": "maybe", "KEEL_MAX_QUEUE": "0"},
            {},
            LimitedLog(),
        )
    assert (config.sample_rate, config.enabled, config.max_queue) == (1.0, True, 10_000)
    assert "KEEL_SAMPLE_RATE='lots'" in caplog.text and "KEEL_ENABLED='maybe'" in caplog.text
    assert "KEEL_MAX_QUEUE='0'" in caplog.text


@pytest.mark.parametrize(
    ("argument", "value"),
    [("sample_rate", 1.5), ("host", "keel:4000"), ("max_batch", 0), ("enabled", "no"), ("mask", 3)],
)
def test_a_bad_argument_is_refused_by_configure(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"keel.configure\({argument}="):
        keel.configure(**{argument: value})  # type: ignore[arg-type]


def test_the_sdk_reads_the_environment_when_not_configured(
    monkeypatch: pytest.MonkeyPatch, collector: Collector
) -> None:
    monkeypatch.setenv("KEEL_HOST", collector.url)
    monkeypatch.setenv("KEEL_CAPTURE", "false")
    monkeypatch.setenv("KEEL_SERVICE_NAME", "from-env")

    @keel.observe
    def step(secret: str) -> str:
        return secret

    step("s3cret")
    assert keel.flush(5)
    (span,) = collector.spans()
    assert "keel.input" not in span.attributes and "keel.output" not in span.attributes
    resource = collector.trace_requests()[0].body["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "from-env"}} in resource


def test_keel_enabled_false_turns_the_sdk_off(
    monkeypatch: pytest.MonkeyPatch, collector: Collector
) -> None:
    monkeypatch.setenv("KEEL_HOST", collector.url)
    monkeypatch.setenv("KEEL_ENABLED", "0")

    @keel.observe
    def step() -> str:
        keel.score("x", 1, trace_id="a" * 32)
        return "ran"

    assert step() == "ran"
    assert keel.flush(5)
    assert collector.received == []


def test_the_module_docstring_documents_every_setting() -> None:
    doc = config_module.__doc__ or ""
    for setting in SETTINGS:
        assert f"`{setting.name}`" in doc
        if setting.env:
            assert f"`{setting.env}`" in doc
