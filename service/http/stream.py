"""GET /v1/events/stream: the global event log pushed as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from service.errors import ApiError
from service.http import deps

if TYPE_CHECKING:
    from service.state import Relay
    from service.store import Store

HEARTBEAT_SECONDS = 15
PAGE = 200
MAX_TYPES = 20
MEDIA_TYPE = "text/event-stream"

AFTER = deps.Query(
    "after", "An event id: only events after it are sent (Last-Event-ID wins).", default=0
)
JOB_ID = deps.Query("job_id", "Only this job's events.", "string")
TYPE = deps.Query(
    "type",
    "Only events of these types: repeat it or give a comma list; `job.*` matches a prefix.",
    "string",
)
HEARTBEAT = deps.Query(
    "heartbeat",
    "Seconds between `: keep-alive` comment lines while no event flows.",
    default=HEARTBEAT_SECONDS,
    minimum=1,
    maximum=60,
)
MAX_SECONDS = deps.Query(
    "max_seconds",
    "End the stream after this many seconds (0: send what is there and end); "
    "absent, it runs until the client leaves or the relay stops.",
    maximum=86_400,
)
LAST_EVENT_ID: deps.Schema = {
    "type": "string",
    "pattern": "^[0-9]+$",
    "description": "Resume after this event id (EventSource sends it); wins over `after`.",
}
_TYPE = re.compile(r"[A-Za-z0-9_.\-]{1,64}(\.\*)?|\*")
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass(slots=True)
class _Hub:
    """One task per store waits on its shared "events" waiter and wakes every stream.

    The waiter is one asyncio.Event that each reader clears: streams clearing it themselves
    could swallow each other's wake-ups. Each stream instead holds the hub's current ticket,
    which is set (and replaced) on the first commit after the stream took it."""

    store: Store
    ticket: asyncio.Event = field(default_factory=asyncio.Event)
    streams: int = 0
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        waiter = self.store.waiter("events")
        while True:
            await waiter.wait()
            waiter.clear()
            ticket, self.ticket = self.ticket, asyncio.Event()
            ticket.set()


_HUBS: dict[int, _Hub] = {}


@contextlib.asynccontextmanager
async def _joined(store: Store) -> AsyncIterator[_Hub]:
    """The store's hub, its task running while at least one stream is open."""
    hub = _HUBS.get(id(store))
    if hub is None or hub.store is not store:
        hub = _HUBS[id(store)] = _Hub(store)
    if hub.task is None:
        hub.task = asyncio.create_task(hub.run(), name="event-stream-hub")
    hub.streams += 1
    try:
        yield hub
    finally:
        hub.streams -= 1
        if hub.streams == 0:
            task, hub.task = hub.task, None
            _HUBS.pop(id(store), None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def open_streams() -> int:
    """How many event streams this process is serving (for tests and metrics)."""
    return sum(hub.streams for hub in _HUBS.values())


def _types(request: Request) -> tuple[str, ...] | None:
    raw = [
        part.strip() for value in request.query_params.getlist("type") for part in value.split(",")
    ]
    names = tuple(dict.fromkeys(p for p in raw if p))
    if not names:
        return None
    for name in names:
        if not _TYPE.fullmatch(name):
            raise ApiError(
                400,
                "invalid_query",
                f"type: {name[:64]!r} is not an event type (letters, digits, _ . -; `job.*`)",
                details={"parameter": "type"},
            )
    if len(names) > MAX_TYPES:
        raise ApiError(
            400,
            "invalid_query",
            f"type: at most {MAX_TYPES} types",
            details={"parameter": "type"},
        )
    return names


def _matches(kind: str, types: tuple[str, ...] | None) -> bool:
    if types is None:
        return True
    for name in types:
        if name == "*" or name == kind or (name.endswith(".*") and kind.startswith(name[:-1])):
            return True
    return False


def _resume_point(request: Request) -> int:
    """Last-Event-ID when sent (an EventSource reconnects with it to the same URL), else after."""
    header = request.headers.get("last-event-id")
    if header is None or header.strip() == "":
        return int(AFTER.read(request))
    value = header.strip()
    if not value.isascii() or not _DIGITS.fullmatch(value) or int(value) > deps.MAX_INT64:
        raise ApiError(
            400,
            "invalid_header",
            f"Last-Event-ID must be an event id in ASCII digits, got {value[:32]!r}",
            details={"header": "Last-Event-ID"},
        )
    AFTER.read(request)  # a bad `after` is refused even when the header overrides it
    return int(value)


def _frame(event: Any) -> bytes:
    data = json.dumps(event.public(), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def _frames(
    relay: Relay,
    after: int,
    job_id: str | None,
    types: tuple[str, ...] | None,
    heartbeat: float,
    max_seconds: int | None,
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    end = None if max_seconds is None else loop.time() + max_seconds
    async with _joined(relay.store) as hub:
        yield b": stream of events after %d\n\n" % after
        beat = loop.time() + heartbeat
        while relay.drain_deadline is None:
            ticket = hub.ticket  # taken before reading: a commit from now on sets it
            events = await relay.store.events(job_id=job_id, after=after, limit=PAGE)
            if events:
                after = events[-1].id
                chunk = b"".join(_frame(e) for e in events if _matches(e.type, types))
                if chunk:
                    yield chunk
                    beat = loop.time() + heartbeat
                if len(events) == PAGE:
                    continue  # more pages waiting
            now = loop.time()
            if end is not None and now >= end:
                return
            if now >= beat:
                yield b": keep-alive\n\n"
                beat = now + heartbeat
            until = beat if end is None else min(beat, end)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ticket.wait(), timeout=max(0.0, until - now))


@deps.operation(
    deps.Operation(
        "The global event log as Server-Sent Events, oldest first, then live",
        {200: ("`id:` the event id, `event:` its type, `data:` the event's JSON", None)},
        query=(AFTER, JOB_ID, TYPE, HEARTBEAT, MAX_SECONDS),
        headers={"Last-Event-ID": LAST_EVENT_ID},
        tags=("events",),
    )
)
async def event_stream(request: Request) -> Response:
    """GET /v1/events/stream?after=&job_id=&type=&heartbeat=&max_seconds=."""
    relay = deps.relay_of(request)
    # every parameter is checked before the stream starts: a refusal is a plain error answer
    after = _resume_point(request)
    job_id = JOB_ID.read(request)
    if job_id is not None and len(job_id) > 128:
        raise ApiError(
            400,
            "invalid_query",
            "job_id is longer than 128 characters",
            details={"parameter": "job_id"},
        )
    types = _types(request)
    heartbeat = HEARTBEAT.read(request)
    max_seconds = MAX_SECONDS.read(request)
    return StreamingResponse(
        _frames(relay, after, job_id, types, heartbeat, max_seconds),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


ROUTES = [Route("/events/stream", event_stream, methods=["GET"])]
