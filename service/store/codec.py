"""How the store writes values: compact JSON, ISO 8601 times."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON for storage (UTF-8 text, no spaces)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # what orjson refuses and json takes: integers past 64 bits, keys that are not
        # strings, lone surrogates (which the database then refuses as before)
        return _ENCODER.encode(value)


# The last whole second formatted, (second, "YYYY-MM-DDTHH:MM:SS"): most times formatted
# together fall in the same second. One tuple, replaced whole: safe from any thread.
_last_second: tuple[int, str] = (0, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(0)))


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds and a Z."""
    global _last_second
    if ts is None:
        return None
    second = math.floor(ts)
    cached = _last_second
    if cached[0] == second:
        prefix = cached[1]
    else:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = (second, prefix)
    return f"{prefix}.{int(ts * 1000) % 1000:03d}Z"


def ids_json(values: Iterable[Any]) -> str:
    """A set of ids as one JSON array parameter (sorted: the same set, the same text)."""
    return dumps(sorted(set(values)))


def redacted(database: str) -> str:
    """A database URL fit for logs and errors: its password (and a password= option) masked."""
    if "://" not in database:
        return database
    parts = urlsplit(database)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = "&".join(
        "password=***" if pair.lower().startswith("password=") else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
