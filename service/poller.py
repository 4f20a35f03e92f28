"""Durable polling: due jobs are claimed by lease, polled with backoff, and recorded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping

from service import confirm, jobs, ledger, retry
from service.config import Settings
from service.jobs import Report, Status
from service.metrics import Metrics
from service.providers.base import Provider, ProviderError
from service.store import Job, Store, Tx

log = logging.getLogger(__name__)


def _quiet(job: Job, report: Report | None) -> bool:
    """True when a poll's answer changes nothing about the job but its schedule."""
    return (
        report is not None
        and report.status is job.status
        and job.callback_status is None
        and job.poll_errors == 0
        and (report.cost is None or report.cost == job.cost)
        and (report.progress is None or not jobs.meaningful_progress(job.progress, report.progress))
    )


class Poller:
    """Polls jobs whose `next_poll_at` is due; at most `poll_concurrency` at once per provider."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        settings: Settings,
        clock: Callable[[], float],
        owner: str,
        rand: Callable[[], float] = random.random,
        resume: Callable[[Job, float], Awaitable[None]] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self._resume = resume
        self._store = store
        self._providers = providers
        self._settings = settings
        self._clock = clock
        self._owner = owner
        self._rand = rand
        self._lease = settings.provider_timeout + 30
        self._running: dict[str, set[asyncio.Task[None]]] = {p: set() for p in providers}
        self._wake = store.waiter("poll")
        self._slot_freed = asyncio.Event()
        # Set when a finished poll schedules its job before the loop's planned wake-up: a
        # job alone in flight must not wait for RELAY_POLL_MAX (its lease end is "due").
        self._sooner = asyncio.Event()
        self._wake_at: float | None = None  # while sleeping: when the loop will wake
        self._earliest = float("inf")  # while working: the earliest time a poll scheduled
        # Due jobs are gathered for up to a tick and claimed together: one transaction for
        # many polls instead of one each. A tick is at most 2.5% of the shortest interval.
        self._tick = min(0.05, settings.poll_min / 40)
        self._quiet: list[tuple[float, str, str]] = []
        self._claiming = True
        # Confirmation polls come leased in the callback's transaction, once the loop runs;
        # those handed over while every slot is busy wait here for one (same cap).
        self._handoff = confirm.PollHandoff(owner, self._lease, self._open, self.hand_off)
        self._offering = False
        self._handed: dict[str, list[Job]] = {p: [] for p in providers}

    def _schedule(self, job: Job, now: float, retry_after: float | None = None) -> float:
        delay = retry.backoff(
            job.poll_attempt, self._settings.poll_min, self._settings.poll_max, self._rand
        )
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._settings.poll_max * 4))
        return now + delay

    def _note_due(self, due: float) -> None:
        """A poll scheduled its job at `due`: the loop must wake by then. Called once the
        schedule is committed (or queued for the next flush, which the loop writes before it
        claims): a loop woken earlier could read the old due time (the lease's end) and sleep
        past the new one, as it would on an engine that runs transactions side by side."""
        if self._wake_at is None:
            self._earliest = min(self._earliest, due)
        elif due < self._wake_at:
            self._sooner.set()

    async def poll_one(self, provider: Provider, job: Job) -> None:
        """Poll one leased job and record what came of it."""
        now = self._clock()
        if job.status is Status.SUBMITTING and job.deferred and self._resume is not None:
            retry_at = self._schedule(job, now)
            await self._resume(job, retry_at)
            self._note_due(retry_at)
            return
        if job.status is Status.SUBMITTING:
            # its submission lease ran out: the process that held it died before recording
            await self._store.write(
                lambda tx: ledger.fail_job(
                    tx,
                    job.id,
                    "submit_interrupted",
                    "the relay stopped before the provider answered the submission; "
                    "the job may or may not exist at the provider",
                    "system",
                    now,
                )
            )
            return
        report: Report | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            report = await provider.fetch_status(job)
        except ProviderError as exc:
            error, retry_after = exc.message, exc.retry_after
        except Exception as exc:  # a bad answer must not stop the job's schedule
            log.exception("polling %s failed", job.id)
            error = f"{type(exc).__name__}: {exc}"
        self.metrics.poll(job.provider, report is not None)
        now = self._clock()
        next_at = self._schedule(job, now, retry_after)
        timed_out = now - job.created_at > self._settings.job_timeout
        owner = self._owner
        if not timed_out and _quiet(job, report):
            # Nothing to record but the next due time: written with the others of this tick
            # in one transaction (a commit per unchanged poll is most of polling's cost). If
            # the process dies first, the lease runs out and the job is polled again.
            self._quiet.append((next_at, job.id, owner))
            self._note_due(next_at)
            return

        async def unit(tx: Tx) -> bool:
            """Record the poll; whether the job is still scheduled (at `next_at`)."""
            updated, _ = await ledger.record_poll(tx, job.id, owner, report, error, now, next_at)
            if updated is None or updated.status.terminal:
                return False
            if timed_out:
                await ledger.fail_job(
                    tx,
                    job.id,
                    "timeout",
                    f"the job did not finish within RELAY_JOB_TIMEOUT "
                    f"({self._settings.job_timeout:g} s)",
                    "system",
                    now,
                )
                return False
            return True

        # A job that ended has no next poll: waking the loop for it would be a claim (a
        # commit) that finds nothing, on every confirmed callback.
        if await self._store.write(unit):
            self._note_due(next_at)

    async def _claim(self, provider: str, now: float, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        claimed, _ = await self._claim_and_peek(provider, now, limit)
        return claimed

    async def _claim_and_peek(
        self, provider: str, now: float, limit: int
    ) -> tuple[list[Job], float | None]:
        """Claim what is due and, in the same transaction, when the next job falls due."""
        owner, lease = self._owner, self._lease
        late: list[float] = []

        handoff = self._handoff if self._offering else None

        async def unit(tx: Tx) -> tuple[list[Job], float | None]:
            if handoff is not None:
                tx.memo[confirm.HANDOFF] = handoff  # callbacks in this process find it here
            claimed = await ledger.claim_due(tx, provider, now, limit, owner, lease, late)
            return claimed, await ledger.next_due(tx, provider)

        claimed, due = await self._store.write(unit)
        for seconds in late:
            self.metrics.poll_late(provider, seconds)
        return claimed, due

    async def run_once(self, now: float | None = None) -> int:
        """Claim every due job (up to the caps) and poll them; returns how many were polled."""
        at = self._clock() if now is None else now
        tasks = []
        for name, provider in self._providers.items():
            for job in await self._claim(name, at, self._settings.poll_concurrency):
                tasks.append(self.poll_one(provider, job))
        sem = asyncio.Semaphore(self._settings.poll_concurrency)

        async def bounded(coro: object) -> None:
            async with sem:
                await coro  # type: ignore[misc]

        await asyncio.gather(*(bounded(t) for t in tasks))
        await self.flush()
        return len(tasks)

    def _start(self, name: str, provider: Provider, job: Job) -> None:
        task = asyncio.create_task(self.poll_one(provider, job))
        running = self._running[name]
        running.add(task)

        def done(t: asyncio.Task[None]) -> None:
            running.discard(t)
            self._slot_freed.set()
            handed = self._handed[name]
            if handed and self._claiming:
                self._start(name, provider, handed.pop(0))
            if not t.cancelled() and t.exception() is not None:
                log.error("poll task failed", exc_info=t.exception())

        task.add_done_callback(done)

    def _open(self) -> list[str]:
        """The providers whose poll slots take a confirmation poll now (none while draining)."""
        if not (self._offering and self._claiming):
            return []
        cap = self._settings.poll_concurrency
        return [p for p, run in self._running.items() if len(run) + len(self._handed[p]) < cap]

    def hand_off(self, job: Job, due: float) -> None:
        """Poll a job leased to this poller by a committed unit (after-commit: no await);
        `due` is when it fell due. With every slot busy, it waits for the next free one."""
        provider = self._providers.get(job.provider)
        if not self._claiming or provider is None:
            return  # a drain has begun: the lease is released with the others at its end
        self.metrics.poll_late(job.provider, self._clock() - due)
        if len(self._running[job.provider]) < self._settings.poll_concurrency:
            self._start(job.provider, provider, job)
        else:
            self._handed[job.provider].append(job)

    async def flush(self) -> None:
        """Write the schedules of unchanged polls gathered since the last flush."""
        if not self._quiet:
            return
        rows, self._quiet = self._quiet, []
        await self._store.write(lambda tx: ledger.reschedule(tx, rows))

    async def _sleep(self, seconds: float, hungry: bool) -> None:
        now = self._clock()
        seconds = min(seconds, max(self._tick, self._earliest - now))
        self._earliest = float("inf")
        self._wake_at = now + seconds
        waits = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self._sooner.wait()),
        ]
        if hungry:
            waits.append(asyncio.ensure_future(self._slot_freed.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake_at = None
            for waiting in waits:
                waiting.cancel()

    async def run_forever(self) -> None:
        """Keep every provider's poll slots busy with due jobs; sleep until the next one is due,
        a slot frees up, or new work is committed (a callback, a submission). Returns once
        `stop_claiming` is called, leaving the polls under way to `drain`."""
        self._offering = True
        try:
            while self._claiming:
                self._wake.clear()
                self._slot_freed.clear()
                self._sooner.clear()
                sleep_for = self._settings.poll_max
                # Hungry: some provider has due jobs waiting for a free slot, so the end of a
                # poll matters; otherwise polls end unheeded (a wake per poll costs queries).
                hungry = False
                try:
                    await self.flush()
                    for name, provider in self._providers.items():
                        free = self._settings.poll_concurrency - len(self._running[name])
                        if free <= 0 or not self._claiming:
                            hungry = hungry or free <= 0
                            continue
                        claimed, due = await self._claim_and_peek(name, self._clock(), free)
                        for job in claimed:
                            self._start(name, provider, job)
                        if len(claimed) == free:
                            hungry = True
                        elif due is not None:
                            sleep_for = min(sleep_for, max(self._tick, due - self._clock()))
                except Exception:
                    log.exception("poller loop failed; going on")
                    sleep_for = 1.0
                if self._quiet:
                    sleep_for = min(sleep_for, self._tick)
                if self._claiming:
                    await self._sleep(sleep_for, hungry)
        finally:
            if self._claiming:  # cancelled, not drained: the polls under way end with it
                await self._abandon()

    def stop_claiming(self) -> None:
        """Claim nothing more (a drain has begun); polls under way go on."""
        self._claiming = False
        self._sooner.set()  # the loop wakes and returns

    async def drain(self, deadline: float) -> int:
        """Let the polls under way finish until `deadline` (loop time), then cancel the rest
        (their leases are the caller's to release); returns how many were cancelled."""
        self.stop_claiming()
        loop = asyncio.get_running_loop()
        running = {t for tasks in self._running.values() for t in tasks}
        late: set[asyncio.Task[None]] = set()
        if running:
            _, late = await asyncio.wait(running, timeout=max(0.0, deadline - loop.time()))
        await self._abandon()
        return len(late)

    async def _abandon(self) -> None:
        for handed in self._handed.values():
            handed.clear()  # leased to this process: released by the drain, or taken over
        for running in self._running.values():
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.flush()
