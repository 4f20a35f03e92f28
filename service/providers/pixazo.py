"""Pixazo SeedVR adapter (provider-docs/pixazo-seedvr-upscale.md)."""

from __future__ import annotations

from typing import Any

from service import jobs, outbound
from service.catalog import Model
from service.config import Settings
from service.jobs import CallbackReport, Report, Status
from service.providers.base import Estimate, ProviderError, body_of, call_lease, with_retries
from service.store import Job

STATUS = {
    "QUEUED": Status.QUEUED,
    "PENDING": Status.QUEUED,
    "STARTING": Status.QUEUED,
    "PROCESSING": Status.PROCESSING,
    "RUNNING": Status.PROCESSING,
    "IN_PROGRESS": Status.PROCESSING,
    "COMPLETED": Status.SUCCEEDED,
    "SUCCEEDED": Status.SUCCEEDED,
    "SUCCESS": Status.SUCCEEDED,
    "FAILED": Status.FAILED,
    # ERROR is a system error at Pixazo (not charged); for the relay's users the job failed.
    "ERROR": Status.FAILED,
    "CANCELED": Status.CANCELED,
    "CANCELLED": Status.CANCELED,
}
CALLBACK_PREFIX = "/hooks/pixazo/"


def map_status(raw: object) -> Status | None:
    """Pixazo's status word (any case) as a relay status, or None when unknown."""
    return STATUS.get(str(raw).strip().upper()) if raw is not None else None


def parse_callback(body: Any) -> CallbackReport:
    """A callback body: the same object as a status answer (SPEC), read without raising."""
    fields = body if isinstance(body, dict) else {}
    raw_status = fields.get("status")
    return CallbackReport(
        status=map_status(raw_status),
        raw_status=raw_status,
        request_id=fields.get("request_id"),
        progress=jobs.clamp_progress(fields.get("progress")),
    )


def parse_status(body: Any, request_id: str | None = None) -> Report:
    """A status answer or callback body as a Report (tolerant of missing fields)."""
    if not isinstance(body, dict):
        raise ProviderError(
            "pixazo: the status answer is not a JSON object",
            code="provider_bad_answer",
            http_status=502,
            retryable=True,
        )
    raw_status = str(body.get("status") or "")
    status = map_status(raw_status)
    if status is None:
        raise ProviderError(
            f"pixazo: unknown status {raw_status!r}",
            code="provider_bad_answer",
            http_status=502,
            retryable=True,
        )
    outputs: list[dict[str, str]] = []
    output = body.get("output")
    if isinstance(output, dict):
        urls = output.get("media_url")
        media_type = str(output.get("media_type") or "application/octet-stream")
        if isinstance(urls, str):
            urls = [urls]
        if isinstance(urls, list):
            outputs = [{"url": u, "media_type": media_type} for u in urls if isinstance(u, str)]
    error = body.get("error")
    return Report(
        status=status,
        raw_status=raw_status,
        progress=jobs.clamp_progress(body.get("progress")),
        outputs=tuple(outputs),
        error=error if isinstance(error, str) else (str(error) if error else None),
        provider_job_id=str(body.get("request_id") or request_id or "") or None,
    )


class Pixazo:
    """Submits to Pixazo with `X-Webhook-URL`; reads `/v2/requests/status/{request_id}`."""

    name = "pixazo"
    accepts_callbacks = True
    fetches_media = False  # Pixazo downloads the media URL itself

    def __init__(self, client: outbound.Client, base_url: str, api_key: str | None) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._key = api_key or ""

    def map_status(self, raw: object) -> Status | None:
        """Pixazo's status word as a relay status (see STATUS)."""
        return map_status(raw)

    def callback_url(self, public_url: str, token: str) -> str:
        """The signed URL sent as `X-Webhook-URL`."""
        return f"{public_url}{CALLBACK_PREFIX}{token}"

    def parse_callback(self, body: Any) -> CallbackReport:
        """A callback body as a report (see parse_callback)."""
        return parse_callback(body)

    def first_poll_delay(self, settings: Settings) -> float:
        """A callback is expected: the first poll waits RELAY_CALLBACK_GRACE for it."""
        return settings.callback_grace

    def submission_lease(self, model: Model, params: dict[str, Any], settings: Settings) -> float:
        """Media URLs go to Pixazo as they are: the lease covers the submission call alone."""
        return call_lease(settings)

    async def estimate(self, model: Model, params: dict[str, Any]) -> Estimate | None:
        """Pixazo has no dry run: the cost is unknown."""
        return None

    def _headers(self) -> dict[str, str]:
        return {"Ocp-Apim-Subscription-Key": self._key, "Cache-Control": "no-cache"}

    async def submit(
        self, model: Model, params: dict[str, Any], callback_url: str | None
    ) -> Report:
        """POST the generate request; the answer carries the request id and QUEUED."""
        headers = self._headers()
        if callback_url:
            headers["X-Webhook-URL"] = callback_url
        # sync_mode is never sent: catalog refuses it and nothing adds it.
        payload = {k: v for k, v in params.items() if k != "sync_mode"}
        url = self._base + model.path
        response = await with_retries(
            lambda: self._client.post(url, json=payload, headers=headers), "pixazo"
        )
        body = body_of(response)
        request_id = body.get("request_id") if isinstance(body, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise ProviderError(
                "pixazo: the answer to the submission carries no request_id",
                code="provider_bad_answer",
                http_status=502,
                retryable=False,
                provider_status=response.status_code,
                body=body,
            )
        report = parse_status({"status": "QUEUED", **body}, request_id)
        return report

    async def fetch_status(self, job: Job) -> Report:
        """GET the universal status endpoint for the job's request id."""
        if not job.provider_job_id:
            raise ProviderError(
                "pixazo: the job has no request id yet",
                code="provider_no_id",
                http_status=409,
                retryable=False,
            )
        url = f"{self._base}/v2/requests/status/{job.provider_job_id}"
        ids = {"job": job.id}
        response = await with_retries(
            lambda: self._client.get(url, headers=self._headers(), ids=ids),
            "pixazo",
            attempts=1,
        )
        return parse_status(body_of(response), job.provider_job_id)
