"""RELAY_RETENTION_DAYS and the ages `upscale-relay prune --older-than` accepts."""

from __future__ import annotations

import pytest

from service import config, retention


def _load(**env: str) -> config.Settings:
    return config.load(env, env_file=None)


def test_retention_is_off_by_default_and_takes_days() -> None:
    assert _load().retention_days is None
    assert _load(RELAY_RETENTION_DAYS="").retention_days is None
    assert _load(RELAY_RETENTION_DAYS="30").retention_days == 30
    assert _load(RELAY_RETENTION_DAYS="0.5").retention_days == 0.5


@pytest.mark.parametrize("raw", ["0", "-3", "thirty", "30d", "nan", "inf"])
def test_a_bad_retention_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(config.ConfigError, match="RELAY_RETENTION_DAYS") as caught:
        _load(RELAY_RETENTION_DAYS=raw)
    assert str(caught.value).count("RELAY_RETENTION_DAYS") == 1  # one clear message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 43200),
        ("90m", 5400),
        ("3600s", 3600),
        ("2w", 1209600),
        ("1.5d", 129600),
        (" 7D ", 7 * 86400),
    ],
)
def test_ages_take_a_unit(text: str, seconds: float) -> None:
    assert retention.parse_age(text) == seconds


@pytest.mark.parametrize("text", ["30", "", "d", "30 days", "-1d", "0h", "1y", "1e3s"])
def test_an_age_without_a_known_unit_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"unit|zero"):
        retention.parse_age(text)


def test_the_service_prunes_hourly_and_sooner_for_a_short_retention() -> None:
    assert retention.interval(30 * 86400) == 3600
    assert retention.interval(2400) == 100
    assert retention.interval(1) == 1
