"""POST /hooks/pixazo/{token}: provider callbacks on signed URLs (itsdangerous)."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, get_args

from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from service import ledger, providers, store
from service.errors import ApiError
from service.http import deps
from service.metrics import Metrics
from service.tokens import ExpiredToken

if TYPE_CHECKING:
    from service.state import Relay

log = logging.getLogger(__name__)
PREFIX = "/hooks/pixazo/"


class PixazoCallbacks:
    """ASGI middleware serving POST /hooks/pixazo/{token} ahead of the router.

    The ingest hot path (see bench/): no Request or Response objects, no routing; the
    answer is written only once the callback's event is committed. Everything else goes
    to the wrapped app.
    """

    def __init__(self, app: ASGIApp, state: State, metrics: Metrics | None = None) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics or Metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        try:
            if scope["method"] != "POST":
                headers["allow"] = "POST"
                raise ApiError(405, "method_not_allowed", "callbacks are POSTed")
            status, answer = await self._handle(scope, receive, scope["path"][len(PREFIX) :])
        except ApiError as exc:
            status, answer = exc.status, exc.body()
            headers.update(exc.headers)
        except Exception:
            log.exception("callback failed")
            status = 500
            answer = ApiError(500, "internal_error", "the callback was not recorded").body()
        await _respond(send, status, answer, headers)
        self.metrics.callback(status, answer)

    async def _handle(self, scope: Scope, receive: Receive, token: str) -> tuple[int, Any]:
        relay: Relay = self.state.relay
        now = time.time()
        try:
            job_id = relay.tokens.read(token)
        except ExpiredToken as exc:
            if exc.job_id:
                expired = exc.job_id
                try:
                    seen = await _read_body(scope, receive, relay.settings.max_body_bytes)
                except ApiError:
                    seen = b""  # too large or cut short: all such replays are one
                late = store.body_hash(seen)
                await relay.store.write(
                    lambda tx: ledger.reject_callback(tx, expired, "token_expired", now, {}, late)
                )
            raise
        raw = await _read_body(scope, receive, relay.settings.max_body_bytes)
        try:
            body = deps.parse_json(raw)
        except ApiError:
            text = raw[:4096].decode("utf-8", "replace")
            bad = store.body_hash(raw)
            await relay.store.write(
                lambda tx: ledger.reject_callback(
                    tx, job_id, "invalid_json", now, {"body": text}, bad
                )
            )
            raise
        text = raw.decode("utf-8", "replace")
        digest = store.body_hash(raw)
        heard = providers.parse_callback("pixazo", body)
        outcome, job = await relay.store.write(
            ledger.callback_unit(job_id, text, heard, digest, now)
        )
        if job is None:
            raise ApiError(404, "not_found", "no such callback")
        if outcome == "mismatch":
            raise ApiError(409, "request_id_mismatch", "the callback names another request")
        return 200, {"ok": True, "outcome": outcome}


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise deps.too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "disconnected", "the caller hung up")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise deps.too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _encoded(answer: Any, headers: dict[str, str]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps(answer, separators=(",", ":")).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    return body, raw_headers


# The 200 answers, one per outcome, encoded once (the hot path answers nothing else).
_OK = {
    outcome: _encoded({"ok": True, "outcome": outcome}, {})
    for outcome in get_args(ledger.CallbackOutcome)
}


async def _respond(send: Send, status: int, answer: Any, headers: dict[str, str]) -> None:
    ok = _OK.get(answer.get("outcome")) if status == 200 and not headers else None
    body, raw_headers = ok if ok is not None else _encoded(answer, headers)
    # a fresh list each time: the server may keep or change what it is given
    await send({"type": "http.response.start", "status": status, "headers": list(raw_headers)})
    await send({"type": "http.response.body", "body": body})
