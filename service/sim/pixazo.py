"""Loopback Pixazo SeedVR simulator: generate, status, prediction, callbacks, failure injection."""

from __future__ import annotations

import asyncio
import collections
import http
import json
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from service.sim import media

MODEL_ID = "seedvr-upscale"
TERMINAL = frozenset({"COMPLETED", "FAILED", "ERROR"})
FAILED_TEXT = "Upscaling failed: the input could not be processed (simulated)"
ERROR_TEXT = "Internal model error (simulated); not charged"

# Bodies as in provider-docs/pixazo-seedvr-upscale.md "Error Responses"; 402 is verbatim.
_ERROR_BODIES: dict[int, dict[str, str]] = {
    400: {"error": "Bad Request", "message": "The request is invalid."},
    401: {
        "error": "Unauthorized",
        "message": "Access denied due to missing or invalid subscription key.",
    },
    402: {"error": "Insufficient Balance", "message": "Your wallet does not have enough balance."},
    403: {"error": "Forbidden", "message": "This subscription may not use this API."},
    429: {"error": "Too Many Requests", "message": "Rate limit is exceeded. Try again later."},
    500: {"error": "Internal Server Error"},
}


@dataclass(slots=True)
class RecordedRequest:
    """One request the simulator received; header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    at: float


@dataclass(slots=True)
class CallbackAttempt:
    """One callback POST: `http_status` is the receiver's answer, `error` a transport failure."""

    url: str
    request_id: str
    status: str
    http_status: int | None
    error: str | None
    at: float


@dataclass(slots=True)
class SimJob:
    """One upscale request and where its lifecycle stands."""

    request_id: str
    kind: str
    input: dict[str, Any]
    media_url: str
    webhook_url: str | None
    outcome: str
    base_url: str
    status: str = "QUEUED"
    output: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    completed_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    last_callback: asyncio.Task[None] | None = field(default=None, repr=False)

    def default_output(self) -> dict[str, Any]:
        """The output a COMPLETED job of this kind reports."""
        ext, media_type = ("png", "image/png") if self.kind == "image" else ("mp4", "video/mp4")
        url = f"{self.base_url}/outputs/{self.request_id}/output.{ext}"
        return {"media_url": [url], "media_type": media_type}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _error(status: int, message: str | None = None, retry_after: float | None = None) -> Response:
    phrase = http.HTTPStatus(status).phrase
    body = dict(_ERROR_BODIES.get(status, {"error": phrase}))
    if message is not None:
        body["message"] = message
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


class PixazoSim:
    """Pixazo SeedVR upscale API on loopback, following provider-docs/pixazo-seedvr-upscale.md."""

    def __init__(
        self,
        *,
        api_key: str = "sim-pixazo-key",
        queue_seconds: float = 0.05,
        process_seconds: float = 0.2,
        base_url: str = "",
    ) -> None:
        self.api_key = api_key
        self.queue_seconds = queue_seconds
        self.process_seconds = process_seconds
        self.base_url = base_url
        self.lose_callbacks = False
        self.duplicate_callbacks = False
        self.callback_delay = 0.0
        self.callback_before_answer = False
        self.callback_timeout = 5.0
        self.status_override: dict[str, str] = {}
        # the outputs' media route (/outputs/...): a real PNG of output_dimensions (or fake
        # video bytes), padded to output_size; output_failures 503s first, output_status
        # always, output_delay seconds between 64 KiB chunks
        self.output_dimensions = (64, 48)
        self.output_size: int | None = None
        self.output_failures = 0
        self.output_status: int | None = None
        self.output_delay = 0.0
        self.output_media_type: str | None = None  # the Content-Type it claims, when set
        self.output_requests = 0
        self.output_bodies: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.jobs: dict[str, SimJob] = {}
        self.callbacks_sent: list[CallbackAttempt] = []
        self.callbacks_lost = 0
        # per request id: the most status requests in flight at once (more than 1: a double poll)
        self.polls_at_once: dict[str, int] = {}
        self._polling: collections.Counter[str] = collections.Counter()
        self._failures: collections.deque[tuple[int, float | None]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._app = Starlette(
            routes=[
                Route(
                    "/seedvr-upscale/v1/upscale-image/generate",
                    self._generate_image,
                    methods=["POST"],
                ),
                Route(
                    "/seedvr-upscale/v1/upscale-video/generate",
                    self._generate_video,
                    methods=["POST"],
                ),
                Route(
                    "/seedvr-upscale/v1/upscale-video/prediction",
                    self._prediction,
                    methods=["POST"],
                ),
                Route("/v2/requests/status/{request_id}", self._status, methods=["GET"]),
                Route("/outputs/{request_id}/{name}", self._output, methods=["GET"]),
            ]
        )

    @property
    def app(self) -> Starlette:
        """The Starlette app to pass to `serve()`."""
        return self._app

    async def __aenter__(self) -> PixazoSim:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel pending lifecycles and callbacks, then close the callback client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- failure injection and manual control ---------------------------------------------

    def fail_next(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `count` generate requests with `status` (429 may carry Retry-After)."""
        self._failures.extend([(status, retry_after)] * count)

    def set_status(
        self,
        request_id: str,
        status: str,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Force a job's state and stop its lifecycle; COMPLETED without output gets the default."""
        job = self.jobs[request_id]
        if job.task is not None and job.task is not asyncio.current_task():
            job.task.cancel()
        self._advance(job, status)
        if status == "COMPLETED" and output is None:
            output = job.default_output()
        job.output = output
        job.error = error

    async def send_callback(
        self, request_id: str, body: dict[str, Any] | None = None, url: str | None = None
    ) -> CallbackAttempt:
        """POST `body` (default: the job's current status object) to the job's webhook now."""
        job = self.jobs[request_id]
        target = url or job.webhook_url
        if target is None:
            raise ValueError(f"{request_id} has no X-Webhook-URL")
        return await self._post(
            target, request_id, body if body is not None else self.status_body(request_id)
        )

    def status_body(self, request_id: str) -> dict[str, Any]:
        """The job's status object as the status endpoint and callbacks carry it (no override)."""
        job = self.jobs[request_id]
        return {
            "request_id": job.request_id,
            "status": job.status,
            "model_id": MODEL_ID,
            "error": job.error,
            "output": job.output,
            "created_at": _iso(job.created_at),
            "updated_at": _iso(job.updated_at),
            "completed_at": _iso(job.completed_at),
        }

    # -- routes -------------------------------------------------------------------------

    async def _generate_image(self, request: Request) -> Response:
        return await self._generate(request, "image")

    async def _generate_video(self, request: Request) -> Response:
        return await self._generate(request, "video")

    async def _generate(self, request: Request, kind: str) -> Response:
        body, parsed = await self._receive(request)
        if not self._authorized(request):
            return _error(401)
        if self._failures:
            status, retry_after = self._failures.popleft()
            return _error(status, retry_after=retry_after)
        if not parsed or not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        media_key = f"{kind}_url"
        media_url = body.get(media_key)
        if not isinstance(media_url, str) or not media_url:
            return _error(400, f"'{media_key}' is required.")
        if "sim=fail" in media_url:
            outcome = "FAILED"
        elif "sim=error" in media_url:
            outcome = "ERROR"
        else:
            outcome = "COMPLETED"
        request_id = f"{MODEL_ID}_{uuid.uuid4()}"
        base = self.base_url or str(request.base_url).rstrip("/")
        job = SimJob(
            request_id=request_id,
            kind=kind,
            input=body,
            media_url=media_url,
            webhook_url=request.headers.get("x-webhook-url"),
            outcome=outcome,
            base_url=base,
        )
        self.jobs[request_id] = job
        if self.callback_before_answer:
            await self._lifecycle(job, immediate=True)
        else:
            job.task = self._spawn(self._lifecycle(job, immediate=False))
        answer = {
            "request_id": request_id,
            "status": "QUEUED",
            "polling_url": f"{base}/v2/requests/status/{request_id}",
        }
        return JSONResponse(answer, status_code=202)

    async def _status(self, request: Request) -> Response:
        request_id: str = request.path_params["request_id"]
        self._polling[request_id] += 1
        self.polls_at_once[request_id] = max(
            self.polls_at_once.get(request_id, 0), self._polling[request_id]
        )
        try:
            await self._receive(request)
            if not self._authorized(request):
                return _error(401)
            if request_id not in self.jobs:
                return _error(404, f"Request '{request_id}' not found.")
            return JSONResponse(self._observed(request_id))
        finally:
            self._polling[request_id] -= 1

    async def _prediction(self, request: Request) -> Response:
        body, _ = await self._receive(request)
        if not self._authorized(request):
            return _error(401)
        prediction_id = body.get("prediction_id") if isinstance(body, dict) else None
        if not isinstance(prediction_id, str):
            return _error(400, "'prediction_id' is required.")
        if prediction_id not in self.jobs:
            return JSONResponse(
                {"success": False, "error": "Prediction not found"}, status_code=404
            )
        observed = self._observed(prediction_id)
        answer = {
            "success": True,
            "id": prediction_id,
            "status": str(observed["status"]).lower(),
            "input": self.jobs[prediction_id].input,
            "created_at": observed["created_at"],
        }
        return JSONResponse(answer)

    async def _output(self, request: Request) -> Response:
        await self._receive(request)
        request_id: str = request.path_params["request_id"]
        if request_id not in self.jobs:
            return _error(404, "No such object.")
        name: str = request.path_params["name"]
        media_type = media.media_type_for(name)
        claimed = self.output_media_type or media_type
        self.output_requests += 1
        if self.output_failures > 0:
            self.output_failures -= 1
            return _error(503)
        if self.output_status is not None:
            return _error(self.output_status)
        if media_type == "image/png":
            width, height = self.output_dimensions
            body = media.png_bytes(width, height, self.output_size or 0, seed=request_id)
        else:
            body = media.fake_bytes(media_type, self.output_size or 2048, seed=request_id)
        self.output_bodies[request_id] = body
        if not self.output_delay:
            return Response(body, media_type=claimed)

        async def slowly() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]
                await asyncio.sleep(self.output_delay)

        # chunked, no length announced: the receiver finds the size as it reads
        return StreamingResponse(slowly(), media_type=claimed)

    # -- internals ----------------------------------------------------------------------

    async def _receive(self, request: Request) -> tuple[Any, bool]:
        raw = await request.body()
        body: Any = None
        parsed = False
        if raw:
            try:
                body = json.loads(raw)
                parsed = True
            except ValueError:
                body = None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                headers=dict(request.headers),
                json=body,
                at=time.monotonic(),
            )
        )
        return body, parsed

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("ocp-apim-subscription-key") == self.api_key

    def _observed(self, request_id: str) -> dict[str, Any]:
        body = self.status_body(request_id)
        forced = self.status_override.get(request_id)
        if forced is not None:
            body["status"] = forced
            if forced != "COMPLETED":
                body["output"] = None
            if forced not in TERMINAL:
                body["completed_at"] = None
        return body

    def _advance(self, job: SimJob, status: str) -> None:
        now = datetime.now(UTC)
        job.status = status
        job.updated_at = now
        job.completed_at = now if status in TERMINAL else None

    async def _lifecycle(self, job: SimJob, *, immediate: bool) -> None:
        if not immediate:
            await asyncio.sleep(self.queue_seconds)
        self._advance(job, "PROCESSING")
        self._changed(job)
        if not immediate:
            await asyncio.sleep(self.process_seconds)
        self._advance(job, job.outcome)
        if job.outcome == "COMPLETED":
            job.output = job.default_output()
        else:
            job.error = FAILED_TEXT if job.outcome == "FAILED" else ERROR_TEXT
        last = self._changed(job)
        if immediate and last is not None:
            await asyncio.wait({last})

    def _changed(self, job: SimJob) -> asyncio.Task[None] | None:
        if job.webhook_url is None:
            return None
        if self.lose_callbacks:
            self.callbacks_lost += 1
            return None
        body = self.status_body(job.request_id)
        task = self._spawn(self._callback(job.webhook_url, body, job.last_callback))
        job.last_callback = task
        return task

    async def _callback(
        self, url: str, body: dict[str, Any], previous: asyncio.Task[None] | None
    ) -> None:
        if self.callback_delay > 0:
            await asyncio.sleep(self.callback_delay)
        if previous is not None:
            # One job's callbacks go out in the order its status changed.
            await asyncio.wait({previous})
        await self._post(url, body["request_id"], body)
        if self.duplicate_callbacks:
            await self._post(url, body["request_id"], body)

    async def _post(self, url: str, request_id: str, body: dict[str, Any]) -> CallbackAttempt:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.callback_timeout, headers={"User-Agent": "pixazo-sim"}
            )
        http_status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(url, json=body)
            http_status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempt = CallbackAttempt(
            url=url,
            request_id=request_id,
            status=str(body.get("status")),
            http_status=http_status,
            error=error,
            at=time.monotonic(),
        )
        self.callbacks_sent.append(attempt)
        return attempt

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
