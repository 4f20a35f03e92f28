"""Each adapter's answers to the provider protocol: status words, callbacks, schedule, leases."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import catalog, outbound, providers
from service.config import Settings
from service.jobs import CallbackReport, Status
from service.providers import pixazo
from service.providers.base import Provider, ProviderError
from service.providers.pixazo import Pixazo
from service.providers.scenario import Scenario
from service.providers.scenario import adapter as scenario
from service.sim.server import serve
from service.store import Job

SETTINGS = Settings(callback_grace=7.0, poll_min=0.5, provider_timeout=10.0)
PIXAZO_IMAGE = catalog.MODELS["pixazo/seedvr-image"]
SCENARIO_IMAGE = catalog.MODELS["scenario/upscale-v3"]


# -- Pixazo ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("QUEUED", Status.QUEUED),
        ("queued", Status.QUEUED),
        ("Processing", Status.PROCESSING),
        (" PROCESSING ", Status.PROCESSING),
        ("COMPLETED", Status.SUCCEEDED),
        ("completed", Status.SUCCEEDED),
        ("FAILED", Status.FAILED),
        ("ERROR", Status.FAILED),
        ("error", Status.FAILED),
        ("CANCELED", Status.CANCELED),
        ("CANCELLED", Status.CANCELED),
    ],
)
def test_map_pixazo(raw: str, expected: Status) -> None:
    assert pixazo.map_status(raw) is expected


@pytest.mark.parametrize("raw", ["WHATEVER", "", "   ", None, 3, "DONE"])
def test_map_pixazo_unknown_is_none(raw: object) -> None:
    assert pixazo.map_status(raw) is None


# -- Scenario ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("queued", Status.QUEUED),
        ("in-progress", Status.PROCESSING),
        ("processing", Status.PROCESSING),
        ("success", Status.SUCCEEDED),
        ("failure", Status.FAILED),
        ("failed", Status.FAILED),
        ("canceled", Status.CANCELED),
        ("Success", Status.SUCCEEDED),
        (" FAILURE ", Status.FAILED),
    ],
)
def test_map_scenario(raw: str, expected: Status) -> None:
    assert scenario.map_status(raw) is expected


@pytest.mark.parametrize("raw", ["warming-up-the-gpus", "uploading", "finalizing", "retrying"])
def test_map_scenario_unknown_word_is_still_running(raw: str) -> None:
    # SPEC: terminal statuses are success, failure, canceled; anything else is still running.
    assert scenario.map_status(raw) is Status.PROCESSING


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_map_scenario_nothing_is_none(raw: object) -> None:
    assert scenario.map_status(raw) is None


def test_the_maps_are_the_adapters_own() -> None:
    assert pixazo.STATUS["ERROR"] is Status.FAILED
    assert scenario.STATUS["failure"] is Status.FAILED
    # Scenario's lowercase words mean nothing to Pixazo's map, and the other way round.
    assert pixazo.map_status("in-progress") is None
    assert scenario.map_status("IN_PROGRESS") is Status.PROCESSING  # unknown: still running


# -- callbacks --------------------------------------------------------------------------------


def test_pixazo_callback_is_read_like_its_status_answer() -> None:
    body = {"status": "IN_PROGRESS", "request_id": "req_1", "progress": 45, "extra": [1]}
    assert pixazo.parse_callback(body) == CallbackReport(
        status=Status.PROCESSING, raw_status="IN_PROGRESS", request_id="req_1", progress=0.45
    )
    assert pixazo.parse_callback({"status": "completed"}).status is Status.SUCCEEDED


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "WHATEVER"}, CallbackReport(None, "WHATEVER")),
        ({"status": 3, "request_id": 7}, CallbackReport(None, 3, 7)),
        ({"request_id": "r", "progress": "half"}, CallbackReport(None, None, "r")),
        ([1, 2], CallbackReport(None)),
        ("COMPLETED", CallbackReport(None)),
        (None, CallbackReport(None)),
    ],
)
def test_pixazo_callback_keeps_what_it_cannot_read_as_received(
    body: Any, expected: CallbackReport
) -> None:
    assert pixazo.parse_callback(body) == expected


def test_callbacks_are_parsed_by_the_named_provider_only() -> None:
    body = {"status": "FAILED", "request_id": "req_9"}
    assert providers.parse_callback("pixazo", body) == pixazo.parse_callback(body)
    with pytest.raises(LookupError):
        providers.parse_callback("scenario", body)


# -- the protocol's answers ---------------------------------------------------------------------


async def test_pixazo_waits_for_callbacks_and_leases_the_call_alone() -> None:
    async with outbound.provider_client(10.0, ssl.create_default_context()) as client:
        adapter = Pixazo(client, "http://127.0.0.1:9", "key")
        assert adapter.accepts_callbacks
        url = adapter.callback_url("https://relay.example", "tok.en")
        assert url == "https://relay.example/hooks/pixazo/tok.en"
        assert adapter.first_poll_delay(SETTINGS) == 7.0
        with_url = {"image_url": "https://x.example/a.png"}
        assert adapter.submission_lease(PIXAZO_IMAGE, with_url, SETTINGS) == 60.0
        assert await adapter.estimate(PIXAZO_IMAGE, with_url) is None
        assert adapter.parse_callback({"status": "QUEUED"}).status is Status.QUEUED


async def test_scenario_is_polled_and_leases_the_media_upload() -> None:
    async with outbound.provider_client(10.0, ssl.create_default_context()) as client:
        adapter = Scenario(client, "http://127.0.0.1:9", "key", "secret", None)
        assert not adapter.accepts_callbacks
        with pytest.raises(ProviderError):
            adapter.callback_url("https://relay.example", "tok.en")
        assert adapter.parse_callback({"status": "success"}) == CallbackReport(None)
        assert adapter.first_poll_delay(SETTINGS) == 0.5
        url = {"image": "https://x.example/a.png"}
        assert adapter.submission_lease(SCENARIO_IMAGE, url, SETTINGS) == 60.0 + 1800.0
        assert adapter.submission_lease(SCENARIO_IMAGE, {"image": "asset_1"}, SETTINGS) == 60.0


def _members(cls: type) -> set[str]:
    """A protocol's attributes and methods."""
    return set(cls.__annotations__) | {n for n in vars(cls) if not n.startswith("_")}


def job(request_id: str) -> Job:
    """A queued Pixazo job with the provider's request id."""
    return Job(
        seq=1,
        id="job_relay_1",
        model=PIXAZO_IMAGE.id,
        provider="pixazo",
        status=Status.QUEUED,
        progress=0.0,
        input={},
        metadata={},
        outputs=[],
        error=None,
        provider_job_id=request_id,
        cost=None,
        webhook=None,
        webhook_events=None,
        created_at=0.0,
        updated_at=0.0,
        finished_at=None,
        next_poll_at=None,
        poll_attempt=0,
        poll_errors=0,
        callback_status=None,
    )


async def test_every_catalog_provider_is_built_with_the_whole_protocol() -> None:
    configured = Settings(
        pixazo_api_key=Secret("k"), scenario_api_key=Secret("k"), scenario_api_secret=Secret("s")
    )
    built, clients = providers.build(configured, ssl.create_default_context())
    try:
        assert set(built) == {m.provider for m in catalog.MODELS.values()}
        wanted = _members(Provider)
        assert {"accepts_callbacks", "parse_callback", "first_poll_delay"} <= wanted
        for name, adapter in built.items():
            assert adapter.name == name
            assert all(hasattr(adapter, member) for member in wanted), name
    finally:
        for client in clients:
            await client.aclose()
    assert providers.build(Settings(), ssl.create_default_context()) == ({}, [])


# -- Pixazo's status answer, from a loopback server ---------------------------------------------


async def test_pixazo_status_answer_uses_the_same_map_as_its_callbacks() -> None:
    answers = {
        "req_run": {"status": "running", "progress": 0.3},
        "req_err": {"status": "error", "error": {"code": 5}},
        "req_bad": {"status": "DONE"},
    }

    async def answer(request: Request) -> Response:
        if request.headers.get("ocp-apim-subscription-key") != "key":
            return JSONResponse({"error": "no key"}, status_code=401)
        return JSONResponse(answers[request.path_params["request_id"]])

    app = Starlette(routes=[Route("/v2/requests/status/{request_id}", answer)])
    async with (
        serve(app) as url,
        outbound.provider_client(10.0, ssl.create_default_context()) as client,
    ):
        adapter = Pixazo(client, url, "key")

        running = await adapter.fetch_status(job("req_run"))
        assert (running.status, running.progress) == (Status.PROCESSING, 0.3)
        assert running.status is adapter.parse_callback(answers["req_run"]).status
        failed = await adapter.fetch_status(job("req_err"))
        assert (failed.status, failed.raw_status, failed.error) == (
            Status.FAILED,
            "error",
            "{'code': 5}",
        )
        with pytest.raises(ProviderError) as caught:
            await adapter.fetch_status(job("req_bad"))
        assert caught.value.code == "provider_bad_answer"
        assert adapter.parse_callback(answers["req_bad"]).status is None
