"""A loopback Standard Webhooks receiver that verifies signatures and fails on demand."""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import standardwebhooks
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

# Status recorded for a request whose sender hung up while the subscriber hung (nginx's code).
CLIENT_CLOSED = 499


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the subscriber saw it, with the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    at: float
    verified: bool | None
    status: int


def verify(secrets: Sequence[str], body: bytes, headers: Mapping[str, str]) -> bool | None:
    """True when any secret verifies the Standard Webhooks signature; None with no secrets."""
    if not secrets:
        return None
    for secret in secrets:
        try:
            standardwebhooks.Webhook(secret).verify(body, dict(headers))
        except Exception:  # noqa: S112 - any failure (bad secret, header, signature) is a "no"
            continue
        return True
    return False


def _retry_after(value: float | str) -> str:
    # HTTP delay-seconds is a whole number; a string (an HTTP date) goes out as given.
    return value if isinstance(value, str) else str(math.ceil(value))


class Subscriber:
    """Records every delivery; `fail_next`, `down`, `gone` and `hang_seconds` inject failures."""

    def __init__(
        self,
        secret: str | Sequence[str] | None = None,
        *,
        require_signature: bool = False,
        status: int = 200,
    ) -> None:
        self.secrets: list[str] = [secret] if isinstance(secret, str) else list(secret or [])
        # When set, a request no secret verifies gets 401, as a careful receiver answers.
        self.require_signature = require_signature
        self.status = status
        self.received: list[Received] = []
        self.attempts: list[Received] = []
        self.down = False
        self.gone = False
        self.hang_seconds = 0.0
        self._failures: collections.deque[tuple[int, float | str | None]] = collections.deque()
        self._waiter: asyncio.Event | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    @property
    def secret(self) -> str | None:
        """The first secret, if any."""
        return self.secrets[0] if self.secrets else None

    @secret.setter
    def secret(self, value: str | None) -> None:
        self.secrets = [value] if value else []

    def fail_next(
        self, status: int, count: int = 1, retry_after: float | str | None = None
    ) -> None:
        """Answer the next `count` requests with `status` (and `Retry-After` when given)."""
        self._failures.extend([(status, retry_after)] * count)

    def ids(self) -> list[str]:
        """The `webhook-id` of each accepted delivery, in arrival order."""
        return [r.headers.get("webhook-id", "") for r in self.received]

    # A timeout argument rather than asyncio.timeout around the call: tests read better.
    async def wait_for(
        self,
        count: int,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[Received]:
        """Wait until at least `count` deliveries were accepted (2xx); return them."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.received) < count:
                    self._waiter = asyncio.Event()
                    await self._waiter.wait()
        except TimeoutError:
            msg = f"subscriber: {len(self.received)} of {count} deliveries after {timeout}s"
            raise TimeoutError(msg) from None
        return list(self.received)

    async def _client_left(self, request: Request) -> bool:
        """Hang for `hang_seconds`; True if the sender hung up meanwhile."""
        try:
            async with asyncio.timeout(self.hang_seconds):
                while True:
                    message = await request.receive()
                    if message["type"] == "http.disconnect":
                        return True
                    # A server that answers receive() at once must not make this loop spin.
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return False

    async def _handle(self, request: Request) -> Response:
        arrived = time.monotonic()
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        verified = verify(self.secrets, body, headers)
        if self.hang_seconds > 0 and await self._client_left(request):
            response: Response = Response(status_code=CLIENT_CLOSED)
        elif self.gone:
            response = JSONResponse({"error": "gone"}, 410)
        elif self.down:
            response = PlainTextResponse("down", 503)
        elif self._failures:
            status, retry_after = self._failures.popleft()
            extra = {} if retry_after is None else {"Retry-After": _retry_after(retry_after)}
            response = JSONResponse({"error": "injected failure"}, status, headers=extra)
        elif self.require_signature and not verified:
            response = JSONResponse({"error": "invalid signature"}, 401)
        else:
            response = PlainTextResponse("ok", self.status)
        item = Received(
            method=request.method,
            path=request.url.path,
            headers=headers,
            body=body,
            json=parsed,
            at=arrived,
            verified=verified,
            status=response.status_code,
        )
        self.attempts.append(item)
        if 200 <= response.status_code < 300:
            self.received.append(item)
            if self._waiter is not None:
                self._waiter.set()
        return response
