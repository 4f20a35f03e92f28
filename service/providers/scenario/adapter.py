"""Scenario adapter (provider-docs/scenario-*.md and SPEC's facts beyond them): polled, no hooks."""

from __future__ import annotations

import asyncio
import mimetypes
import posixpath
from typing import Any
from urllib.parse import urlsplit

from service import catalog, jobs, netguard, outbound
from service.catalog import Model
from service.config import Settings
from service.jobs import CallbackReport, Report, Status
from service.providers.base import Estimate, ProviderError, body_of, call_lease, with_retries
from service.providers.scenario import media
from service.store import Job

_DEFAULT_MEDIA_TYPE = {"image": "image/png", "video": "video/mp4"}
# Scenario's docs disagree ("failure" vs "failed"); both are accepted, and so is "in-progress".
STATUS = {
    "queued": Status.QUEUED,
    "pending": Status.QUEUED,
    "warming-up": Status.QUEUED,
    "in-progress": Status.PROCESSING,
    "processing": Status.PROCESSING,
    "running": Status.PROCESSING,
    "success": Status.SUCCEEDED,
    "succeeded": Status.SUCCEEDED,
    "failure": Status.FAILED,
    "failed": Status.FAILED,
    "canceled": Status.CANCELED,
    "cancelled": Status.CANCELED,
}
# Fetching a media URL and uploading it as an asset may take this long (FETCH_DEADLINE and
# the asset import), on top of the generate call.
MEDIA_LEASE = 1800.0


def map_status(raw: object) -> Status | None:
    """Scenario's status word as a relay status; unknown non-terminal words count as running."""
    if raw is None:
        return None
    word = str(raw).strip().lower()
    return STATUS.get(word, Status.PROCESSING if word else None)


def _bad_answer(message: str, body: Any = None, *, retryable: bool) -> ProviderError:
    return ProviderError(
        f"scenario: {message}",
        code="provider_bad_answer",
        http_status=502,
        retryable=retryable,
        body=body,
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def cost_of(body: dict[str, Any]) -> float | None:
    """Creative units: `creativeUnitsCost` beside the job, else the job's `billing.cuCost`."""
    cost = _number(body.get("creativeUnitsCost"))
    job = body.get("job")
    if cost is None and isinstance(job, dict) and isinstance(job.get("billing"), dict):
        cost = _number(job["billing"].get("cuCost"))
    return cost


def _error_of(job: dict[str, Any]) -> str | None:
    """`metadata.error` with its `metadata.hint`; the docs' own example reads `job.error`."""
    metadata = job.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    error = metadata.get("error") or job.get("error")
    if not error:
        return None
    message = error if isinstance(error, str) else str(error)
    hint = metadata.get("hint")
    return f"{message} (hint: {hint})" if hint else message


def _media_type(url: str, mime_type: object, model: Model | None) -> str:
    if isinstance(mime_type, str) and "/" in mime_type:
        return mime_type
    ext = posixpath.splitext(urlsplit(url).path)[1].lower()
    guessed = mimetypes.guess_type(f"x{ext}")[0] if ext else None
    if guessed:
        return guessed
    return _DEFAULT_MEDIA_TYPE.get(model.media_type, "") if model else "application/octet-stream"


class Scenario:
    """Submits to `/v1/generate/custom/{modelId}`; polls `/v1/jobs/{jobId}` (no webhooks)."""

    name = "scenario"
    accepts_callbacks = False
    fetches_media = True

    def __init__(
        self,
        client: outbound.Client,
        base_url: str,
        api_key: str,
        api_secret: str,
        project_id: str | None,
        *,
        media_client: outbound.Client | None = None,
        allow_private_media: bool = False,
        resolve: netguard.Resolver | None = None,
        max_image_bytes: int = media.MAX_IMAGE_BYTES,
        max_video_bytes: int = media.MAX_VIDEO_BYTES,
        upload_poll_interval: float = 0.5,
        upload_timeout: float = 600.0,
    ) -> None:
        self._client = client
        self._media_client = media_client or client
        self._base = base_url.rstrip("/")
        self._auth = outbound.basic_auth(api_key, api_secret)
        self._project_id = project_id
        self._params = {"projectId": project_id} if project_id else {}
        self._allow_private_media = allow_private_media
        self._resolve = resolve
        self._max_bytes = {"image": max_image_bytes, "video": max_video_bytes}
        self._upload_poll_interval = upload_poll_interval
        self._upload_timeout = upload_timeout

    def map_status(self, raw: object) -> Status | None:
        """Scenario's status word as a relay status (see STATUS)."""
        return map_status(raw)

    def callback_url(self, public_url: str, token: str) -> str:
        """Never asked: Scenario sends no callbacks."""
        raise ProviderError(
            "scenario: callbacks are not accepted",
            code="callbacks_not_accepted",
            http_status=404,
            retryable=False,
        )

    def parse_callback(self, body: Any) -> CallbackReport:
        """Scenario sends no callbacks: nothing in a body counts."""
        return CallbackReport(status=None)

    def first_poll_delay(self, settings: Settings) -> float:
        """Polled from the start: the first poll comes after RELAY_POLL_MIN."""
        return settings.poll_min

    def submission_lease(self, model: Model, params: dict[str, Any], settings: Settings) -> float:
        """A media URL is fetched and uploaded before the generate call: that takes longer."""
        lease = call_lease(settings)
        if catalog.is_http_url(str(params.get(model.media_param, ""))):
            lease += MEDIA_LEASE
        return lease

    async def _get(self, path: str, job: Job, *, attempts: int = 3) -> outbound.Response:
        url = self._base + path
        ids = {"job": job.id}
        return await with_retries(
            lambda: self._client.get(url, params=self._params, headers=self._auth, ids=ids),
            self.name,
            attempts=attempts,
        )

    async def _with_asset(self, model: Model, params: dict[str, Any]) -> dict[str, Any]:
        """The params with a media URL replaced by the id of the asset it was uploaded as."""
        value = params.get(model.media_param)
        if not isinstance(value, str) or not catalog.is_http_url(value):
            return dict(params)
        kind = model.media_type
        fetched = await media.fetch(
            self._media_client,
            value,
            kind=kind,
            max_bytes=self._max_bytes[kind],
            allow_private=self._allow_private_media,
            resolve=self._resolve,
        )
        asset_id = await media.upload(
            self._client,
            self._base,
            self._auth,
            self._project_id,
            fetched,
            kind,
            poll_interval=self._upload_poll_interval,
            import_timeout=self._upload_timeout,
        )
        return {**params, model.media_param: asset_id}

    async def _generate(
        self, model: Model, payload: dict[str, Any], *, dry_run: bool
    ) -> tuple[outbound.Response, Any]:
        url = self._base + model.path
        query = {**self._params, "dryRun": "true"} if dry_run else self._params
        response = await with_retries(
            lambda: self._client.post(url, json=payload, params=query, headers=self._auth),
            self.name,
        )
        return response, body_of(response)

    async def submit(
        self, model: Model, params: dict[str, Any], callback_url: str | None
    ) -> Report:
        """Upload a media URL if one is given, then POST the generate request as given."""
        del callback_url  # Scenario has no webhooks: its jobs are polled
        payload = await self._with_asset(model, params)
        response, body = await self._generate(model, payload, dry_run=False)
        job = body.get("job") if isinstance(body, dict) else None
        job_id = job.get("jobId") if isinstance(job, dict) else None
        if not isinstance(body, dict) or not isinstance(job, dict) or not job_id:
            raise ProviderError(
                "scenario: the answer to the submission carries no jobId",
                code="provider_bad_answer",
                http_status=502,
                retryable=False,
                provider_status=response.status_code,
                body=body,
            )
        raw_status = str(job.get("status") or "queued")
        return Report(
            status=map_status(raw_status) or jobs.Status.QUEUED,
            raw_status=raw_status,
            progress=jobs.clamp_progress(job.get("progress")),
            cost=cost_of(body),
            provider_job_id=str(job_id),
        )

    async def estimate(self, model: Model, params: dict[str, Any]) -> Estimate | None:
        """Scenario's dry run: the creative units the request would cost, and no job."""
        # Media URLs are uploaded first: the price depends on the media (a video's length).
        payload = await self._with_asset(model, params)
        _, body = await self._generate(model, payload, dry_run=True)
        cost = cost_of(body) if isinstance(body, dict) else None
        return Estimate(cost=cost, input=payload, provider_answer=body)

    async def fetch_status(self, job: Job) -> Report:
        """GET the job once (the poller backs off); on success resolve its assets to URLs."""
        if not job.provider_job_id:
            raise ProviderError(
                "scenario: the job has no jobId yet",
                code="provider_no_id",
                http_status=409,
                retryable=False,
            )
        response = await self._get(f"/v1/jobs/{job.provider_job_id}", job, attempts=1)
        body = body_of(response)
        answer = body.get("job") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(answer, dict):
            raise _bad_answer("the job answer carries no job object", body, retryable=True)
        raw_status = str(answer.get("status") or "")
        status = map_status(raw_status)
        if status is None:
            raise _bad_answer("the job answer carries no status", body, retryable=True)
        outputs: tuple[dict[str, str], ...] = ()
        error = None
        if status is jobs.Status.SUCCEEDED:
            outputs = await self._outputs(answer, job)
        elif status.terminal:
            error = _error_of(answer)
        return Report(
            status=status,
            raw_status=raw_status,
            progress=jobs.clamp_progress(answer.get("progress")),
            outputs=outputs,
            error=error,
            cost=cost_of(body),
            provider_job_id=str(answer.get("jobId") or job.provider_job_id),
        )

    async def _outputs(self, answer: dict[str, Any], job: Job) -> tuple[dict[str, str], ...]:
        metadata = answer.get("metadata")
        asset_ids = metadata.get("assetIds") if isinstance(metadata, dict) else None
        if not isinstance(asset_ids, list) or not asset_ids:
            # Retryable: the poller asks again, in case the ids are written after the status.
            raise _bad_answer("the job succeeded without metadata.assetIds", answer, retryable=True)
        return tuple(await asyncio.gather(*(self._output(str(a), job) for a in asset_ids)))

    async def _output(self, asset_id: str, job: Job) -> dict[str, str]:
        """An asset's signed, temporary URL: kept exactly as given, query string and all."""
        model = catalog.MODELS.get(job.model)
        response = await self._get(f"/v1/assets/{asset_id}", job, attempts=1)
        body = body_of(response)
        asset = body.get("asset") if isinstance(body, dict) else None
        url = asset.get("url") if isinstance(asset, dict) else None
        if not isinstance(asset, dict) or not isinstance(url, str) or not url:
            raise _bad_answer(f"asset {asset_id} has no url", body, retryable=True)
        return {"url": url, "media_type": _media_type(url, asset.get("mimeType"), model)}
