"""keel.yaml + KEEL_* into Settings: the README example loads; each mistake names key, line, fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keel.core.deployments import RetryPolicy
from keel.core.errors import ConfigError
from keel.settings import DEFAULT_DATABASE_URL, load_settings, settings_from_text

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "keel.yaml"
KEYS = {"OPENAI_API_KEY": "sk-openai", "VLLM_KEY": "sk-vllm", "ANTHROPIC_API_KEY": "sk-ant"}

# Line numbers below are 1-based lines of this text.
BASE = """\
models:
  fast:
    deployments:
      - provider: openai
        model: gpt-4o-mini
        api_key: env:FAKE_KEY
"""


def config_error(text: str, env: dict[str, str] | None = None) -> str:
    """The message of the ConfigError that loading `text` raises."""
    with pytest.raises(ConfigError) as caught:
        settings_from_text(text, env or {}, source="keel.yaml")
    return str(caught.value)


def test_readme_example_loads_with_everything_it_shows() -> None:
    settings = settings_from_text(EXAMPLE.read_text(), KEYS, source=str(EXAMPLE))
    assert sorted(settings.aliases) == ["fast", "smart"]
    fast, smart = settings.aliases["fast"], settings.aliases["smart"]
    assert [d.weight for d in fast.deployments] == [3, 1]
    assert [d.timeout_s for d in fast.deployments] == [30, 60]
    assert [d.api_base for d in fast.deployments] == [
        "https://api.openai.com/v1",
        "http://vllm.internal:8000/v1",
    ]
    assert [d.api_key for d in fast.deployments] == ["sk-openai", "sk-vllm"]
    assert [d.key_ref for d in fast.deployments] == ["env:OPENAI_API_KEY", "env:VLLM_KEY"]
    assert [d.name for d in fast.deployments] == ["fast[0]", "fast[1]"]
    assert fast.fallbacks == ("smart",) and smart.fallbacks == ()
    [claude] = smart.deployments
    assert (claude.provider, claude.model, claude.api_key) == (
        "anthropic",
        "claude-sonnet-4-5",
        "sk-ant",
    )
    assert settings.retry == RetryPolicy(max_attempts=3, backoff_s=0.2, max_backoff_s=8)
    assert settings.capture_messages is True
    override = settings.prices.lookup("my-finetune")
    assert override is not None and (override.input, override.output) == (0.3, 1.2)
    # The packaged list is still there beneath the override.
    packaged = settings.prices.lookup("gpt-4o-mini")
    assert packaged is not None and packaged.input == 0.15
    assert settings.master_key is None and settings.database_url == DEFAULT_DATABASE_URL
    assert settings.warnings == ()


def test_unset_api_key_variables_are_warnings_naming_the_variable() -> None:
    settings = settings_from_text(
        EXAMPLE.read_text(), {"OPENAI_API_KEY": "sk-openai"}, source="keel.yaml"
    )
    assert len(settings.warnings) == 2
    vllm, anthropic = settings.warnings
    assert "models.fast.deployments[1]" in vllm and "VLLM_KEY is not set" in vllm
    assert "models.smart.deployments[0]" in anthropic and "ANTHROPIC_API_KEY" in anthropic
    # The deployment stays, keyless, so the router can say it was skipped.
    assert settings.aliases["fast"].deployments[1].api_key is None
    assert settings.aliases["fast"].deployments[0].api_key == "sk-openai"


def test_an_empty_variable_counts_as_unset() -> None:
    settings = settings_from_text(BASE, {"FAKE_KEY": ""}, source="keel.yaml")
    assert settings.aliases["fast"].deployments[0].api_key is None
    assert any("FAKE_KEY" in w for w in settings.warnings)


def test_defaults_without_a_file() -> None:
    settings = settings_from_text("", {}, source="<defaults>")
    assert settings.aliases == {} and settings.config_path is None
    assert settings.max_body_bytes == 32 * 1024 * 1024 and settings.log_level == "info"
    assert (settings.queue_size, settings.batch_size, settings.flush_interval_s) == (
        10_000,
        256,
        0.2,
    )


def test_server_recording_and_database_sections() -> None:
    text = BASE + (
        "server: {max_body_mb: 0.5, access_log: true}\n"
        "recording: {queue_size: 50, batch_size: 7, flush_interval_s: 3}\n"
        "database: {url: 'sqlite:///from-file.db'}\n"
    )
    settings = settings_from_text(text, {}, source="keel.yaml")
    assert settings.max_body_bytes == 512 * 1024 and settings.access_log is True
    assert (settings.queue_size, settings.batch_size, settings.flush_interval_s) == (50, 7, 3)
    assert settings.database_url == "sqlite:///from-file.db"


def test_keel_database_url_overrides_the_file() -> None:
    text = BASE + "database: {url: 'sqlite:///from-file.db'}\n"
    env = {"KEEL_DATABASE_URL": "postgresql://postgres@db:5432/keel"}
    settings = settings_from_text(text, env, source="keel.yaml")
    assert settings.database_url == "postgresql://postgres@db:5432/keel"


def test_log_level_from_environment_any_case() -> None:
    settings = settings_from_text(BASE, {"KEEL_LOG_LEVEL": "WARNING"}, source="keel.yaml")
    assert settings.log_level == "warning"


def test_bad_log_level_names_the_variable_and_the_choices() -> None:
    message = config_error(BASE, {"KEEL_LOG_LEVEL": "loud"})
    assert "KEEL_LOG_LEVEL" in message and "'loud'" in message
    assert "debug, info, warning or error" in message


def test_master_key_is_resolved_from_its_variable() -> None:
    text = BASE + "auth: {master_key: env:KEEL_MASTER_KEY}\n"
    settings = settings_from_text(text, {"KEEL_MASTER_KEY": "sk-master"}, source="keel.yaml")
    assert settings.master_key == "sk-master"


def test_master_key_variable_not_set_fails_naming_it() -> None:
    message = config_error(BASE + "auth: {master_key: env:KEEL_MASTER_KEY}\n")
    assert "auth.master_key" in message and "(line 7)" in message
    assert "KEEL_MASTER_KEY" in message and "export KEEL_MASTER_KEY" in message


# (text, dotted key, line, words of the fix)
ERRORS = [
    pytest.param(
        BASE + "        weigth: 2\n",
        "models.fast.deployments[0].weigth",
        7,
        ["unknown key 'weigth'", "did you mean 'weight'?", "allowed here: provider, model"],
        id="unknown-key",
    ),
    pytest.param(
        "modles: {}\n",
        "modles",
        1,
        ["unknown key 'modles'", "did you mean 'models'?"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        BASE + "    fallback: [fast]\n",
        "models.fast.fallback",
        7,
        ["did you mean 'fallbacks'?"],
        id="unknown-alias-key",
    ),
    pytest.param(
        BASE.replace("provider: openai", "provider: opneai"),
        "models.fast.deployments[0].provider",
        4,
        ["unknown provider 'opneai'", "anthropic, openai"],
        id="unknown-provider",
    ),
    pytest.param(
        BASE + "    fallbacks: [smrt]\n  smart:\n    deployments: [{provider: openai, model: m}]\n",
        "models.fast.fallbacks",
        7,
        ["'smrt'", "not a model alias", "did you mean 'smart'?"],
        id="unknown-fallback",
    ),
    pytest.param(
        BASE + "        weight: 0\n",
        "models.fast.deployments[0].weight",
        7,
        ["greater than 0"],
        id="zero-weight",
    ),
    pytest.param(
        BASE + "        weight: -2\n",
        "models.fast.deployments[0].weight",
        7,
        ["greater than 0", "-2"],
        id="negative-weight",
    ),
    pytest.param(
        "models:\n  fast:\n    deployments: []\n",
        "models.fast.deployments",
        3,
        ["at least 1"],
        id="empty-deployments",
    ),
    pytest.param(
        "models:\n  fast:\n    deployments:\n      - provider: openai\n",
        "models.fast.deployments[0].model",
        4,
        ["missing required key 'model'"],
        id="missing-model",
    ),
    pytest.param(
        BASE + "        api_base: localhost:8000\n",
        "models.fast.deployments[0].api_base",
        7,
        ["http:// or https://"],
        id="api-base-without-scheme",
    ),
    pytest.param(
        "retries: {max_attempts: 0}\n",
        "retries.max_attempts",
        1,
        ["greater than or equal to 1"],
        id="zero-attempts",
    ),
    pytest.param(
        "prices:\n  my-model: {input: 1, ouput: 2}\n",
        "prices.my-model.ouput",
        2,
        ["did you mean 'output'?"],
        id="price-typo",
    ),
    pytest.param(
        "server:\n  max_body_mb: 0\n",
        "server.max_body_mb",
        2,
        ["greater than 0"],
        id="zero-body-limit",
    ),
]


@pytest.mark.parametrize(("text", "key", "line", "fix"), ERRORS)
def test_invalid_config_names_key_line_and_fix(
    text: str, key: str, line: int, fix: list[str]
) -> None:
    message = config_error(text)
    assert message.startswith("keel.yaml")
    assert f"{key} (line {line})" in message or f"(line {line}): {key}" in message, message
    for words in fix:
        assert words in message, message


def test_every_problem_is_listed_not_only_the_first() -> None:
    text = BASE + "        weigth: 2\nretries: {max_attempts: 0}\n"
    message = config_error(text)
    assert "weigth (line 7)" in message and "retries.max_attempts (line 8)" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (BASE.replace("env:FAKE_KEY", "sk-live-Zq93hT5"), "api_key"),
        (BASE.replace("env:FAKE_KEY", "'env: sk-live-Zq93hT5'"), "api_key"),
        (BASE + "auth: {master_key: sk-live-Zq93hT5}\n", "master_key"),
    ],
)
def test_literal_secret_is_refused_and_never_echoed(text: str, key: str) -> None:
    message = config_error(text)
    assert "Zq93hT5" not in message
    assert key in message and "env:" in message and "(line " in message


def test_invalid_yaml_says_so_with_its_line() -> None:
    message = config_error("models:\n  fast: {deployments: [\n")
    assert "keel.yaml: not valid YAML" in message
    assert re.search(r"line \d+", message)


@pytest.mark.parametrize("text", ["- fast\n- smart\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    message = config_error(text)
    assert "keel.yaml" in message and "top level must be a mapping" in message


def test_load_settings_reads_keel_config_path(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(BASE)
    settings = load_settings(None, {"KEEL_CONFIG": str(path), "FAKE_KEY": "k"})
    assert list(settings.aliases) == ["fast"] and settings.config_path == str(path)


def test_load_settings_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"cannot read config .*nope\.yaml"):
        load_settings(missing, {})


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        (BASE + "database: {url: 'mysql://root@db/keel'}\n", {}, "database.url (line 7)"),
        (BASE, {"KEEL_DATABASE_URL": "mysql://root@db/keel"}, "KEEL_DATABASE_URL"),
    ],
    ids=["file", "environment"],
)
def test_unsupported_database_url_is_a_config_error(
    text: str, env: dict[str, str], key: str
) -> None:
    message = config_error(text, env)
    assert key in message and "sqlite:///" in message and "postgresql://" in message


ONLINE_CONFIG = """models:
  fast: {deployments: [{provider: openai, model: gpt-4o-mini, api_base: "http://x/v1"}]}
online_evals:
  - name: tone
    sample: 0.1
    judge: fast
    evaluators: [{type: refusal, negate: true}]
"""


def test_online_evals_are_read_and_checked() -> None:
    settings = settings_from_text(ONLINE_CONFIG, {}, source="keel.yaml")
    (rule,) = settings.online_evals
    assert (rule.name, rule.sample, rule.judge, rule.kind) == ("tone", 0.1, "fast", "generation")
    assert rule.evaluators[0].negate is True
    with pytest.raises(
        ConfigError, match=r"online_evals\[0\]: 'fst' is not a model alias; did you mean 'fast'"
    ):
        settings_from_text(
            ONLINE_CONFIG.replace("judge: fast", "judge: fst"), {}, source="keel.yaml"
        )
    with pytest.raises(ConfigError, match=r"online_evals\[0\]\.sample .*less than or equal to 1"):
        settings_from_text(ONLINE_CONFIG.replace("0.1", "5"), {}, source="keel.yaml")
