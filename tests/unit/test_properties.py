"""Properties (hypothesis): validation, strict JSON, monotonic job states, the retry schedule."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from service import catalog, jobs, retry
from service.errors import ApiError
from service.http import deps, subscriptions
from service.providers import pixazo
from service.providers.scenario import adapter as scenario

# Derandomized: the suite sees the same examples on every run, so CI never flakes on a new one.
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def job_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Bodies near the valid ones: a real model, its parameter names, any values."""
    model = draw(st.sampled_from(sorted(catalog.MODELS)))
    names = [*(p.name for p in catalog.MODELS[model].params), "colour", "sync_mode"]
    media = st.sampled_from(["https://x.example/a.png", "asset_abc", "ftp://x", "", "x" * 2049])
    inputs = draw(st.dictionaries(st.sampled_from(names), media | json_values, max_size=6))
    body: dict[str, Any] = {"model": model, "input": inputs}
    extras = {
        "metadata": json_values,
        "webhook": st.none() | media,
        "webhook_events_filter": st.lists(json_values | st.sampled_from(["*", "output"])),
    }
    for key, strategy in extras.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


def _alternative(model_id: str) -> dict[str, Any]:
    return next(
        alt
        for alt in catalog.request_schema()["oneOf"]
        if alt["properties"]["model"]["const"] == model_id
    )


@FAST
@given(json_values | job_bodies())
def test_job_validation_never_raises_and_a_clean_body_meets_the_schema(body: Any) -> None:
    model, problems = catalog.validate_job_request(body)
    assert all(isinstance(p, catalog.Problem) for p in problems)
    if not problems:
        assert model is not None
        assert catalog.conforms(body, _alternative(model.id))  # the document is not stricter
        sent = catalog.normalize(model, body["input"])
        json.dumps(sent, allow_nan=False)


@FAST
@given(json_values)
def test_metadata_validation_never_raises(value: Any) -> None:
    problems = catalog.validate_metadata(value)
    assert all(isinstance(p, catalog.Problem) for p in problems)


@st.composite
def subscription_bodies(draw: st.DrawFn) -> dict[str, Any]:
    names = [*sorted(subscriptions.FIELDS), "colour"]
    good = st.sampled_from(
        ["https://h.example/x", "job.*", ["job.failed"], "slack", None, True, 3, {"models": []}]
    )
    return draw(st.dictionaries(st.sampled_from(names), good | json_values, max_size=5))


@FAST
@given(json_values | subscription_bodies(), st.booleans())
@example({"kind": "slack"}, False)  # a PATCH naming its kind: refused, as its schema says
def test_subscription_validation_never_raises(body: Any, creating: bool) -> None:
    fields, problems = asyncio.run(
        subscriptions.check_fields(body, creating=creating, kind="slack", allow_private=True)
    )
    if not problems:
        assert catalog.conforms(body, subscriptions.body_schema(creating=creating))
        assert set(fields) <= set(subscriptions.FIELDS)


# -- strict JSON ----------------------------------------------------------------------------


@FAST
@given(json_values)
def test_strict_json_round_trips_every_finite_value(value: Any) -> None:
    raw = json.dumps(value, allow_nan=False).encode()
    assert deps.parse_json(raw) == value


@FAST
@given(st.integers(min_value=1, max_value=200), st.sampled_from(["[]", "{}", '{"a":}']))
def test_nesting_is_refused_exactly_above_the_limit(depth: int, kind: str) -> None:
    opening, closing = ("[", "]") if kind == "[]" else ('{"a":', "}")
    inner = "1" if kind != "[]" else ""
    raw = (opening * depth + inner + closing * depth).encode()
    if depth <= deps.MAX_DEPTH:
        deps.parse_json(raw)
    else:
        with pytest.raises(ApiError) as caught:
            deps.parse_json(raw)
        assert caught.value.details == {"reason": "too_deep"}


@FAST
@given(st.text(max_size=12))
def test_lone_surrogates_are_refused_wherever_they_are(text: str) -> None:
    raw = json.dumps({text: [text]}).encode()  # ensure_ascii: surrogates become \\u escapes
    lone = any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)
    if lone:
        with pytest.raises(ApiError):
            deps.parse_json(raw)
    else:
        assert deps.parse_json(raw) == {text: [text]}


@FAST
@given(st.binary(max_size=64))
def test_any_bytes_are_json_or_a_400(raw: bytes) -> None:
    try:
        value = deps.parse_json(raw)
    except ApiError as exc:
        assert exc.status == 400
    else:
        json.dumps(value, allow_nan=False).encode("utf-8")  # storable and echoable as is


# -- job states ----------------------------------------------------------------------------


@FAST
@given(st.sampled_from(list(jobs.Status)), st.lists(st.sampled_from(list(jobs.Status))))
def test_job_states_never_move_back(start: jobs.Status, reports: list[jobs.Status]) -> None:
    status = start
    for report in reports:
        before = status
        if jobs.advance(status, report):
            status = report
        assert status.rank >= before.rank
        if before.terminal:
            assert status == before


@FAST
@given(st.one_of(st.text(max_size=16), json_values))
def test_provider_status_words_map_without_raising(raw: Any) -> None:
    for mapped in (pixazo.map_status(raw), scenario.map_status(raw)):
        assert mapped is None or isinstance(mapped, jobs.Status)
    progress = jobs.clamp_progress(raw)
    assert progress is None or 0.0 <= progress <= 1.0


# -- retry schedule ------------------------------------------------------------------------

delays = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@FAST
@given(
    st.lists(delays, min_size=1, max_size=10),
    st.integers(min_value=0, max_value=12),
    st.none() | st.floats(min_value=-10, max_value=1e9, allow_nan=False),
    st.floats(min_value=0, max_value=1),
    st.floats(min_value=0, max_value=1),
)
def test_retry_delays_follow_the_schedule(
    schedule: list[float], attempt: int, retry_after: float | None, jitter: float, rand: float
) -> None:
    delay = retry.next_delay(schedule, attempt, retry_after, lambda: rand, jitter, 3600.0)
    if attempt >= len(schedule):
        assert delay is None
        return
    assert delay is not None and delay >= 0
    base = schedule[attempt]
    low, high = base * (1 - jitter), base * (1 + jitter)
    if retry_after is not None and retry_after > 0:
        clamped = min(retry_after, 3600.0)
        assert delay >= clamped - 1e-9  # Retry-After may lengthen the wait
        assert delay <= max(high, clamped) + 1e-9  # but never past its clamp
    else:
        assert low - 1e-9 <= delay <= high + 1e-9


@FAST
@given(st.text(max_size=40))
def test_retry_after_parses_or_is_none(text: str) -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    seconds = retry.parse_retry_after(text, now)
    assert seconds is None or (seconds >= 0 and math.isfinite(seconds))


@FAST
@given(
    st.integers(min_value=0, max_value=5000),
    st.floats(min_value=0, max_value=100),
    st.floats(min_value=0, max_value=1000),
    st.floats(min_value=0, max_value=1),
)
def test_backoff_stays_between_its_bounds(
    attempt: int, minimum: float, span: float, rand: float
) -> None:
    maximum = minimum + span
    delay = retry.backoff(attempt, minimum, maximum, lambda: rand)
    assert minimum * 0.8 - 1e-9 <= delay <= maximum + 1e-9


@FAST
@given(st.text(max_size=30))
def test_schedule_text_parses_to_non_negative_delays_or_says_why(text: str) -> None:
    try:
        parsed = retry.parse_schedule(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assume(parsed)
        assert all(d >= 0 and math.isfinite(d) for d in parsed)
