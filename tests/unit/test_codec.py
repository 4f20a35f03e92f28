"""The store's codec: compact JSON (orjson, json where orjson refuses) and ISO times."""

from __future__ import annotations

import json
import random
import time

from service.store import codec


def _reference_iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def test_dumps_is_compact_utf8_json_that_reads_back() -> None:
    value = {
        "id": "job_1",
        "progress": 0.42,
        "big": 1e16,
        "text": 'é "quoted" \\ \n \u2028 😀',
        "nested": {"outputs": [{"url": "https://x.example/a.png"}], "none": None, "ok": True},
    }
    text = codec.dumps(value)
    assert json.loads(text) == value
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_dumps_falls_back_to_json_for_what_orjson_refuses() -> None:
    assert codec.dumps({"n": 2**70}) == '{"n":1180591620717411303424}'
    assert codec.dumps({1: "x"}) == '{"1":"x"}'


def test_dumps_stores_no_invalid_json_for_non_finite_numbers() -> None:
    # json.dumps wrote NaN and Infinity, which no strict JSON reader (nor PostgreSQL) takes
    assert codec.dumps({"cost": float("nan"), "p": float("inf")}) == '{"cost":null,"p":null}'


def test_iso_matches_strftime_whatever_second_came_before() -> None:
    rng = random.Random(7)
    stamps = [0.0, 0.5, 1.999, -0.5, -1.2, 1_764_478_541.123, 1_764_478_541.9999]
    stamps += [rng.uniform(-1e9, 4e9) for _ in range(2000)]
    # runs inside one second, then back to an earlier one: the cache never serves a stale one
    stamps += [1_800_000_000 + i / 7 for i in range(30)] + [1_799_999_999.5]
    for ts in stamps:
        assert codec.iso(ts) == _reference_iso(ts), ts
    assert codec.iso(None) is None
