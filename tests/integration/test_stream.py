"""GET /v1/events/stream: Server-Sent Events read by a real streaming client over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from service import app
from service.http import stream
from tests.conftest import IMAGE_JOB, VIDEO_JOB, Running
from tests.e2e.harness import service
from tests.integration.helpers import until

TERMINAL = {"succeeded", "failed", "canceled"}


async def _frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each SSE frame as {"id", "event", "data", "comments"} (a comment-only frame too)."""
    frame: dict[str, Any] = {"comments": []}
    async for line in response.aiter_lines():
        if line == "":
            if len(frame) > 1 or frame["comments"]:
                yield frame
            frame = {"comments": []}
        elif line.startswith(":"):
            frame["comments"].append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


async def _collect(relay: Running, path: str, **kw: Any) -> list[dict[str, Any]]:
    """Every event frame of a stream that ends by itself (max_seconds)."""
    out = []
    async with relay.client.stream("GET", path, **kw) as response:
        assert response.status_code == 200, await response.aread()
        async for frame in _frames(response):
            if "id" in frame:
                out.append(frame)
    return out


async def _log(relay: Running) -> list[dict[str, Any]]:
    return (await relay.client.get("/v1/events", params={"limit": 500})).json()["data"]


async def _finished_job(relay: Running, body: dict[str, Any] = IMAGE_JOB) -> str:
    job = (await relay.submit(body)).json()
    await relay.wait_status(job["id"], TERMINAL)
    return str(job["id"])


async def test_events_before_and_after_connecting_arrive_in_order(relay: Running) -> None:
    first = await _finished_job(relay)
    before = await _log(relay)
    assert before, "a finished job has events"
    seen: list[dict[str, Any]] = []
    async with relay.client.stream("GET", "/v1/events/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        frames = _frames(response)
        while len(seen) < len(before):
            frame = await asyncio.wait_for(anext(frames), 5)
            if "id" in frame:
                seen.append(frame)
        second = (await relay.submit(VIDEO_JOB)).json()["id"]
        while not any(
            json.loads(f["data"])["job_id"] == second and f["event"] == "job.succeeded"
            for f in seen
        ):
            frame = await asyncio.wait_for(anext(frames), 10)
            if "id" in frame:
                seen.append(frame)
    ids = [int(f["id"]) for f in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for frame in seen:
        event = json.loads(frame["data"])
        assert event["id"] == int(frame["id"]) and event["type"] == frame["event"]
    # the stream showed exactly the log, in the log's order, with the log's bodies
    log = await _log(relay)
    assert [json.loads(f["data"]) for f in seen] == log[: len(seen)]
    assert {json.loads(f["data"])["job_id"] for f in seen} == {first, second}


async def test_resume_with_last_event_id_gets_exactly_the_rest(relay: Running) -> None:
    await _finished_job(relay)
    await _finished_job(relay, VIDEO_JOB)
    log = await _log(relay)
    middle = log[len(log) // 2]["id"]
    rest = await _collect(
        relay,
        "/v1/events/stream",
        params={"after": 0, "max_seconds": 0},
        headers={"Last-Event-ID": str(middle)},
    )
    assert [int(f["id"]) for f in rest] == [e["id"] for e in log if e["id"] > middle]
    # without the header, `after` is the resume point
    by_query = await _collect(
        relay, "/v1/events/stream", params={"after": middle, "max_seconds": 0}
    )
    assert by_query == rest


async def test_filters_by_job_and_type(relay: Running) -> None:
    first = await _finished_job(relay)
    second = await _finished_job(relay, VIDEO_JOB)
    log = await _log(relay)
    path = "/v1/events/stream"
    only_first = await _collect(relay, path, params={"job_id": first, "max_seconds": 0})
    assert [int(f["id"]) for f in only_first] == [e["id"] for e in log if e["job_id"] == first]
    wanted = {"job.queued", "job.succeeded"}
    comma = await _collect(
        relay, path, params={"type": "job.queued,job.succeeded", "max_seconds": 0}
    )
    repeated = await _collect(
        relay, path, params=[("type", "job.queued"), ("type", "job.succeeded"), ("max_seconds", 0)]
    )
    expected = [e["id"] for e in log if e["type"] in wanted]
    assert len(expected) >= 2
    assert [int(f["id"]) for f in comma] == expected == [int(f["id"]) for f in repeated]
    both = await _collect(
        relay, path, params={"job_id": second, "type": "job.succeeded", "max_seconds": 0}
    )
    assert [json.loads(f["data"])["job_id"] for f in both] == [second]
    prefix = await _collect(relay, path, params={"type": "job.*", "max_seconds": 0})
    assert [int(f["id"]) for f in prefix] == [e["id"] for e in log if e["type"].startswith("job.")]


async def test_many_streams_and_a_long_poll_each_see_every_event_at_once(
    relay: Running,
) -> None:
    """Each reader is woken by the commits (a 60 s heartbeat: no timer re-reads for them)."""

    async def follow(done: asyncio.Event) -> list[int]:
        ids: list[int] = []
        async with relay.client.stream(
            "GET", "/v1/events/stream", params={"heartbeat": 60}
        ) as response:
            async for frame in _frames(response):
                if "id" in frame:
                    ids.append(int(frame["id"]))
                    if frame["event"] in {"job.succeeded", "job.failed"}:
                        done.set()
                        return ids
        return ids

    async def long_polls(stop: asyncio.Event) -> None:
        after = 0
        while not stop.is_set():
            page = await relay.client.get("/v1/events", params={"after": after, "wait": 1})
            after = int(page.json()["next_cursor"])

    dones = [asyncio.Event() for _ in range(6)]
    followers = [asyncio.create_task(follow(done)) for done in dones]
    stop = asyncio.Event()
    poller = asyncio.create_task(long_polls(stop))
    await until(lambda: stream.open_streams() == len(dones))
    await relay.submit(IMAGE_JOB)
    streams = await asyncio.wait_for(asyncio.gather(*followers), 10)
    stop.set()
    await poller
    log = [e["id"] for e in await _log(relay)]
    for ids in streams:
        assert ids == log[: len(ids)] and len(ids) >= 2


async def test_keep_alive_comment_while_nothing_flows(relay: Running) -> None:
    started = asyncio.get_running_loop().time()
    comments: list[str] = []
    async with relay.client.stream(
        "GET", "/v1/events/stream", params={"heartbeat": 1, "max_seconds": 3}
    ) as response:
        async for frame in _frames(response):
            comments += frame["comments"]
            if "keep-alive" in comments:
                break
    assert "keep-alive" in comments
    assert asyncio.get_running_loop().time() - started < 2.5


async def test_max_seconds_ends_the_stream(relay: Running) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await relay.client.get("/v1/events/stream", params={"max_seconds": 1})
    assert response.status_code == 200
    assert 0.9 <= loop.time() - started < 3


async def test_bad_parameters_are_refused_before_the_stream_starts(relay: Running) -> None:
    path = "/v1/events/stream"
    cases: list[tuple[dict[str, Any], dict[str, str], str, dict[str, str]]] = [
        ({"after": "abc"}, {}, "invalid_query", {"parameter": "after"}),
        ({"heartbeat": "0"}, {}, "invalid_query", {"parameter": "heartbeat"}),
        ({"heartbeat": "61"}, {}, "invalid_query", {"parameter": "heartbeat"}),
        ({"max_seconds": "-1"}, {}, "invalid_query", {"parameter": "max_seconds"}),
        ({"type": "job succeeded"}, {}, "invalid_query", {"parameter": "type"}),
        ({"job_id": "j" * 129}, {}, "invalid_query", {"parameter": "job_id"}),
        ({}, {"Last-Event-ID": "abc"}, "invalid_header", {"header": "Last-Event-ID"}),
        ({}, {"Last-Event-ID": "9" * 30}, "invalid_header", {"header": "Last-Event-ID"}),
        ({"after": "x"}, {"Last-Event-ID": "3"}, "invalid_query", {"parameter": "after"}),
    ]
    for params, headers, code, details in cases:
        response = await relay.client.get(path, params=params, headers=headers)
        assert response.status_code == 400, (params, headers, response.text)
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == code and error["details"] == details, (params, headers, error)


async def test_the_stream_takes_the_bearer_token(start_relay: Any) -> None:
    relay = await start_relay(RELAY_API_TOKENS="str3am-token")
    async with httpx.AsyncClient(base_url=relay.url) as anonymous:
        refused = await anonymous.get("/v1/events/stream", params={"max_seconds": 0})
        wrong = await anonymous.get(
            "/v1/events/stream",
            params={"max_seconds": 0},
            headers={"Authorization": "Bearer nope"},
        )
    for response in (refused, wrong):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    allowed = await relay.client.get("/v1/events/stream", params={"max_seconds": 0})
    assert allowed.status_code == 200


async def test_a_client_leaving_ends_its_stream(relay: Running) -> None:
    async with relay.client.stream("GET", "/v1/events/stream") as response:
        assert response.status_code == 200
        await until(lambda: stream.open_streams() == 1)
    await until(lambda: stream.open_streams() == 0)


async def test_a_drain_ends_open_streams_at_once(relay: Running) -> None:
    loop = asyncio.get_running_loop()
    async with relay.client.stream("GET", "/v1/events/stream") as response:
        frames = _frames(response)
        await asyncio.wait_for(anext(frames), 5)  # the opening comment: the stream is live
        started = loop.time()
        app.begin_drain(relay.relay)
        rest = [f async for f in frames]
    assert loop.time() - started < 1.0
    assert not any("id" in f for f in rest)
    assert stream.open_streams() == 0


async def test_sigterm_is_not_held_up_by_an_open_stream(tmp_path: Path) -> None:
    async with service(tmp_path, RELAY_SHUTDOWN_GRACE="30") as relay:
        await relay.start()
        async with (
            httpx.AsyncClient(base_url=relay.url, timeout=40) as client,
            client.stream("GET", "/v1/events/stream") as response,
        ):
            frames = _frames(response)
            await asyncio.wait_for(anext(frames), 5)  # the stream is live
            code, seconds = await relay.terminate(limit=40)
            rest = [f async for f in frames]
    assert code == 0
    assert seconds < 5, f"SIGTERM waited {seconds:.1f} s for the stream"
    assert not any("id" in f for f in rest)
