"""Standard Webhooks signatures: secrets, message ids, signing and verification."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
_SECRET_BYTES = 24
_MSG_ID_CHARS = 26


def new_secret() -> str:
    """Return a fresh signing secret, ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def new_message_id() -> str:
    """Return a fresh random ``webhook-id``: ``msg_`` + 26 url-safe characters."""
    # token_urlsafe(20) gives 27 characters; the first 26 carry 156 random bits.
    return "msg_" + _secrets.token_urlsafe(20)[:_MSG_ID_CHARS]


def _key(secret: str) -> bytes:
    """Decode a ``whsec_`` secret into the HMAC key; ValueError if it is empty or not base64."""
    # The prefix is optional, as in the standardwebhooks library; unpadded base64 is accepted too.
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("webhook secret is not valid base64") from None
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return mac.digest()


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value: one ``v1,<base64>`` per secret, space-separated."""
    if isinstance(secrets, str):
        # A bare string is a Sequence[str] of characters: almost certainly a caller's mistake.
        raise TypeError("sign() takes a sequence of secrets, not a single string")
    if not secrets:
        raise ValueError("sign() needs at least one secret")
    return " ".join(
        "v1," + base64.b64encode(_digest(_key(s), msg_id, timestamp, body)).decode("ascii")
        for s in secrets
    )


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the Standard Webhooks headers (and content-type) for one delivery attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: int = 300,
    now: int | None = None,
) -> bool:
    """Return whether ``headers`` carry a valid, fresh v1 signature of ``body`` under ``secret``."""
    # Stdlib rather than standardwebhooks.Webhook.verify: that one reads the wall clock and fixes
    # the tolerance at five minutes, and we need both injectable.
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "").strip()
    signatures = lowered.get("webhook-signature", "")
    if not (msg_id and stamp.isdigit() and stamp.isascii() and signatures):
        return False
    timestamp = int(stamp)
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = _digest(_key(secret), msg_id, timestamp, body)
    for item in signatures.split():
        version, _, encoded = item.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, candidate):
            return True
    return False
