"""POST /hooks/pixazo/{token}: provider callbacks on signed URLs (itsdangerous)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from service import ledger, store, web
from service.errors import ApiError

if TYPE_CHECKING:
    from service.app import Relay

_SALT = "upscale-relay/pixazo-callback"


class Tokens:
    """Callback tokens: the job id, signed with RELAY_SECRET and timestamped."""

    def __init__(self, secret: str, max_age: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age = max_age

    def make(self, job_id: str) -> str:
        """A token naming `job_id`."""
        return str(self._serializer.dumps(job_id))

    def read(self, token: str) -> str:
        """The job id a token names; ApiError 404 (forged) or 403 (expired) otherwise."""
        try:
            job_id = self._serializer.loads(token, max_age=self.max_age)
        except SignatureExpired as exc:
            # the signature is ours, only old: the job it names is worth a rejected event
            payload: object = None
            if isinstance(exc.payload, bytes):
                try:
                    payload = self._serializer.load_payload(exc.payload)
                except BadSignature:
                    payload = None
            raise ExpiredToken(payload) from exc
        except BadSignature as exc:
            raise ApiError(404, "not_found", "no such callback") from exc
        if not isinstance(job_id, str):
            raise ApiError(404, "not_found", "no such callback")
        return job_id


class ExpiredToken(ApiError):
    """The callback token is older than RELAY_CALLBACK_MAX_AGE."""

    def __init__(self, payload: object) -> None:
        super().__init__(403, "token_expired", "the callback token has expired")
        self.job_id = payload if isinstance(payload, str) else None


async def pixazo_callback(request: Request) -> Response:
    """Record a callback; 200 only once its event is committed. Confirmation comes after."""
    relay: Relay = request.app.state.relay
    now = time.time()
    try:
        job_id = relay.tokens.read(request.path_params["token"])
    except ExpiredToken as exc:
        if exc.job_id:
            expired = exc.job_id
            await relay.store.write(
                lambda tx: ledger.reject_callback(tx, expired, "token_expired", now, {})
            )
        raise
    raw = await web.read_body(request, relay.settings.max_body_bytes)
    try:
        body = web.parse_json(raw)
    except ApiError:
        text = raw[:4096].decode("utf-8", "replace")
        await relay.store.write(
            lambda tx: ledger.reject_callback(tx, job_id, "invalid_json", now, {"body": text})
        )
        raise
    text = raw.decode("utf-8", "replace")
    digest = store.body_hash(raw)
    outcome, job = await relay.store.write(
        lambda tx: ledger.record_callback(tx, job_id, text, body, digest, now)
    )
    if job is None:
        raise ApiError(404, "not_found", "no such callback")
    if outcome == "mismatch":
        raise ApiError(409, "request_id_mismatch", "the callback names another request")
    return web.JSON({"ok": True, "outcome": outcome})
