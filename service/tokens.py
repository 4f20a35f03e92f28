"""Callback tokens: the job id, signed with RELAY_SECRET and timestamped (itsdangerous)."""

from __future__ import annotations

import functools

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from service.errors import ApiError

SALT = "upscale-relay/pixazo-callback"


class Tokens:
    """Callback tokens: the job id, signed with RELAY_SECRET and timestamped."""

    def __init__(self, secret: str, max_age: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)
        self.max_age = max_age
        # One signer whose derived key is computed once: itsdangerous otherwise builds a
        # signer and re-derives the key for every token it reads (the ingest hot path).
        self._signer = self._serializer.make_signer(SALT)
        self._signer.derive_key = functools.lru_cache(maxsize=4)(  # type: ignore[method-assign]
            self._signer.derive_key
        )

    def make(self, job_id: str) -> str:
        """A token naming `job_id`."""
        return str(self._serializer.dumps(job_id))

    def read(self, token: str) -> str:
        """The job id a token names; ApiError 404 (forged) or 403 (expired) otherwise."""
        try:
            payload_bytes = self._signer.unsign(token, max_age=self.max_age)  # type: ignore[call-arg]
            job_id = self._serializer.load_payload(payload_bytes)
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
