"""Pixazo SeedVR adapter (provider-docs/pixazo-seedvr-upscale.md)."""

from __future__ import annotations

from typing import Any

import httpx

from service import jobs, outbound
from service.catalog import Model
from service.jobs import Report
from service.providers.base import ProviderError, body_of, with_retries
from service.store import Job


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
    status = jobs.map_pixazo(raw_status)
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

    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str | None) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._key = api_key or ""

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
        ids = {outbound.IDS: {"job": job.id}}
        response = await with_retries(
            lambda: self._client.get(url, headers=self._headers(), extensions=ids),
            "pixazo",
            attempts=1,
        )
        return parse_status(body_of(response), job.provider_job_id)
