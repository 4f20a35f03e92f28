"""Settings from the environment and `.env`: defaults, parsing, refusals, the bind rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Secret

from service import config
from service.config import ConfigError, Settings


def load(env_file: str | None = None, **env: str) -> Settings:
    """Settings from exactly `env` (never os.environ), with no .env unless given."""
    return config.load(env, env_file=env_file)


def write_env_file(folder: Path, text: str) -> str:
    path = folder / ".env"
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- defaults ----------------------------------------------------------------------------------

# SPEC "Configuration" table
SPEC_DEFAULTS: dict[str, Any] = {
    "database": "./data/relay.db",
    "public_url": "http://127.0.0.1:8000",
    "secret": None,
    "api_tokens": (),
    "pixazo_api_key": None,
    "pixazo_base_url": "https://gateway.pixazo.ai",
    "scenario_api_key": None,
    "scenario_api_secret": None,
    "scenario_base_url": "https://api.cloud.scenario.com",
    "scenario_project_id": None,
    "callback_grace": 120,
    "callback_max_age": 604800,
    "poll_min": 2,
    "poll_max": 30,
    "job_timeout": 86400,
    "retry_schedule": (0, 5, 300, 1800, 7200, 18000, 36000, 36000),
    "delivery_timeout": 10,
    "allow_private_targets": False,
}


@pytest.mark.parametrize(("name", "expected"), list(SPEC_DEFAULTS.items()))
def test_defaults_match_spec(name: str, expected: Any) -> None:
    assert getattr(load(), name) == expected
    assert getattr(Settings(), name) == expected


def test_default_schedule_makes_eight_attempts() -> None:
    assert len(load().retry_schedule) == 8


def test_empty_values_mean_default() -> None:
    settings = load(RELAY_DATABASE="", RELAY_POLL_MIN="  ", PIXAZO_API_KEY="")
    assert settings.database == SPEC_DEFAULTS["database"]
    assert settings.poll_min == 2
    assert settings.pixazo_api_key is None


# -- values ------------------------------------------------------------------------------------


def test_environment_values_are_parsed() -> None:
    settings = load(
        RELAY_DATABASE="/var/lib/relay/r.db",
        RELAY_PUBLIC_URL="https://relay.example.com/",
        RELAY_SECRET="s3cret",
        PIXAZO_API_KEY="pk",
        PIXAZO_BASE_URL="http://127.0.0.1:9000/",
        SCENARIO_API_KEY="sk",
        SCENARIO_API_SECRET="ss",
        SCENARIO_BASE_URL="http://127.0.0.1:9001",
        SCENARIO_PROJECT_ID="proj_1",
        RELAY_CALLBACK_GRACE="60",
        RELAY_CALLBACK_MAX_AGE="3600",
        RELAY_POLL_MIN="0.5",
        RELAY_POLL_MAX="5",
        RELAY_JOB_TIMEOUT="600",
        RELAY_RETRY_SCHEDULE="0, 1,2.5",
        RELAY_DELIVERY_TIMEOUT="3",
        RELAY_ALLOW_PRIVATE_TARGETS="1",
        RELAY_POLL_CONCURRENCY="4",
        RELAY_MAX_IN_FLIGHT="50",
    )
    assert settings.database == "/var/lib/relay/r.db"
    assert settings.public_url == "https://relay.example.com"  # no trailing slash
    assert settings.secret is not None and str(settings.secret) == "s3cret"
    assert settings.pixazo_api_key is not None and str(settings.pixazo_api_key) == "pk"
    assert settings.pixazo_base_url == "http://127.0.0.1:9000"
    assert str(settings.scenario_api_key) == "sk"
    assert str(settings.scenario_api_secret) == "ss"
    assert settings.scenario_base_url == "http://127.0.0.1:9001"
    assert settings.scenario_project_id == "proj_1"
    assert settings.callback_grace == 60
    assert settings.callback_max_age == 3600
    assert isinstance(settings.callback_max_age, int)
    assert (settings.poll_min, settings.poll_max) == (0.5, 5)
    assert settings.job_timeout == 600
    assert settings.retry_schedule == (0, 1, 2.5)
    assert settings.delivery_timeout == 3
    assert settings.allow_private_targets is True
    assert settings.poll_concurrency == 4
    assert settings.max_in_flight == 50


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("1", True), ("true", True), ("YES", True), ("on", True)],
        *[("0", False), ("false", False), ("no", False), ("Off", False), ("", False)],
    ],
)
def test_flag_values(raw: str, expected: bool) -> None:
    assert load(RELAY_ALLOW_PRIVATE_TARGETS=raw).allow_private_targets is expected


def test_api_tokens_comma_list() -> None:
    settings = load(RELAY_API_TOKENS=" tok-a, tok-b,,tok-c ,")
    assert [str(t) for t in settings.api_tokens] == ["tok-a", "tok-b", "tok-c"]
    assert load(RELAY_API_TOKENS=" , ").api_tokens == ()


def test_secrets_are_not_shown_by_repr() -> None:
    settings = load(
        RELAY_SECRET="relay-secret-value",
        RELAY_API_TOKENS="token-one,token-two",
        PIXAZO_API_KEY="pixazo-key-value",
        SCENARIO_API_KEY="scenario-key-value",
        SCENARIO_API_SECRET="scenario-secret-value",
        RELAY_METRICS_TOKEN="metrics-token-value",
    )
    shown = repr(settings) + str(settings)
    for value in (
        "metrics-token-value",
        "relay-secret-value",
        "token-one",
        "token-two",
        "pixazo-key-value",
        "scenario-key-value",
        "scenario-secret-value",
    ):
        assert value not in shown


def test_metrics_token_is_a_secret_and_off_by_default() -> None:
    assert load().metrics_token is None
    assert load(RELAY_METRICS_TOKEN="  ").metrics_token is None
    token = load(RELAY_METRICS_TOKEN=" m3trics ").metrics_token
    assert isinstance(token, Secret) and str(token) == "m3trics"


def test_http_header_limits() -> None:
    assert (load().header_timeout, load().max_header_bytes) == (10.0, 32 * 1024)
    settings = load(RELAY_HEADER_TIMEOUT="2.5", RELAY_MAX_HEADER_BYTES="65536")
    assert (settings.header_timeout, settings.max_header_bytes) == (2.5, 65536)


# -- .env --------------------------------------------------------------------------------------


def test_env_file_is_read(tmp_path: Path) -> None:
    path = write_env_file(
        tmp_path,
        "# a comment\n"
        "\n"
        "RELAY_DATABASE=/srv/relay/from-file.db\n"
        "export PIXAZO_API_KEY='quoted key'\n"
        'RELAY_PUBLIC_URL="https://file.example.com"\n'
        "  RELAY_POLL_MIN = 1.5  \n"
        "not a pair\n",
    )
    settings = load(env_file=path)
    assert settings.database == "/srv/relay/from-file.db"
    assert str(settings.pixazo_api_key) == "quoted key"
    assert settings.public_url == "https://file.example.com"
    assert settings.poll_min == 1.5


def test_environment_overrides_env_file(tmp_path: Path) -> None:
    path = write_env_file(tmp_path, "RELAY_POLL_MIN=3\nRELAY_DATABASE=/from/file.db\n")
    settings = load(env_file=path, RELAY_POLL_MIN="4")
    assert settings.poll_min == 4
    assert settings.database == "/from/file.db"


def test_default_env_file_is_dot_env_in_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env_file(tmp_path, "RELAY_JOB_TIMEOUT=77\n")
    monkeypatch.chdir(tmp_path)
    assert config.load({}).job_timeout == 77


def test_missing_env_file_is_fine(tmp_path: Path) -> None:
    assert load(env_file=str(tmp_path / "absent.env")).poll_min == 2


def test_bad_value_in_env_file_is_refused(tmp_path: Path) -> None:
    path = write_env_file(tmp_path, "RELAY_POLL_MAX=soon\n")
    with pytest.raises(ConfigError, match="RELAY_POLL_MAX"):
        load(env_file=path)


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("RELAY_CALLBACK_GRACE", "two minutes"),
        ("RELAY_CALLBACK_GRACE", "-1"),
        ("RELAY_CALLBACK_MAX_AGE", "week"),
        ("RELAY_CALLBACK_MAX_AGE", "0"),
        ("RELAY_POLL_MIN", "fast"),
        ("RELAY_POLL_MIN", "0"),
        ("RELAY_POLL_MIN", "-2"),
        ("RELAY_POLL_MAX", "-30"),
        ("RELAY_JOB_TIMEOUT", "1d"),
        ("RELAY_JOB_TIMEOUT", "-5"),
        ("RELAY_DELIVERY_TIMEOUT", "0"),
        ("RELAY_DELIVERY_TIMEOUT", "ten"),
        ("RELAY_POLL_CONCURRENCY", "0"),
        ("RELAY_MAX_IN_FLIGHT", "many"),
        ("RELAY_ALLOW_PRIVATE_TARGETS", "2"),
        ("RELAY_ALLOW_PRIVATE_TARGETS", "maybe"),
        ("RELAY_RETRY_SCHEDULE", "0,-5"),
        ("RELAY_RETRY_SCHEDULE", "0,,5"),
        ("RELAY_RETRY_SCHEDULE", "soon"),
        ("RELAY_RETRY_SCHEDULE", "0,inf"),
        ("RELAY_PUBLIC_URL", "relay.example.com"),
        ("RELAY_PUBLIC_URL", "ftp://relay.example.com"),
        ("RELAY_HEADER_TIMEOUT", "0"),
        ("RELAY_HEADER_TIMEOUT", "soon"),
        ("RELAY_MAX_HEADER_BYTES", "100"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(**{name: raw})


def test_poll_max_below_poll_min_is_refused() -> None:
    with pytest.raises(ConfigError, match="RELAY_POLL_MAX must be >= RELAY_POLL_MIN"):
        load(RELAY_POLL_MIN="10", RELAY_POLL_MAX="5")
    assert load(RELAY_POLL_MIN="5", RELAY_POLL_MAX="5").poll_max == 5


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load(RELAY_POLL_MIN="x", RELAY_JOB_TIMEOUT="-1", RELAY_ALLOW_PRIVATE_TARGETS="2")
    message = str(caught.value)
    for name in ("RELAY_POLL_MIN", "RELAY_JOB_TIMEOUT", "RELAY_ALLOW_PRIVATE_TARGETS"):
        assert name in message


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("RELAY_POLL_MIN", "nan"),
        ("RELAY_CALLBACK_GRACE", "nan"),
        ("RELAY_JOB_TIMEOUT", "nan"),
        ("RELAY_CALLBACK_MAX_AGE", "inf"),
        ("RELAY_CALLBACK_MAX_AGE", "1e400"),
        ("RELAY_POLL_CONCURRENCY", "nan"),
    ],
)
def test_non_finite_number_raises_config_error(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(**{name: raw})


# -- binding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104
        ("::", False),
        ("10.0.0.1", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert config.is_loopback_host(host) is expected


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_check_bind_loopback_without_tokens_warns(host: str) -> None:
    warning = config.check_bind(load(), host)
    assert warning is not None
    assert "RELAY_API_TOKENS" in warning
    assert host in warning


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "relay.example.com"])  # noqa: S104
def test_check_bind_elsewhere_without_tokens_refuses(host: str) -> None:
    with pytest.raises(ConfigError, match="RELAY_API_TOKENS"):
        config.check_bind(load(), host)


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])  # noqa: S104
def test_check_bind_with_tokens_is_silent(host: str) -> None:
    assert config.check_bind(load(RELAY_API_TOKENS="t1"), host) is None
