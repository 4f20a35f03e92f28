"""The delivery worker: claims due deliveries by lease, sends them, records every attempt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from service import netguard, notify, outbound, outbox, retry, signing
from service.archive.present import ARCHIVED_TYPES, strip_keys
from service.config import Settings
from service.metrics import Metrics
from service.outbox import Attempt, Delivery, Subscription
from service.store import Event, Store, Tx

log = logging.getLogger(__name__)
RESPONSE_KEEP = 1024
RESPONSE_READ = 64 * 1024
MAX_RETRY_AFTER = 3600.0
# A dead subscriber holds at most its max_in_flight (4) of a host's slots.
HOST_CONNECTIONS = 8


def classify(
    status: int | None,
    retry_after: float | None,
    round_: int,
    schedule: tuple[float, ...],
    now: float,
    rand: Callable[[], float],
) -> tuple[bool, float | None, bool]:
    """(delivered, retry at, gone) for an answer; status None means no answer at all."""
    if status is not None and 200 <= status < 300:
        return True, None, False
    if status == 429 and retry_after is not None:
        return False, now + min(retry_after, MAX_RETRY_AFTER), False
    # Standard Webhooks: retry network errors, timeouts, 408, 429 and 5xx; redirects are
    # not followed and count as failures worth retrying; other 4xx are final.
    retryable = status is None or status in (408, 429) or status >= 500 or 300 <= status < 400
    if not retryable:
        return False, None, status == 410
    delay = retry.next_delay(
        schedule, round_ + 1, retry_after, rand, max_retry_after=MAX_RETRY_AFTER
    )
    return False, (None if delay is None else now + delay), False


def retry_after_of(response: outbound.Response, body: bytes, kind: str) -> float | None:
    """Seconds to wait from Retry-After, or from Discord's JSON `retry_after`."""
    seconds = retry.parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
    if kind == "discord" and response.status_code == 429:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            value = json.loads(body).get("retry_after")
            if isinstance(value, int | float) and value >= 0:
                seconds = max(seconds or 0.0, float(value))
    return seconds


def _by_subscription(record: tuple[Delivery, Attempt, float]) -> tuple[str, str]:
    return record[0].subscription_id or "", record[0].id


class Deliverer:
    """Sends the outbox: one client per destination host, caps per subscription."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Callable[[], float],
        owner: str,
        webhook_secret: outbox.ServiceSecret,
        rand: Callable[[], float] = random.random,
        capacity: int = 512,
        resolve: netguard.Resolver | None = None,
        max_hosts: int = outbound.MAX_HOSTS,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self._store = store
        self._settings = settings
        self._clock = clock
        self._owner = owner
        self._webhook_secret = webhook_secret
        self._rand = rand
        self._capacity = capacity
        # a send lasts at most the timeout; past twice that, its process is taken for dead
        self._lease = 2 * settings.delivery_timeout + 5
        ssl_context = ssl.create_default_context()
        # One client per destination host (its own pool and gate), the least recently used
        # closed past max_hosts: per-job webhooks may name any number of hosts.
        self.clients = outbound.HostClients(
            lambda: outbound.guarded_client(
                settings.delivery_timeout,
                ssl_context,
                allow_private=settings.allow_private_targets,
                resolve=resolve,
                connections=HOST_CONNECTIONS,
            ),
            HOST_CONNECTIONS,
            max_hosts,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = store.waiter("deliveries")
        self._claiming = True
        # Fresh deliveries come leased in the transaction that adds them, once the loop runs.
        self._handoff = outbox.Handoff(owner, self._lease, self._room, self._take)
        self._offering = False
        # attempts waiting for their unit, and the write that will record them
        self._records: list[tuple[Delivery, Attempt, float]] | None = None
        self._recording: asyncio.Future[None] | None = None
        # whether a finished send may let the loop claim more (slots were short, or due
        # rows were held back by a cap, an order or a pace)
        self._waiting = True
        # RELAY_ARCHIVE: how a notification shows archived outputs (service.archive.present)
        self.present: Callable[[Event], Awaitable[Event]] | None = None

    async def aclose(self) -> None:
        """Stop sending and close every client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.clients.aclose()

    def _body(self, delivery: Delivery, sub: Subscription | None, event: Event) -> bytes:
        message = outbox.notification(event)
        if delivery.kind == "webhook":
            payload: Any = message
        else:
            payload = notify.render(delivery.kind, message, sub.template if sub else None)
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    async def send(self, delivery: Delivery, sub: Subscription | None, event: Event) -> Attempt:
        """One attempt: guard the target, POST, and judge the answer."""
        url = delivery.url or (sub.url if sub else "")
        if event.type in ARCHIVED_TYPES:
            # archived outputs: their keys become URLs (S3: signed afresh for each send)
            event = await self.present(event) if self.present else strip_keys(event)
        body = self._body(delivery, sub, event)
        now = self._clock()
        headers = {"content-type": "application/json"}
        if delivery.kind == "webhook":
            keys = (sub or self._webhook_secret).signing_secrets(now)
            headers = signing.headers(keys, delivery.id, int(now), body)
        started = time.perf_counter()
        status: int | None = None
        answer: bytes = b""
        error: str | None = None
        retry_after: float | None = None
        not_before: float | None = None
        try:
            # The shape only: the address is checked as the connection is made (outbound).
            netguard.check_url_shape(url)
        except netguard.TargetRefused as exc:
            return Attempt(None, 0.0, None, f"refused: {exc}", False, None)
        parts = urlsplit(url)
        ids = {"delivery": delivery.id, "subscription": delivery.subscription_id or ""}
        ids["job"] = delivery.job_id or ""
        try:
            # A request waits at its host's gate before its timeout starts, not in the pool.
            async with (
                self.clients.use(f"{parts.scheme}://{parts.netloc}") as (client, gate),
                gate,
                asyncio.timeout(self._settings.delivery_timeout),
                client.stream("POST", url, content=body, headers=headers, ids=ids) as response,
            ):
                status = response.status_code
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) >= RESPONSE_READ:
                        break
                retry_after = retry_after_of(response, answer, delivery.kind)
                not_before = self._not_before(sub, response)
        except netguard.TargetRefused as exc:
            latency = (time.perf_counter() - started) * 1000
            return Attempt(None, latency, None, f"refused: {exc}", False, None)
        except (outbound.HTTPError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if isinstance(exc, TimeoutError) or isinstance(exc, outbound.TimeoutException):
                error = f"timeout after {self._settings.delivery_timeout:g} s"
        latency = (time.perf_counter() - started) * 1000
        done = self._clock()
        delivered, retry_at, gone = classify(
            status, retry_after, delivery.round, self._settings.retry_schedule, done, self._rand
        )
        if status is not None and not delivered:
            error = error or f"HTTP {status}"
        text = answer[:RESPONSE_KEEP].decode("utf-8", "replace") if answer else None
        throttled = status == 429 and retry_after is not None
        if throttled and retry_at is not None:
            # the channel said when to come back: none of its messages goes before then
            not_before = max(not_before or 0.0, retry_at)
        return Attempt(
            status, latency, text, error, delivered, retry_at, gone, throttled, not_before
        )

    def _not_before(self, sub: Subscription | None, response: outbound.Response) -> float | None:
        """When the subscription's next message may go, counted from this answer."""
        if sub is None:
            return None
        # The claim paced the send; pacing from the answer too keeps arrivals 1/rate apart
        # however the latency of two sends differs.
        wait = 1.0 / sub.rate_per_second if sub.rate_per_second else 0.0
        # Discord tells how long its bucket needs when it is empty.
        if response.headers.get("x-ratelimit-remaining") == "0":
            with contextlib.suppress(ValueError):
                wait = max(wait, float(response.headers.get("x-ratelimit-reset-after", "0")))
        return self._clock() + wait if wait else None

    async def _deliver(self, delivery: Delivery, sub: Subscription | None, event: Event) -> None:
        try:
            try:
                attempt = await self.send(delivery, sub, event)
            except Exception as exc:  # a bug in rendering must not lose the delivery
                log.exception("sending %s failed", delivery.id)
                attempt = Attempt(
                    None, 0.0, None, f"{type(exc).__name__}: {exc}", False, self._clock() + 60
                )
            await self._record(delivery, attempt, now := self._clock())
            self.metrics.delivery(delivery.kind, attempt, now - event.created_at)
        finally:
            # Each claim scans what is due: during a big fan-out, claim again once half the
            # slots are free rather than after every single delivery; and not at all when
            # nothing due was left waiting (a claim that finds nothing is a commit for naught).
            if self._waiting and len(self._tasks) <= self._capacity // 2 + 1:
                self._wake.set()

    async def _record(self, delivery: Delivery, attempt: Attempt, now: float) -> None:
        """Record an attempt, committed, in one unit with those of the sends that end before
        the unit starts (a fan-out's attempts share a few units rather than one each)."""
        batch = self._records
        if batch is None:
            batch = self._records = []
            self._recording = asyncio.ensure_future(self._write_records(batch))
        batch.append((delivery, attempt, now))
        assert self._recording is not None  # noqa: S101 - set with the batch
        # shielded: a send cancelled now (a drain's deadline) leaves the others' records be
        await asyncio.shield(self._recording)

    async def _write_records(self, batch: list[tuple[Delivery, Attempt, float]]) -> None:
        owner, pause_after = self._owner, self._settings.pause_after

        async def unit(tx: Tx) -> None:
            if self._records is batch:
                self._records = None  # closed: later attempts make the next batch
            # in one order (by subscription): two units side by side (PostgreSQL) then lock
            # the subscriptions' rows in the same order, rather than each waiting on the other
            for delivery, attempt, now in sorted(batch, key=_by_subscription):
                await outbox.record_attempt(tx, delivery, owner, attempt, now, pause_after)

        try:
            await self._store.write(unit)
        finally:
            if self._records is batch:  # the write failed before the unit ran
                self._records = None

    async def _claim(self, limit: int) -> outbox.Claimed:
        now = self._clock()
        owner, lease = self._owner, self._lease
        handoff = self._handoff if self._offering else None

        async def unit(tx: Tx) -> outbox.Claimed:
            if handoff is not None:
                tx.memo[outbox.HANDOFF] = handoff  # fan-outs in this process find it here
            return await outbox.claim(tx, now, limit, owner, lease)

        return await self._store.write(unit)

    def _room(self) -> int:
        """How many fresh deliveries the worker takes now: its free slots while it sends."""
        if not (self._offering and self._claiming):
            return 0
        return max(0, self._capacity - len(self._tasks))

    def _take(self, fresh: list[outbox.Fresh]) -> None:
        """Send committed fresh deliveries leased to this worker (after-commit: no await)."""
        if not self._claiming:
            return  # a drain has begun: the leases are released with the others at its end
        for delivery, sub, event in fresh:
            self._spawn(delivery, sub, event)

    def _spawn(self, delivery: Delivery, sub: Subscription | None, event: Event) -> None:
        task = asyncio.create_task(self._deliver(delivery, sub, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start(self, claimed: outbox.Claimed) -> list[asyncio.Task[None]]:
        before = set(self._tasks)
        for delivery in claimed.deliveries:
            sub = claimed.subscriptions.get(delivery.subscription_id or "")
            event = claimed.events.get(delivery.event_id)
            if event is None:  # cannot happen: events are append-only
                log.error("delivery %s names a missing event", delivery.id)
                continue
            self._spawn(delivery, sub, event)
        return list(self._tasks - before)

    async def run_once(self) -> int:
        """Claim what is due now and send it; returns how many were sent."""
        claimed = await self._claim(self._capacity)
        tasks = self._start(claimed)
        await asyncio.gather(*tasks)
        return len(tasks)

    async def _next_due(self) -> float | None:
        return await self._store.next_attempt_due()

    async def run_forever(self) -> None:
        """Send as work is committed (woken at once), with a scan as the safety net. Returns
        once `stop_claiming` is called, leaving the deliveries under way to `drain`."""
        self._offering = True
        try:
            while self._claiming:
                self._wake.clear()
                claimed_all = False
                try:
                    free = self._capacity - len(self._tasks)
                    if free > 0 and self._claiming:
                        claimed = await self._claim(free)
                        self._start(claimed)
                        claimed_all = len(claimed.deliveries) == free
                    sleep_for = 5.0
                    due = await self._next_due()
                    now = self._clock()
                    self._waiting = free <= 0 or claimed_all or (due is not None and due <= now)
                    if due is not None:
                        # due-but-blocked rows (ordered, capped, paused) must not spin the
                        # loop; paced ones are due at their subscription's next_send_at
                        sleep_for = min(sleep_for, due - now if due > now else 0.05)
                except Exception:
                    log.exception("delivery loop failed; going on")
                    self._waiting = True
                    sleep_for = 1.0
                if claimed_all:
                    continue
                if self._claiming:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=sleep_for)
        finally:
            if self._claiming:  # cancelled, not drained: the sends under way end with it
                await self.aclose()

    def stop_claiming(self) -> None:
        """Claim nothing more (a drain has begun); sends under way go on."""
        self._claiming = False
        self._wake.set()  # the loop wakes and returns

    async def drain(self, deadline: float) -> int:
        """Let the sends under way finish until `deadline` (loop time), then cancel the rest
        (their leases are the caller's to release); returns how many were cancelled."""
        self.stop_claiming()
        loop = asyncio.get_running_loop()
        late: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)
