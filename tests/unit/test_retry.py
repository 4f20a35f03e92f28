"""Retry schedule, Retry-After and backoff arithmetic with a fixed rand(); nothing sleeps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from service import retry

NOW = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
LOW = 0.0
MID = 0.5
HIGH = 0.999999


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


# parse_schedule


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,5,300,1800", (0.0, 5.0, 300.0, 1800.0)),
        (" 0 , 5 ,300 ", (0.0, 5.0, 300.0)),
        ("2.5", (2.5,)),
        ("0", (0.0,)),
    ],
)
def test_parse_schedule(text: str, expected: tuple[float, ...]) -> None:
    assert retry.parse_schedule(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0,,5", "item 2 is empty"),
        ("0,5,", "item 3 is empty"),
        ("0,-5", r"item 2 \('-5'\) is negative"),
        ("0,five", r"item 2 \('five'\) is not a number"),
        ("0,5s", r"'5s'.*not a number"),
        ("nan", "not finite"),
        ("0,inf", "not finite"),
    ],
)
def test_parse_schedule_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retry.parse_schedule(text)


def test_default_schedule_makes_eight_attempts() -> None:
    assert retry.DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert retry.parse_schedule(retry.DEFAULT_SCHEDULE_TEXT) == retry.DEFAULT_SCHEDULE
    delays = [
        retry.next_delay(retry.DEFAULT_SCHEDULE, n, None, fixed(MID))
        for n in range(len(retry.DEFAULT_SCHEDULE) + 1)
    ]
    assert delays[:8] == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    assert delays[8] is None


# parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("  7 ", 7.0),
        ("0", 0.0),
        ("0007", 7.0),
        ("Sat, 21 Nov 2026 10:01:30 GMT", 90.0),
        ("Saturday, 21-Nov-26 10:00:30 GMT", 30.0),  # RFC 850, obsolete but allowed
        ("Sat Nov 21 10:00:05 2026", 5.0),  # asctime, obsolete but allowed
        ("Sat, 21 Nov 2026 11:01:30 +0100", 90.0),
        ("Sat, 21 Nov 2026 10:01:30 -0000", 90.0),
        ("Sat, 21 Nov 2026 09:59:00 GMT", 0.0),  # in the past: retry now, never negative
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str, expected: float) -> None:
    assert retry.parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-5",
        "1.5",
        "1e3",
        "0x10",
        "soon",
        "5 seconds",
        "9" * 400,
        "Sat, 32 Nov 2026 10:00:00 GMT",
        "Sat, 21 Nov 99999 10:00:00 GMT",
        "\u0661\u0662",
    ],
)
def test_parse_retry_after_garbage(value: str | None) -> None:
    assert retry.parse_retry_after(value, NOW) is None


def test_parse_retry_after_other_timezone_and_naive_now() -> None:
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert retry.parse_retry_after("Sat, 21 Nov 2026 10:00:10 GMT", tokyo) == 10.0
    naive = NOW.replace(tzinfo=None)
    assert retry.parse_retry_after("Sat, 21 Nov 2026 10:00:10 GMT", naive) == 10.0


# next_delay


SCHEDULE = (0.0, 5.0, 300.0, 1800.0)


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, MID, 0.0),
        (0, HIGH, 0.0),
        (1, MID, 5.0),
        (1, LOW, 4.0),
        (2, LOW, 240.0),
        (2, MID, 300.0),
        (3, MID, 1800.0),
    ],
)
def test_next_delay_follows_schedule(attempt: int, rand: float, expected: float) -> None:
    assert retry.next_delay(SCHEDULE, attempt, None, fixed(rand)) == pytest.approx(expected)


def test_next_delay_jitter_bounds() -> None:
    assert retry.next_delay(SCHEDULE, 2, None, fixed(LOW)) == pytest.approx(240.0)
    high = retry.next_delay(SCHEDULE, 2, None, fixed(HIGH))
    assert high is not None
    assert 359.99 < high < 360.0
    assert retry.next_delay(SCHEDULE, 2, None, fixed(LOW), jitter=0.0) == 300.0
    assert retry.next_delay(SCHEDULE, 2, None, fixed(HIGH), jitter=0.5) == pytest.approx(
        450.0, abs=0.01
    )


def test_next_delay_spent() -> None:
    assert retry.next_delay(SCHEDULE, 4, None, fixed(MID)) is None
    assert retry.next_delay(SCHEDULE, 40, 10.0, fixed(MID)) is None
    assert retry.next_delay((), 0, None, fixed(MID)) is None


def test_retry_after_wins_when_longer() -> None:
    assert retry.next_delay(SCHEDULE, 1, 60.0, fixed(MID)) == 60.0
    assert retry.next_delay(SCHEDULE, 0, 60.0, fixed(MID)) == 60.0


def test_retry_after_ignored_when_shorter() -> None:
    assert retry.next_delay(SCHEDULE, 2, 60.0, fixed(MID)) == 300.0
    assert retry.next_delay(SCHEDULE, 2, 0.0, fixed(MID)) == 300.0
    assert retry.next_delay(SCHEDULE, 2, -50.0, fixed(MID)) == 300.0


def test_retry_after_is_clamped() -> None:
    assert retry.next_delay(SCHEDULE, 1, 86400.0, fixed(MID)) == 3600.0
    assert retry.next_delay(SCHEDULE, 1, float("inf"), fixed(MID)) == 3600.0
    assert retry.next_delay(SCHEDULE, 1, 86400.0, fixed(MID), max_retry_after=120.0) == 120.0
    # The clamp bounds the header, not the schedule: a long scheduled delay stays long.
    assert retry.next_delay((36000.0,), 0, 86400.0, fixed(MID)) == 36000.0


def test_retry_after_compares_with_jittered_delay() -> None:
    # 300 jittered down to 240 by rand()=0: a 250 s Retry-After is longer, so it wins.
    assert retry.next_delay(SCHEDULE, 2, 250.0, fixed(LOW)) == 250.0
    assert retry.next_delay(SCHEDULE, 2, 250.0, fixed(MID)) == 300.0


def test_retry_after_from_header_end_to_end() -> None:
    seconds = retry.parse_retry_after("Sat, 21 Nov 2026 10:10:00 GMT", NOW)
    assert retry.next_delay(SCHEDULE, 1, seconds, fixed(MID)) == 600.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempt": -1}, "attempt"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_next_delay_rejects(kwargs: dict[str, float], message: str) -> None:
    args = {"attempt": 1, "jitter": 0.2} | kwargs
    with pytest.raises(ValueError, match=message):
        retry.next_delay(SCHEDULE, int(args["attempt"]), None, fixed(MID), jitter=args["jitter"])


# backoff


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 2.0), (1, 4.0), (2, 8.0), (3, 16.0), (4, 30.0), (10, 30.0), (5000, 30.0)],
)
def test_backoff_doubles_then_caps(attempt: int, expected: float) -> None:
    assert retry.backoff(attempt, 2.0, 30.0, fixed(MID)) == pytest.approx(expected)


def test_backoff_jitter_bounds() -> None:
    assert retry.backoff(0, 2.0, 30.0, fixed(LOW)) == pytest.approx(1.6)
    assert retry.backoff(0, 2.0, 30.0, fixed(HIGH)) == pytest.approx(2.4, abs=1e-4)
    assert retry.backoff(2, 2.0, 30.0, fixed(LOW)) == pytest.approx(6.4)
    # At the cap jitter only shortens: never above maximum.
    assert retry.backoff(10, 2.0, 30.0, fixed(HIGH)) == 30.0
    assert retry.backoff(10, 2.0, 30.0, fixed(LOW)) == pytest.approx(24.0)


def test_backoff_floor_and_ceiling_hold_for_every_rand() -> None:
    for attempt in range(12):
        for r in (LOW, 0.1, 0.25, MID, 0.75, HIGH):
            delay = retry.backoff(attempt, 2.0, 30.0, fixed(r))
            assert 2.0 * 0.8 <= delay <= 30.0


def test_backoff_minimum_equals_maximum() -> None:
    assert retry.backoff(3, 5.0, 5.0, fixed(HIGH)) == 5.0
    assert retry.backoff(3, 5.0, 5.0, fixed(LOW)) == pytest.approx(4.0)


def test_backoff_factor() -> None:
    assert retry.backoff(2, 1.0, 100.0, fixed(MID), factor=3.0) == pytest.approx(9.0)
    assert retry.backoff(5, 1.0, 100.0, fixed(MID), factor=1.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 2.0, 30.0), "attempt"),
        ((0, 30.0, 2.0), "minimum <= maximum"),
        ((0, -1.0, 2.0), "minimum <= maximum"),
    ],
)
def test_backoff_rejects(args: tuple[int, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retry.backoff(*args, fixed(MID))


def test_backoff_rejects_shrinking_factor_and_bad_jitter() -> None:
    with pytest.raises(ValueError, match="factor"):
        retry.backoff(1, 2.0, 30.0, fixed(MID), factor=0.5)
    with pytest.raises(ValueError, match="jitter"):
        retry.backoff(1, 2.0, 30.0, fixed(MID), jitter=2.0)
