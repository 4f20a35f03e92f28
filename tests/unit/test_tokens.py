"""Callback tokens: signed job ids with an age limit (itsdangerous); never sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable

import itsdangerous.timed
import pytest

from service import tokens
from service.errors import ApiError
from service.tokens import ExpiredToken, Tokens

SECRET = "relay-secret-for-tests"
MAX_AGE = 3600
JOB_ID = "job_0123456789abcdef0123"

MakeTokens = Callable[..., Tokens]


@pytest.fixture
def make_tokens() -> MakeTokens:
    def make(secret: str = SECRET, max_age: int = MAX_AGE) -> Tokens:
        return Tokens(secret, max_age)

    return make


def signed_at(
    monkeypatch: pytest.MonkeyPatch, tokens: Tokens, job_id: str, seconds_ago: int
) -> str:
    """A token made `seconds_ago` in the past, by moving itsdangerous' clock for one call."""
    with monkeypatch.context() as patch:
        past = int(time.time()) - seconds_ago
        patch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: past)
        return tokens.make(job_id)


def flip(token: str, index: int) -> str:
    """`token` with one character changed in all six bits it encodes (A=0, _=63 in base64url)."""
    char = token[index]
    return token[:index] + ("_" if char != "_" else "A") + token[index + 1 :]


def flip_in_signature(token: str) -> str:
    # not the last character: some of its bits are padding that decoding ignores
    return flip(token, len(token) - 10)


def test_round_trip(make_tokens: MakeTokens) -> None:
    tokens = make_tokens()
    token = tokens.make(JOB_ID)
    assert tokens.read(token) == JOB_ID
    assert make_tokens().read(token) == JOB_ID  # another instance, same secret


def test_token_is_url_safe(make_tokens: MakeTokens) -> None:
    token = make_tokens().make(JOB_ID)
    assert all(c.isalnum() or c in "-_." for c in token)


def test_different_jobs_get_different_tokens(make_tokens: MakeTokens) -> None:
    tokens = make_tokens()
    a, b = tokens.make("job_a"), tokens.make("job_b")
    assert a != b
    assert (tokens.read(a), tokens.read(b)) == ("job_a", "job_b")


def assert_not_found(tokens: Tokens, token: str) -> None:
    with pytest.raises(ApiError) as caught:
        tokens.read(token)
    assert not isinstance(caught.value, ExpiredToken)
    assert caught.value.status == 404
    assert caught.value.code == "not_found"


def test_tampered_signature_is_not_found(make_tokens: MakeTokens) -> None:
    tokens = make_tokens()
    token = tokens.make(JOB_ID)
    tampered = flip_in_signature(token)
    assert tampered.rsplit(".", 1)[0] == token.rsplit(".", 1)[0]
    assert_not_found(tokens, tampered)


def test_tampered_payload_is_not_found(make_tokens: MakeTokens) -> None:
    tokens = make_tokens()
    token = tokens.make(JOB_ID)
    tampered = flip(token, 2)
    assert tampered.split(".")[1:] == token.split(".")[1:]
    assert_not_found(tokens, tampered)


def test_swapped_payload_is_not_found(make_tokens: MakeTokens) -> None:
    # The payload of one token with the signature of another.
    tokens = make_tokens()
    payload_a, _ = tokens.make("job_a").split(".", 1)
    _, rest_b = tokens.make("job_b").split(".", 1)
    assert_not_found(tokens, f"{payload_a}.{rest_b}")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "job_123", "...."])
def test_garbage_is_not_found(make_tokens: MakeTokens, token: str) -> None:
    assert_not_found(make_tokens(), token)


def test_foreign_token_is_not_found(make_tokens: MakeTokens) -> None:
    foreign = make_tokens(secret="someone-else").make(JOB_ID)
    assert_not_found(make_tokens(), foreign)


def test_other_salt_is_not_found(make_tokens: MakeTokens) -> None:
    # Same secret, signed for another purpose: not a callback token.
    other = itsdangerous.URLSafeTimedSerializer(SECRET, salt="something-else").dumps(JOB_ID)
    assert_not_found(make_tokens(), other)


def test_non_string_payload_is_not_found(make_tokens: MakeTokens) -> None:
    serializer = itsdangerous.URLSafeTimedSerializer(SECRET, salt=tokens.SALT)
    assert_not_found(make_tokens(), serializer.dumps({"job": JOB_ID}))


def test_expired_token_is_403_with_the_job_id(
    make_tokens: MakeTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = make_tokens(max_age=1)
    token = signed_at(monkeypatch, tokens, JOB_ID, seconds_ago=60)
    with pytest.raises(ExpiredToken) as caught:
        tokens.read(token)
    assert caught.value.status == 403
    assert caught.value.code == "token_expired"
    assert caught.value.job_id == JOB_ID


def test_token_within_max_age_is_valid(
    make_tokens: MakeTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = make_tokens(max_age=MAX_AGE)
    token = signed_at(monkeypatch, tokens, JOB_ID, seconds_ago=MAX_AGE - 60)
    assert tokens.read(token) == JOB_ID


def test_expired_and_tampered_is_not_found(
    make_tokens: MakeTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An old token whose signature is also wrong says nothing about any job.
    tokens = make_tokens(max_age=1)
    token = signed_at(monkeypatch, tokens, JOB_ID, seconds_ago=60)
    assert_not_found(tokens, flip_in_signature(token))


def test_expired_foreign_token_is_not_found(
    make_tokens: MakeTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign = signed_at(monkeypatch, make_tokens(secret="other"), JOB_ID, seconds_ago=60)
    assert_not_found(make_tokens(max_age=1), foreign)


def test_fast_check_accepts_what_itsdangerous_made(make_tokens: MakeTokens) -> None:
    # Tokens made by itsdangerous itself (as before the fast check existed) stay valid.
    serializer = itsdangerous.URLSafeTimedSerializer(SECRET, salt=tokens.SALT)
    made = str(serializer.dumps(JOB_ID))
    checker = make_tokens()
    assert checker.check(made) == JOB_ID
    assert checker.read(made) == JOB_ID


def test_fast_check_refuses_what_itsdangerous_refuses(
    make_tokens: MakeTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    checker = make_tokens(max_age=1)
    fresh = checker.make(JOB_ID)
    old = signed_at(monkeypatch, checker, JOB_ID, seconds_ago=60)
    future = signed_at(monkeypatch, checker, JOB_ID, seconds_ago=-60)
    foreign = make_tokens(secret="someone-else").make(JOB_ID)
    other_salt = str(itsdangerous.URLSafeTimedSerializer(SECRET, salt="x").dumps(JOB_ID))
    not_str = str(
        itsdangerous.URLSafeTimedSerializer(SECRET, salt=tokens.SALT).dumps({"job": JOB_ID})
    )
    assert checker.check(fresh) == JOB_ID
    for bad in (
        old,
        future,
        foreign,
        other_salt,
        not_str,
        flip_in_signature(fresh),
        flip(fresh, 2),
        fresh + "A",
        fresh.replace(".", "", 1),
        "é" + fresh,
        "",
        "a.b.c",
    ):
        assert checker.check(bad) is None, bad
        with pytest.raises(ApiError):
            checker.read(bad)


def test_compressed_payload_falls_back_to_itsdangerous(make_tokens: MakeTokens) -> None:
    # itsdangerous compresses a long payload (a leading "."): the fast check leaves it to it.
    serializer = itsdangerous.URLSafeTimedSerializer(SECRET, salt=tokens.SALT)
    long_id = "job_" + "0" * 200
    made = str(serializer.dumps(long_id))
    assert made.startswith(".")
    checker = make_tokens()
    assert checker.check(made) is None
    assert checker.read(made) == long_id
