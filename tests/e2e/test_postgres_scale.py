"""Three `upscale-relay serve` on one PostgreSQL: one SIGKILLed and one SIGTERMed mid-burst."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import re
import signal
import time
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from service.sim.chat import ChatSim
from service.sim.pixazo import CallbackAttempt, PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.e2e.harness import TERMINAL, Service, follow_events, pg_service, stored_event_ids

pytestmark = pytest.mark.e2e

JOBS = 60  # half Scenario (polled), half Pixazo (callbacks)
SLACK_JOBS = 6  # of them, announced in the Slack channel: 2 messages each, 1 a second
SPACING = 0.1  # seconds between submissions: the burst lasts JOBS * SPACING
TAKEOVER = 5.0 + 0.5  # seconds from the SIGKILL (issue 11), plus RELAY_POLL_MAX
SLACK_GAP = 1.0 - 0.1  # Slack's pace, less what send latencies may differ by across processes
JOB_ID = re.compile(r"job_[0-9a-f]{20}")
MESSAGE_TYPE = re.compile(r"`(job\.[a-z]+)`")
PIXAZO_STATE = {"PROCESSING": "processing", "COMPLETED": "succeeded"}
SCENARIO_JOB = {"model": "scenario/upscale-v3"}
PIXAZO_JOB = {"model": "pixazo/seedvr-image", "input": {"image_url": "https://x.example/a.png"}}


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Read the shared database directly, as an operator would."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


async def until(check: Any, limit: float, what: str) -> None:
    """Wait for `check()` to be truthy."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {limit:g} s"
        await asyncio.sleep(0.05)


class Burst:
    """The test's side: three relays, the simulators, and what each one saw."""

    def __init__(self, url: str, relays: list[Service]) -> None:
        self.url = url
        self.relays = relays
        self.down: set[int] = set()  # relays killed or stopping: sent nothing more
        self.scenario = ScenarioSim(queue_seconds=0.2, process_seconds=2.5, latency=0.5)
        self.pixazo = PixazoSim(queue_seconds=0.3, process_seconds=2.0)
        self.pixazo.duplicate_callbacks = True  # each callback twice to the same process
        self.subscriber = Subscriber()
        self.subscriber.hang_seconds = 0.1  # deliveries stay in flight a while
        self.slack = ChatSim("slack")
        self.answers: list[httpx.Response | Exception] = []
        self.echoes: list[CallbackAttempt] = []

    def live(self, i: int) -> Service:
        """Relay `i`, or the first one up when it is down."""
        return self.relays[i] if i not in self.down else self.relays[0]

    async def submit(self, i: int, asset: str) -> None:
        body: dict[str, Any] = (
            {**SCENARIO_JOB, "input": {"image": asset}} if i % 2 else dict(PIXAZO_JOB)
        )
        body["metadata"] = {"n": i, **({"channel": "slack"} if i < SLACK_JOBS else {})}
        try:
            async with httpx.AsyncClient(base_url=self.live(i % 3).url, timeout=30) as client:
                self.answers.append(await client.post("/v1/jobs", json=body))
        except httpx.HTTPError as exc:  # the process died under it: the job is taken over
            self.answers.append(exc)

    async def echo_callbacks(self, stop: asyncio.Event) -> None:
        """Send each Pixazo callback again, at once, to another live process than its own."""
        done = 0
        while not stop.is_set():
            batch = self.pixazo.callbacks_sent[done:]
            done += len(batch)
            for attempt in batch:
                if any(attempt is e for e in self.echoes):
                    continue
                own = next(i for i, r in enumerate(self.relays) if attempt.url.startswith(r.url))
                others = [i for i in range(3) if i != own and i not in self.down]
                if others:
                    target = self.relays[others[len(self.echoes) % len(others)]].url
                    path = attempt.url.removeprefix(self.relays[own].url)
                    echo = await self.pixazo.send_callback(attempt.request_id, url=target + path)
                    self.echoes.append(echo)
            await asyncio.sleep(0.05)

    def leases_of(self, relay: Service) -> tuple[list[str], list[tuple[str, str]]]:
        """Scenario job ids and (subscription id, delivery id) pairs that `relay`'s process
        holds a lease on now."""
        assert relay.proc is not None
        [owner] = rows(self.url, "SELECT id FROM owners WHERE pid = %s", (relay.proc.pid,))
        jobs = rows(
            self.url,
            "SELECT provider_job_id FROM jobs WHERE lease_owner = %s AND provider = 'scenario'"
            " AND provider_job_id IS NOT NULL AND next_poll_at IS NOT NULL",
            (owner["id"],),
        )
        deliveries = rows(
            self.url,
            "SELECT subscription_id, id FROM deliveries WHERE lease_owner = %s"
            " AND status = 'pending'",
            (owner["id"],),
        )
        return (
            [r["provider_job_id"] for r in jobs],
            [(r["subscription_id"], r["id"]) for r in deliveries],
        )


async def test_three_processes_one_killed_one_stopped_lose_nothing_and_do_nothing_twice(
    pg_url: str,
) -> None:
    relays: list[Service] = []
    async with contextlib.AsyncExitStack() as stack:
        burst = Burst(pg_url, relays)
        scenario_url = await stack.enter_async_context(serve(burst.scenario.app))
        pixazo_url = await stack.enter_async_context(serve(burst.pixazo.app))
        sub_url = await stack.enter_async_context(serve(burst.subscriber.app))
        slack_url = await stack.enter_async_context(serve(burst.slack.app))
        stack.push_async_callback(burst.pixazo.aclose)
        burst.scenario.base_url, burst.pixazo.base_url = scenario_url, pixazo_url
        asset = burst.scenario.add_asset(b"x", "image/png")
        env = {
            "SCENARIO_API_KEY": burst.scenario.api_key,
            "SCENARIO_API_SECRET": burst.scenario.api_secret,
            "SCENARIO_BASE_URL": scenario_url,
            "PIXAZO_API_KEY": burst.pixazo.api_key,
            "PIXAZO_BASE_URL": pixazo_url,
            "RELAY_CALLBACK_GRACE": "3",
            "RELAY_SHUTDOWN_GRACE": "2",
            "RELAY_DELIVERY_TIMEOUT": "5",
        }
        for _ in range(3):
            relays.append(await stack.enter_async_context(pg_service(pg_url, **env)))
        await asyncio.gather(*(r.start() for r in relays))
        async with httpx.AsyncClient(base_url=relays[2].url) as client:
            hook = await client.post(
                "/v1/subscriptions", json={"url": f"{sub_url}/hook", "events": ["job.*"]}
            )
            assert hook.status_code == 201, hook.text
            burst.subscriber.secrets = [hook.json()["secret"]]
            hook_id = hook.json()["id"]
            chat = await client.post(
                "/v1/subscriptions",
                json={
                    "url": f"{slack_url}/services/T000/B000/XXXX",
                    "kind": "slack",
                    # job.queued at once: a backlog that the three processes share from the start
                    "events": ["job.queued", "job.succeeded", "job.failed"],
                    "filter": {"metadata": {"channel": "slack"}},
                },
            )
            assert chat.status_code == 201, chat.text
            assert chat.json()["rate_per_second"] == 1.0
            chat_id = chat.json()["id"]

        stop_echo, stop_following = asyncio.Event(), asyncio.Event()
        echo = asyncio.create_task(burst.echo_callbacks(stop_echo))
        # a consumer of the event log, on the process that lives, while all three write
        follower = asyncio.create_task(follow_events(relays[0].url, stop_following, 1))
        began = time.monotonic()
        submissions = []
        killed = stopped = 0.0
        leased: tuple[list[str], list[tuple[str, str]]] = ([], [])
        stopping: asyncio.Task[tuple[int, float]] | None = None
        for i in range(JOBS):
            if i == JOBS // 2:
                # relay 1 dies with work under way: frozen first, so its leases hold still
                victim = relays[1]
                assert victim.proc is not None
                burst.down.add(1)
                for _ in range(20):  # until it holds a poll lease: a takeover to measure
                    victim.proc.send_signal(signal.SIGSTOP)
                    leased = burst.leases_of(victim)
                    if leased[0]:
                        break
                    victim.proc.send_signal(signal.SIGCONT)
                    await asyncio.sleep(0.05)
                await victim.kill()
                killed = time.monotonic()
            if i == JOBS * 3 // 4:
                burst.down.add(2)
                stopping = asyncio.create_task(relays[2].terminate())
                stopped = time.monotonic()
            submissions.append(asyncio.create_task(burst.submit(i, asset)))
            await asyncio.sleep(SPACING)
        await asyncio.gather(*submissions)
        assert stopping is not None
        code, took = await stopping
        assert code == 0 and took < 2 + 1.0, (code, took)

        # everything settles on the one process left
        survivor = relays[0]

        def jobs() -> list[dict[str, Any]]:
            return rows(pg_url, "SELECT * FROM jobs ORDER BY seq")

        await until(lambda: all(j["status"] in TERMINAL for j in jobs()), 25, "every job ends")
        stop_echo.set()
        await echo
        ended = jobs()
        assert len(ended) >= sum(isinstance(a, httpx.Response) for a in burst.answers)
        accepted = [a for a in burst.answers if isinstance(a, httpx.Response)]
        assert all(a.status_code == 202 for a in accepted), [a.text for a in accepted]
        assert len(accepted) >= JOBS - 3, burst.answers  # at most the ones cut off by the kill

        def notified() -> dict[tuple[str, str], set[str]]:
            ids: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
            for r in burst.subscriber.received:
                ids[(r.json["data"]["id"], r.json["type"])].add(r.headers["webhook-id"])
            return ids

        terminal = {(j["id"], f"job.{j['status']}") for j in ended}
        await until(lambda: terminal <= set(notified()), 15, "every terminal notification")
        events = rows(pg_url, "SELECT * FROM events ORDER BY id")
        slack_jobs = {j["id"] for j in ended if json.loads(j["metadata"]).get("channel") == "slack"}
        announced = [
            e
            for e in events
            if e["job_id"] in slack_jobs
            and e["type"] in ("job.queued", "job.succeeded", "job.failed")
        ]
        assert len(announced) >= 2 * SLACK_JOBS - 2  # a job cut off by the kill has no queued
        await burst.slack.wait_for(len(announced), timeout=20)
        await until(
            lambda: rows(pg_url, "SELECT 1 FROM deliveries WHERE status <> 'succeeded'") == [],
            10,
            "every delivery succeeds",
        )
        await asyncio.sleep(0.5)  # a repeat, if there were one, would show up now
        stop_following.set()
        followed = await asyncio.wait_for(follower, 10)

        # every notification: a repeat only under the same webhook-id
        repeats = {key: ids for key, ids in notified().items() if len(ids) > 1}
        assert not repeats, repeats
        assert all(r.verified for r in burst.subscriber.received)

        # every callback answered 200 has its event, and no job state has two events
        by_job: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for e in events:
            by_job[e["job_id"]].append(e)
        provider_ids = {j["provider_job_id"]: j["id"] for j in ended if j["provider_job_id"]}
        answered = [a for a in burst.pixazo.callbacks_sent if a.http_status == 200]
        assert len(answered) >= JOBS // 2, len(answered)
        assert burst.echoes and any(e.http_status == 200 for e in burst.echoes)
        for attempt in answered:
            job_events = (
                by_job[provider_ids[attempt.request_id]]
                if attempt.request_id in provider_ids
                else [
                    e
                    for e in events
                    if json.loads(e["data"]).get("request_id") == attempt.request_id
                ]
            )
            state = f"job.{PIXAZO_STATE.get(attempt.status, 'failed')}"
            kept = [e for e in job_events if e["type"] == state] or [
                e
                for e in job_events
                if e["type"] == "callback.received"
                and json.loads(e["data"])["status"] == attempt.status
            ]
            assert len(kept) == 1, (attempt, [(e["type"], e["data"]) for e in job_events])
        for job_id, log in by_job.items():
            # one event per state (job.progress: one per tenth of progress)
            states = collections.Counter(
                (e["type"], e["dedupe"]) for e in log if e["type"].startswith("job.")
            )
            assert all(n == 1 for n in states.values()), (job_id, states)
            bodies = [e["data"] for e in log if e["type"] == "callback.received"]
            assert len(bodies) == len(set(bodies)), (job_id, bodies)

        # the consumer of /v1/events?after= missed nothing
        assert followed == stored_event_ids(pg_url)

        # no job was polled by two processes at once
        assert max(burst.scenario.polls_at_once.values()) == 1, burst.scenario.polls_at_once
        assert max(burst.pixazo.polls_at_once.values(), default=1) == 1

        # the Slack channel kept its pace and its order across the processes, each message
        # once (but the one the killed process may have had under way)
        sent = [at for at, _ in burst.slack.attempts]
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        assert min(gaps) >= SLACK_GAP, gaps
        said = [
            (JOB_ID.findall(m["text"])[0], MESSAGE_TYPE.findall(str(m))[0])
            for m in burst.slack.received
        ]
        firsts = list(dict.fromkeys(said))
        assert firsts == [(e["job_id"], e["type"]) for e in announced]
        in_flight = sum(sub == chat_id for sub, _ in leased[1])
        assert len(said) - len(firsts) <= in_flight, (said, in_flight)

        # the survivors took over the dead process's polls and deliveries within 5 s (and the
        # poll interval): its leases ran for a minute and more
        polls, deliveries = leased[0], [d for sub, d in leased[1] if sub == hook_id]
        assert polls, "the killed process held no poll lease: nothing to take over"
        taken = [min(t for t in burst.scenario.poll_log[p] if t > killed) - killed for p in polls]
        taken += [
            min(
                r.at
                for r in burst.subscriber.received
                if r.headers["webhook-id"] == d and r.at > killed
            )
            - killed
            for d in deliveries
        ]
        assert max(taken) < TAKEOVER, taken
        async with httpx.AsyncClient(base_url=survivor.url) as client:
            assert (await client.get("/readyz")).status_code == 200
        print(
            f"\nburst {killed - began:.1f} s in; takeover max {max(taken):.2f} s over"
            f" {len(polls)} polls + {len(deliveries)} deliveries; min Slack gap {min(gaps):.3f} s;"
            f" SIGTERM took {took:.2f} s (sent {stopped - killed:.1f} s after the kill);"
            f" {len(answered)} callbacks answered 200 ({len(burst.echoes)} echoed);"
            f" jobs {dict(collections.Counter(j['status'] for j in ended))};"
            f" {time.monotonic() - began:.1f} s in all"
        )
