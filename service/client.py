"""A small synchronous client of a running relay's /v1 API, for the command line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

TERMINAL = ("succeeded", "failed", "canceled")
DEFAULT_URL = "http://127.0.0.1:8000"
START_HINT = (
    "Start it with `upscale-relay serve`; to try it without provider keys, run "
    "`upscale-relay sim` and a `serve` with the environment it prints. "
    "Or point --url (or RELAY_URL) at a running relay."
)


class UsageError(Exception):
    """The command line itself is wrong (exit code 2)."""


class Unreachable(Exception):
    """No answer from the relay: not running, wrong address, or the network."""


class RelayError(Exception):
    """An error answer of the relay, from its error envelope."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @property
    def job_id(self) -> str | None:
        """The job the refusal left behind (a provider's refusal fails a created job)."""
        if isinstance(self.details, dict) and isinstance(self.details.get("job_id"), str):
            return str(self.details["job_id"])
        return None


def _value(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, true, null, ...), else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def pairs(items: list[str]) -> dict[str, Any]:
    """`key=value` arguments as a dict; UsageError names a malformed one."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        out[key] = _value(value)
    return out


def base_url(url: str | None) -> str:
    """The relay's URL from --url, RELAY_URL or the default; UsageError without a scheme."""
    given = url or os.environ.get("RELAY_URL") or DEFAULT_URL
    parts = urlsplit(given)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        where = "--url" if url else "RELAY_URL"
        # the value is echoed only when it carries no credentials
        shown = f" (got {given!r}; did you mean http://{given}?)" if "@" not in given else ""
        raise UsageError(f"{where} must be an http:// or https:// URL{shown}")
    return given.rstrip("/")


class Client:
    """The relay's /v1 API over one connection pool."""

    def __init__(self, url: str, token: str | None = None) -> None:
        token = token or os.environ.get("RELAY_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def _unreachable(self, exc: httpx.TransportError) -> Unreachable:
        reason = type(exc).__name__ if not str(exc) else str(exc)
        return Unreachable(f"cannot reach the relay at {self.url} ({reason}). {START_HINT}")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the answer's JSON, or RelayError / Unreachable."""
        try:
            answer = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return _body(answer)

    def events(self, job_id: str, after: int, seconds: int) -> Iterator[dict[str, Any]]:
        """A job's events after `after`, live from the event stream, for at most `seconds`."""
        params: dict[str, Any] = {"job_id": job_id, "after": after, "max_seconds": seconds}
        try:
            with self.http.stream(
                "GET", "/v1/events/stream", params=params, timeout=httpx.Timeout(60, read=90)
            ) as answer:
                if answer.is_error:
                    answer.read()
                    _body(answer)
                data: list[str] = []
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield json.loads("\n".join(data))
                        data = []
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None


def _body(answer: httpx.Response) -> Any:
    try:
        body = answer.json() if answer.content else None
    except ValueError:
        raise RelayError(
            answer.status_code,
            "not_json",
            "the answer is not JSON: is --url (or RELAY_URL) the relay's address?",
        ) from None
    if answer.is_error:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            error = {"code": "http_error", "message": answer.reason_phrase}
        raise RelayError(
            answer.status_code,
            str(error.get("code", "")),
            str(error.get("message", "")),
            error.get("details"),
        )
    return body
