"""The Scenario adapter and media upload against the Scenario and media sims over loopback HTTP."""

from __future__ import annotations

import base64
import dataclasses
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service import catalog, outbound
from service.jobs import Status
from service.providers.base import ProviderError
from service.providers.scenario import Scenario, media
from service.sim import scenario as scenario_sim
from service.sim.media import MediaSim, fake_bytes
from service.sim.scenario import ScenarioSim
from service.sim.server import serve
from service.store import Job

SEEDVR = catalog.MODELS["scenario/seedvr2-video"]
MAGNIFIC = catalog.MODELS["scenario/magnific-video-creative"]
UPSCALE = catalog.MODELS["scenario/upscale-v3"]
BASIC = "Basic " + base64.b64encode(b"sim-key:sim-secret").decode()
PROJECT = "proj_42"
MiB = 1024 * 1024


@dataclasses.dataclass
class Seen:
    """One request the Scenario sim received."""

    method: str
    path: str
    query: str
    authorization: str | None


async def _stream(request: Request) -> Response:
    """Media without Content-Length, or with a given type, or a redirect."""
    name = request.path_params["name"]
    if name.startswith("redirect"):
        return RedirectResponse(f"/media/{name.removeprefix('redirect-')}", status_code=302)
    if name.startswith("loop"):
        return RedirectResponse(f"/stream/{name}", status_code=302)
    size = int(request.query_params.get("size", "3000"))
    data = fake_bytes("image/png", size)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, size, 1000):
            yield data[start : start + 1000]

    content_type = request.query_params.get("type", "image/png")
    return StreamingResponse(chunks(), media_type=content_type)


async def _bad(request: Request) -> Response:
    """A Scenario that answers a generate request with no jobId."""
    return JSONResponse({"job": {"status": "queued"}})


@dataclasses.dataclass
class Env:
    sim: ScenarioSim
    media: MediaSim
    url: str
    seen: list[Seen]
    make: Callable[..., Scenario]

    def media_url(self, name: str, size: int = 2048) -> str:
        return f"{self.url}/media/{name}?size={size}"

    def scenario_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/v1/")]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    sim = ScenarioSim(queue_seconds=0.02, process_seconds=0.05)
    media_sim = MediaSim(slow_seconds=0.05)
    extra = Starlette(
        routes=[
            Route("/stream/{name}", _stream),
            Route("/bad/v1/generate/custom/{model}", _bad, methods=["POST"]),
        ]
    )
    seen: list[Seen] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if path.startswith("/media/"):
            await media_sim.app(scope, receive, send)
        elif path.startswith(("/stream/", "/bad/")):
            await extra(scope, receive, send)
        else:
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization")
            query = scope.get("query_string", b"").decode()
            seen.append(
                Seen(scope["method"], path, query, auth.decode() if auth is not None else None)
            )
            await sim.app(scope, receive, send)

    clients: list[outbound.Client] = []
    async with serve(route) as url:
        sim.base_url = url

        def make(**kw: Any) -> Scenario:
            client = outbound.provider_client(10.0, ssl.create_default_context())
            clients.append(client)
            options: dict[str, Any] = {
                "allow_private_media": True,
                "upload_poll_interval": 0.01,
                "upload_timeout": 5.0,
            }
            options.update(kw)
            return Scenario(
                client,
                options.pop("base_url", url),
                options.pop("api_key", "sim-key"),
                options.pop("api_secret", "sim-secret"),
                options.pop("project_id", PROJECT),
                **options,
            )

        try:
            yield Env(sim, media_sim, url, seen, make)
        finally:
            for client in clients:
                await client.aclose()


def make_job(**overrides: Any) -> Job:
    now = time.time()
    values: dict[str, Any] = {
        "seq": 1,
        "id": "job_relay_1",
        "model": SEEDVR.id,
        "provider": "scenario",
        "status": Status.QUEUED,
        "progress": 0.0,
        "input": {},
        "metadata": {},
        "outputs": [],
        "error": None,
        "provider_job_id": None,
        "cost": None,
        "webhook": None,
        "webhook_events": None,
        "created_at": now,
        "updated_at": now,
        "finished_at": None,
        "next_poll_at": None,
        "poll_attempt": 0,
        "poll_errors": 0,
        "callback_status": None,
    }
    values.update(overrides)
    return Job(**values)


class Clock:
    """A settable clock for the sim, so a job's status follows the test, not the wall."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- submit ---------------------------------------------------------------------------------


async def test_submit_with_an_asset_id_sends_the_params_as_given(env: Env) -> None:
    asset_id = env.sim.add_asset(mime_type="video/mp4")
    params = {"video": asset_id, "upscaleFactor": 3, "outputQuality": "medium"}
    report = await env.make().submit(SEEDVR, params, "https://relay.example/ignored")
    assert report.status is Status.QUEUED
    assert report.raw_status == "queued"
    assert report.cost == 20
    assert report.provider_job_id in env.sim.jobs
    [call] = env.sim.generate_calls
    assert call.json == params  # only the keys given: no defaults added
    assert call.project_id == PROJECT
    assert not call.dry_run
    [seen] = env.scenario_calls()
    assert seen.authorization == BASIC
    assert "ignored" not in seen.query
    assert env.media.requests == []


async def test_submit_without_a_project_sends_no_project_id(env: Env) -> None:
    asset_id = env.sim.add_asset(mime_type="video/mp4")
    await env.make(project_id=None).submit(MAGNIFIC, {"video": asset_id}, None)
    assert env.sim.generate_calls[0].project_id is None
    assert env.scenario_calls()[0].query == ""


async def test_submit_with_a_small_image_url_creates_an_asset(env: Env) -> None:
    url = env.media_url("photo.png", 4096)
    report = await env.make().submit(UPSCALE, {"image": url, "upscaleFactor": 2}, None)
    assert report.cost == 5
    [call] = env.sim.generate_calls
    asset_id = call.json["image"]
    assert call.json == {"image": asset_id, "upscaleFactor": 2}
    asset = env.sim.assets[asset_id]
    assert asset.data == fake_bytes("image/png", 4096, seed="photo.png")
    assert (asset.mime_type, asset.name) == ("image/png", "photo.png")
    assert env.sim.request_count["asset_create"] == 1
    assert env.sim.request_count["upload_create"] == 0
    for seen in env.scenario_calls():
        assert seen.authorization == BASIC
        assert f"projectId={PROJECT}" in seen.query


@pytest.mark.parametrize(
    ("model", "name", "size", "mime", "parts"),
    [
        (SEEDVR, "clip.mp4", 6 * MiB + 12345, "video/mp4", 2),
        (MAGNIFIC, "small.mov", 3000, "video/quicktime", 1),
        (UPSCALE, "huge.png", 6_100_000, "image/png", 2),
    ],
    ids=["video-two-parts", "video-one-part", "large-image"],
)
async def test_videos_and_large_images_take_the_multipart_upload(
    env: Env, model: catalog.Model, name: str, size: int, mime: str, parts: int
) -> None:
    report = await env.make().submit(model, {model.media_param: env.media_url(name, size)}, None)
    [call] = env.sim.generate_calls
    asset = env.sim.assets[call.json[model.media_param]]
    assert asset.data == fake_bytes(mime, size, seed=name)
    assert (asset.mime_type, asset.name) == (mime, name)
    [upload] = env.sim.uploads.values()
    assert (upload.kind, upload.part_count, upload.file_size) == (model.media_type, parts, size)
    assert env.sim.request_count["asset_create"] == 0
    assert env.sim.request_count["upload_part"] == parts
    assert env.sim.request_count["upload_action"] == 1
    assert upload.job_id is not None and upload.job_id in env.sim.poll_log
    assert report.provider_job_id != upload.job_id
    for seen in env.seen:
        if seen.path.startswith("/upload-parts/"):
            assert seen.authorization is None  # pre-signed: no credentials sent
            assert seen.query == ""
        else:
            assert seen.authorization == BASIC
            assert f"projectId={PROJECT}" in seen.query


async def test_an_image_scenario_finds_too_large_for_an_asset_falls_back_to_upload(
    env: Env,
) -> None:
    env.sim.max_asset_bytes = 1000
    await env.make().submit(UPSCALE, {"image": env.media_url("photo.png", 2048)}, None)
    assert env.sim.request_count["asset_create"] == 1
    assert env.sim.request_count["upload_create"] == 1
    asset = env.sim.assets[env.sim.generate_calls[0].json["image"]]
    assert asset.data == fake_bytes("image/png", 2048, seed="photo.png")


async def test_an_upload_that_never_becomes_an_asset_times_out(env: Env) -> None:
    env.sim.queue_seconds = 30  # the upload's job validates for as long as a job queues
    with pytest.raises(ProviderError) as caught:
        await env.make(upload_timeout=0.1).submit(
            SEEDVR, {"video": env.media_url("clip.mp4")}, None
        )
    assert (caught.value.code, caught.value.http_status) == ("provider_timeout", 504)
    assert env.sim.generate_calls == []


async def test_redirects_are_followed_and_octet_stream_is_typed_by_extension(env: Env) -> None:
    adapter = env.make()
    await adapter.submit(UPSCALE, {"image": f"{env.url}/stream/redirect-r.png?size=999"}, None)
    await adapter.submit(
        UPSCALE, {"image": f"{env.url}/stream/pic.png?type=application/octet-stream"}, None
    )
    first, second = (env.sim.assets[c.json["image"]] for c in env.sim.generate_calls)
    assert first.data == fake_bytes("image/png", 2048, seed="r.png")
    assert second.mime_type == "image/png"
    assert second.data == fake_bytes("image/png", 3000)


async def _media_error(env: Env, model: catalog.Model, url: str, **kw: Any) -> ProviderError:
    with pytest.raises(media.MediaError) as caught:
        await env.make(**kw).submit(model, {model.media_param: url}, None)
    assert not caught.value.retryable
    assert env.scenario_calls() == []  # refused before any Scenario call
    return caught.value


async def test_media_over_the_limit_is_refused_before_scenario_is_called(env: Env) -> None:
    # Content-Length says so first ...
    error = await _media_error(env, UPSCALE, env.media_url("a.png", 2048), max_image_bytes=1000)
    assert (error.http_status, error.code) == (413, "media_too_large")
    error = await _media_error(env, SEEDVR, env.media_url("a.mp4", 2048), max_video_bytes=2047)
    assert error.code == "media_too_large"
    # ... and without one, the count while streaming stops the download.
    error = await _media_error(
        env, UPSCALE, f"{env.url}/stream/a.png?size=5000", max_image_bytes=1500
    )
    assert (error.http_status, error.code) == (413, "media_too_large")


@pytest.mark.parametrize(
    ("model", "path"),
    [
        (UPSCALE, "/media/notes.txt"),
        (UPSCALE, "/media/clip.mp4"),
        (SEEDVR, "/media/photo.png"),
        (UPSCALE, "/stream/blob.bin?type=application/octet-stream"),
        (UPSCALE, "/stream/x.png?type=text/html"),
    ],
)
async def test_media_of_the_wrong_type_is_refused(
    env: Env, model: catalog.Model, path: str
) -> None:
    error = await _media_error(env, model, env.url + path)
    assert (error.http_status, error.code) == (422, "media_wrong_type")
    assert f"{model.media_type}/*" in error.message


async def test_unreachable_media(env: Env) -> None:
    error = await _media_error(env, UPSCALE, env.media_url("missing.png") + "&token=secret")
    assert (error.http_status, error.code) == (422, "media_unreachable")
    assert "HTTP 404" in error.message
    assert "secret" not in error.message  # the query string may be a credential
    error = await _media_error(env, UPSCALE, f"{env.url}/stream/loop.png")
    assert error.code == "media_unreachable"
    assert "redirects more than" in error.message
    error = await _media_error(env, UPSCALE, "http://127.0.0.1:9/nothing.png")
    assert error.code == "media_unreachable"


async def test_private_media_targets_are_refused(env: Env) -> None:
    error = await _media_error(env, UPSCALE, env.media_url("photo.png"), allow_private_media=False)
    assert (error.http_status, error.code) == (422, "media_refused")
    assert "loopback" in error.message
    assert env.media.requests == []


async def test_generate_500_is_retried(env: Env) -> None:
    env.sim.fail_next_generate(500)
    asset_id = env.sim.add_asset(mime_type="video/mp4")
    report = await env.make().submit(SEEDVR, {"video": asset_id}, None)
    assert len(env.sim.generate_calls) == 2
    assert report.provider_job_id in env.sim.jobs


async def test_generate_400_is_not_retried(env: Env) -> None:
    with pytest.raises(ProviderError) as caught:
        await env.make().submit(SEEDVR, {"video": "asset_unknown"}, None)
    assert (caught.value.code, caught.value.retryable) == ("provider_bad_request", False)
    assert len(env.sim.generate_calls) == 1


async def test_an_answer_without_job_id_is_a_bad_answer(env: Env) -> None:
    with pytest.raises(ProviderError) as caught:
        await env.make(base_url=f"{env.url}/bad").submit(SEEDVR, {"video": "asset_x"}, None)
    assert (caught.value.code, caught.value.http_status) == ("provider_bad_answer", 502)


async def test_wrong_credentials(env: Env) -> None:
    adapter = env.make(api_secret="wrong")
    with pytest.raises(ProviderError) as caught:
        await adapter.submit(SEEDVR, {"video": env.sim.add_asset(mime_type="video/mp4")}, None)
    assert caught.value.code == "provider_unauthorized"
    assert not caught.value.retryable
    with pytest.raises(ProviderError) as caught:
        await adapter.submit(UPSCALE, {"image": env.media_url("photo.png")}, None)
    assert caught.value.code == "provider_unauthorized"
    with pytest.raises(ProviderError) as caught:
        await adapter.fetch_status(make_job(provider_job_id="job_x"))
    assert caught.value.code == "provider_unauthorized"


# -- estimate -------------------------------------------------------------------------------


async def test_dry_run_returns_the_cost_and_creates_no_job(env: Env) -> None:
    adapter = env.make()
    asset_id = env.sim.add_asset(mime_type="video/mp4")
    answer = await adapter.estimate(MAGNIFIC, {"video": asset_id, "turbo": True})
    assert answer is not None
    assert answer.cost == 40
    assert answer.input == {"video": asset_id, "turbo": True}
    assert answer.provider_answer["creativeUnitsCost"] == 40
    answer = await adapter.estimate(UPSCALE, {"image": env.media_url("photo.png")})
    assert answer is not None
    assert answer.cost == 5
    assert answer.input["image"] in env.sim.assets  # uploaded: the price depends on it
    assert env.sim.jobs == {}
    assert [c.dry_run for c in env.sim.generate_calls] == [True, True]
    assert all(c.project_id == PROJECT for c in env.sim.generate_calls)


# -- fetch_status ---------------------------------------------------------------------------


async def _submitted(env: Env, model: catalog.Model = SEEDVR) -> tuple[Scenario, Job, Clock]:
    clock = Clock()
    env.sim.clock = clock
    adapter = env.make()
    kind = "video/mp4" if model.media_type == "video" else "image/png"
    report = await adapter.submit(
        model, {model.media_param: env.sim.add_asset(mime_type=kind)}, None
    )
    return adapter, make_job(model=model.id, provider_job_id=report.provider_job_id), clock


@pytest.mark.parametrize("running", ["processing", "in-progress"])
async def test_a_job_goes_queued_processing_succeeded(env: Env, running: str) -> None:
    env.sim.processing_status = running
    env.sim.outputs_per_job = 2
    adapter, job, clock = await _submitted(env)
    report = await adapter.fetch_status(job)
    assert (report.status, report.raw_status, report.progress) == (Status.QUEUED, "queued", 0)
    clock.now += env.sim.queue_seconds + env.sim.process_seconds / 2
    report = await adapter.fetch_status(job)
    assert (report.status, report.raw_status) == (Status.PROCESSING, running)
    assert report.progress == pytest.approx(0.5)
    assert report.outputs == ()
    clock.now += 10
    report = await adapter.fetch_status(job)
    assert report.status is Status.SUCCEEDED
    assert (report.progress, report.cost, report.error) == (1.0, 20, None)
    asset_ids = env.sim.jobs[str(job.provider_job_id)].asset_ids
    assert [o["url"].split("?")[0].rsplit("/", 1)[1] for o in report.outputs] == asset_ids
    async with httpx.AsyncClient() as client:
        for output in report.outputs:
            assert output["media_type"] == "video/mp4"
            assert "&Signature=abc%2Bdef" in output["url"]  # kept exactly as given
            download = await client.get(output["url"])
            assert download.status_code == 200, download.text
    assert len(env.sim.poll_log[str(job.provider_job_id)]) == 3


@pytest.mark.parametrize("outcome", ["failure", "failed"])
async def test_a_failed_job_carries_the_error_and_hint(env: Env, outcome: str) -> None:
    env.sim.next_outcomes.append(outcome)
    adapter, job, clock = await _submitted(env, UPSCALE)
    clock.now += 10
    report = await adapter.fetch_status(job)
    assert (report.status, report.raw_status) == (Status.FAILED, outcome)
    expected = f"{scenario_sim.FAILURE_ERROR} (hint: {scenario_sim.FAILURE_HINT})"
    assert report.error == expected
    assert report.outputs == ()
    assert report.cost == 5
    assert env.sim.request_count["asset"] == 0


async def test_a_canceled_job(env: Env) -> None:
    env.sim.next_outcomes.append("canceled")
    adapter, job, clock = await _submitted(env)
    clock.now += 10
    report = await adapter.fetch_status(job)
    assert (report.status, report.raw_status, report.outputs) == (Status.CANCELED, "canceled", ())


@pytest.mark.parametrize("retry_after", [2, None])
async def test_a_429_on_poll_is_retryable_and_tried_once(env: Env, retry_after: int | None) -> None:
    adapter, job, _ = await _submitted(env)
    env.sim.burst_429(2, retry_after=retry_after)
    with pytest.raises(ProviderError) as caught:
        await adapter.fetch_status(job)
    assert (caught.value.code, caught.value.retryable) == ("provider_rate_limited", True)
    assert caught.value.retry_after == (None if retry_after is None else float(retry_after))
    assert len(env.sim.poll_log[str(job.provider_job_id)]) == 1  # the poller does the backoff


async def test_a_job_without_an_id_or_unknown_to_scenario(env: Env) -> None:
    adapter = env.make()
    with pytest.raises(ProviderError) as caught:
        await adapter.fetch_status(make_job())
    assert caught.value.code == "provider_no_id"
    with pytest.raises(ProviderError) as caught:
        await adapter.fetch_status(make_job(provider_job_id="job_unknown"))
    assert caught.value.code == "provider_not_found"
