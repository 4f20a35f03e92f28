"""What the relay needs from a provider, and how provider failures are described."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from service import outbound, retry
from service.catalog import Model
from service.config import Settings
from service.errors import RelayError
from service.jobs import CallbackReport, Report, Status
from service.store import Job


class ProviderError(RelayError):
    """The provider could not be reached or refused the request."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        http_status: int,
        retryable: bool,
        retry_after: float | None = None,
        provider_status: int | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.retryable = retryable
        self.retry_after = retry_after
        self.provider_status = provider_status
        self.body = body

    def details(self) -> dict[str, Any]:
        """What the caller is shown about the provider's answer."""
        return {"provider_status": self.provider_status, "provider_body": self.body}


@dataclass(frozen=True, slots=True)
class Estimate:
    """A dry run's answer: the cost, the input as it would be sent, the provider's own answer."""

    cost: float | None
    input: dict[str, Any]
    provider_answer: Any = None


class Provider(Protocol):
    """A provider adapter: everything the relay does differently from one provider to another."""

    name: str
    # True: submissions carry a signed callback URL and the provider POSTs status changes to it.
    accepts_callbacks: bool
    # True: the relay downloads a media URL itself (and uploads it to the provider), so a URL
    # to a private address is refused at submit, before a job is recorded.
    fetches_media: bool

    def map_status(self, raw: object) -> Status | None:
        """The provider's status word as a relay status, or None when it means nothing."""
        ...

    def callback_url(self, public_url: str, token: str) -> str:
        """Where this provider's callbacks for the job with `token` go (if it accepts them)."""
        ...

    def parse_callback(self, body: Any) -> CallbackReport:
        """A callback body (any JSON value) as a report; never raises on a malformed body."""
        ...

    def first_poll_delay(self, settings: Settings) -> float:
        """Seconds from the submission's answer to the job's first poll."""
        ...

    def submission_lease(self, model: Model, params: dict[str, Any], settings: Settings) -> float:
        """Seconds a submission may take before the job counts as interrupted."""
        ...

    async def submit(
        self, model: Model, params: dict[str, Any], callback_url: str | None
    ) -> Report: ...

    async def fetch_status(self, job: Job) -> Report: ...

    async def estimate(self, model: Model, params: dict[str, Any]) -> Estimate | None:
        """The cost of a request without running it, or None when the provider cannot tell."""
        ...


def call_lease(settings: Settings) -> float:
    """How long one provider call may take: three attempts (with_retries) and some slack."""
    return 3 * settings.provider_timeout + 30


def body_of(response: outbound.Response) -> Any:
    """The JSON body of an answer, or its first 1 KiB of text."""
    try:
        return response.json()
    except ValueError:
        return response.text[:1024]


def error_message(body: Any) -> str:
    """The most telling message in a provider's error body."""
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "reason"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])
    return str(body)[:300] if body else "no details"


_STATUS_MAP = {
    400: (400, "provider_bad_request", "the provider refused the request"),
    401: (502, "provider_unauthorized", "the provider refused the relay's API key"),
    402: (402, "provider_insufficient_balance", "the provider account has no balance left"),
    403: (502, "provider_forbidden", "the provider forbids this request for the relay's key"),
    404: (502, "provider_not_found", "the provider does not know this resource"),
    413: (413, "provider_payload_too_large", "the provider refused the media as too large"),
    422: (400, "provider_bad_request", "the provider refused the request"),
    429: (429, "provider_rate_limited", "the provider is rate limiting the relay"),
}


def error_for(name: str, response: outbound.Response) -> ProviderError:
    """Describe a non-2xx provider answer as a ProviderError (retryable for 408, 429, 5xx)."""
    status = response.status_code
    body = body_of(response)
    http_status, code, prefix = _STATUS_MAP.get(
        status,
        (502, "provider_unavailable", "the provider failed")
        if status >= 500 or status == 408
        else (502, "provider_error", "the provider answered unexpectedly"),
    )
    retry_after = retry.parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
    return ProviderError(
        f"{name}: {prefix} (HTTP {status}): {error_message(body)}",
        code=code,
        http_status=http_status,
        retryable=status in (408, 429) or status >= 500,
        retry_after=retry_after,
        provider_status=status,
        body=body,
    )


def network_error(name: str, exc: outbound.HTTPError) -> ProviderError:
    """Describe a transport failure; only a failed connect is surely safe to resend."""
    sure_not_sent = isinstance(exc, outbound.ConnectError | outbound.ConnectTimeout)
    return ProviderError(
        f"{name}: cannot reach the provider: {type(exc).__name__}: {exc}".rstrip(": "),
        code="provider_unreachable",
        http_status=504 if isinstance(exc, outbound.TimeoutException) else 502,
        retryable=sure_not_sent,
    )


async def with_retries(
    call: Callable[[], Awaitable[outbound.Response]],
    name: str,
    *,
    attempts: int = 3,
    base_delay: float = 0.25,
    max_delay: float = 4.0,
    rand: Callable[[], float] = random.random,
) -> outbound.Response:
    """Send, retrying 408/429/5xx and unsent requests a few times with backoff first."""
    for attempt in range(attempts):
        try:
            response = await call()
        except outbound.HTTPError as exc:
            error = network_error(name, exc)
        else:
            if response.is_success:
                return response
            error = error_for(name, response)
        if not error.retryable or attempt == attempts - 1:
            raise error
        delay = retry.backoff(attempt, base_delay, max_delay, rand)
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, max_delay))
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
