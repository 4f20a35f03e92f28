"""Standard Webhooks signing, checked against fixed vectors and the standardwebhooks library."""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks.webhooks as sw_webhooks
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service import signing

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).with_name("signing_vectors.json")).read_text(encoding="utf-8")
)["vectors"]

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
SECRET_C = "whsec_3LHK8bqwdvTtM6wMCqtWCq6yyuBzjIqm"
BODY = b'{"type":"job.succeeded","data":{"id":"job_1"}}'


@pytest.fixture
def freeze_library_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Pin the clock that standardwebhooks.Webhook.verify reads, for vectors with old timestamps."""

    def freeze(timestamp: int) -> None:
        frozen = datetime.fromtimestamp(timestamp, tz=UTC)

        class _Frozen(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> _Frozen:
                return frozen  # type: ignore[return-value]

        monkeypatch.setattr(sw_webhooks, "datetime", _Frozen)

    return freeze


def _ids(vector: dict[str, Any]) -> str:
    return str(vector["name"])


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_sign_matches_stored_vector(vector: dict[str, Any]) -> None:
    body = vector["body"].encode()
    got = signing.sign([vector["secret"]], vector["msg_id"], vector["timestamp"], body)
    assert got == vector["signature"]


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_library_verifies_stored_vector(vector: dict[str, Any], freeze_library_clock: Any) -> None:
    freeze_library_clock(vector["timestamp"])
    hdrs = signing.headers([vector["secret"]], vector["msg_id"], vector["timestamp"], b"")
    hdrs["webhook-signature"] = vector["signature"]
    Webhook(vector["secret"]).verify(vector["body"].encode(), hdrs, json_parse=False)


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_verify_accepts_stored_vector(vector: dict[str, Any]) -> None:
    hdrs = {
        "webhook-id": vector["msg_id"],
        "webhook-timestamp": str(vector["timestamp"]),
        "webhook-signature": vector["signature"],
    }
    body = vector["body"].encode()
    assert signing.verify(vector["secret"], hdrs, body, now=vector["timestamp"])


def test_reference_vector_is_the_published_one() -> None:
    # The example from the Standard Webhooks spec and its reference libraries' tests.
    assert VECTORS[0]["signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_library_verifies_fresh_headers() -> None:
    now = int(time.time())
    hdrs = signing.headers([SECRET_A], "msg_fresh", now, BODY)
    assert Webhook(SECRET_A).verify(BODY, hdrs) == json.loads(BODY)


def test_two_secrets_each_verify_alone() -> None:
    now = int(time.time())
    hdrs = signing.headers([SECRET_A, SECRET_B], "msg_rotating", now, BODY)
    parts = hdrs["webhook-signature"].split(" ")
    assert len(parts) == 2
    assert all(p.startswith("v1,") for p in parts)
    assert parts[0] == signing.sign([SECRET_A], "msg_rotating", now, BODY)
    assert parts[1] == signing.sign([SECRET_B], "msg_rotating", now, BODY)
    Webhook(SECRET_A).verify(BODY, hdrs)
    Webhook(SECRET_B).verify(BODY, hdrs)
    assert signing.verify(SECRET_A, hdrs, BODY, now=now)
    assert signing.verify(SECRET_B, hdrs, BODY, now=now)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_C).verify(BODY, hdrs)
    assert not signing.verify(SECRET_C, hdrs, BODY, now=now)


def test_headers_shape() -> None:
    hdrs = signing.headers([SECRET_A], "msg_x", 1700000000, BODY)
    assert hdrs == {
        "webhook-id": "msg_x",
        "webhook-timestamp": "1700000000",
        "webhook-signature": signing.sign([SECRET_A], "msg_x", 1700000000, BODY),
        "content-type": "application/json",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [("webhook-id", "msg_other"), ("webhook-timestamp", None), ("body", None)],
)
def test_tampering_fails_everywhere(field: str, value: str | None) -> None:
    now = int(time.time())
    hdrs = signing.headers([SECRET_A], "msg_orig", now, BODY)
    body = BODY
    if field == "body":
        body = BODY.replace(b"job_1", b"job_2")
    elif field == "webhook-timestamp":
        hdrs[field] = str(now - 1)
    else:
        assert value is not None
        hdrs[field] = value
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(body, hdrs)
    assert not signing.verify(SECRET_A, hdrs, body)


def test_verify_accepts_library_signature() -> None:
    now = int(time.time())
    sig = Webhook(SECRET_B).sign("msg_lib", datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    hdrs = {"webhook-id": "msg_lib", "webhook-timestamp": str(now), "webhook-signature": sig}
    assert signing.verify(SECRET_B, hdrs, BODY)


def test_verify_tolerance_window() -> None:
    ts = 1_700_000_000
    hdrs = signing.headers([SECRET_A], "msg_t", ts, BODY)
    assert signing.verify(SECRET_A, hdrs, BODY, now=ts + 300)
    assert signing.verify(SECRET_A, hdrs, BODY, now=ts - 300)
    assert not signing.verify(SECRET_A, hdrs, BODY, now=ts + 301)
    assert not signing.verify(SECRET_A, hdrs, BODY, now=ts - 301)
    assert signing.verify(SECRET_A, hdrs, BODY, tolerance=10, now=ts + 10)
    assert not signing.verify(SECRET_A, hdrs, BODY, tolerance=10, now=ts + 11)


def test_verify_header_names_are_case_insensitive() -> None:
    ts = 1_700_000_000
    hdrs = {k.title(): v for k, v in signing.headers([SECRET_A], "msg_c", ts, BODY).items()}
    assert "Webhook-Signature" in hdrs
    assert signing.verify(SECRET_A, hdrs, BODY, now=ts)


def test_verify_skips_foreign_and_malformed_entries() -> None:
    ts = 1_700_000_000
    good = signing.sign([SECRET_A], "msg_m", ts, BODY)
    mixed = f"v1a,abcd v2,{good[3:]} v1,!!notbase64!! nocomma {good}"
    hdrs = {"webhook-id": "msg_m", "webhook-timestamp": str(ts), "webhook-signature": mixed}
    assert signing.verify(SECRET_A, hdrs, BODY, now=ts)
    hdrs["webhook-signature"] = f"v1a,abcd v2,{good[3:]} v1,!!notbase64!! nocomma"
    assert not signing.verify(SECRET_A, hdrs, BODY, now=ts)


@pytest.mark.parametrize(
    "drop_or_bad",
    [
        {"webhook-id": None},
        {"webhook-timestamp": None},
        {"webhook-signature": None},
        {"webhook-timestamp": "1700000000.5"},
        {"webhook-timestamp": "-1700000000"},
        {"webhook-timestamp": "soon"},
        {"webhook-timestamp": "\u0661\u0667"},  # Arabic-Indic digits: isdigit() but not ASCII
        {"webhook-signature": ""},
    ],
)
def test_verify_rejects_missing_or_bad_headers(drop_or_bad: dict[str, str | None]) -> None:
    ts = 1_700_000_000
    hdrs: dict[str, str] = signing.headers([SECRET_A], "msg_h", ts, BODY)
    for name, value in drop_or_bad.items():
        if value is None:
            del hdrs[name]
        else:
            hdrs[name] = value
    assert not signing.verify(SECRET_A, hdrs, BODY, now=ts)


def test_sign_handles_non_utf8_bodies() -> None:
    body = b"\xff\xfe\x00binary"
    hdrs = signing.headers([SECRET_A], "msg_bin", 1_700_000_000, body)
    assert signing.verify(SECRET_A, hdrs, body, now=1_700_000_000)


def test_prefix_is_optional_and_padding_too() -> None:
    bare = SECRET_A.removeprefix("whsec_")
    assert signing.sign([bare], "m", 1, b"x") == signing.sign([SECRET_A], "m", 1, b"x")
    padded = "whsec_dGhpcyBpcyBhIHNlY3JldCBrZXk="
    unpadded = padded.rstrip("=")
    assert signing.sign([padded], "m", 1, b"x") == signing.sign([unpadded], "m", 1, b"x")


@pytest.mark.parametrize("secret", ["whsec_", "", "whsec_!!!!", "whsec_abc$def"])
def test_invalid_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        signing.sign([secret], "msg", 1, b"{}")
    with pytest.raises(ValueError, match="webhook secret"):
        signing.verify(secret, signing.headers([SECRET_A], "msg", 1, b"{}"), b"{}", now=1)


def test_sign_needs_a_sequence_of_secrets() -> None:
    with pytest.raises(ValueError, match="at least one"):
        signing.sign([], "msg", 1, b"{}")
    with pytest.raises(TypeError, match="sequence of secrets"):
        signing.sign(SECRET_A, "msg", 1, b"{}")


def test_new_secret() -> None:
    secrets = {signing.new_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    secret = secrets.pop()
    now = int(time.time())
    Webhook(secret).verify(BODY, signing.headers([secret], "msg_new", now, BODY))


def test_new_message_id() -> None:
    ids = {signing.new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"msg_[A-Za-z0-9_-]{26}", i) for i in ids)
