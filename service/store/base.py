"""The store seam: what every engine's adapter provides, as protocols over the project's records.

A unit of work is `async def unit(tx) -> T`, run by `Store.write` in one transaction; it calls
repository methods (`await tx.jobs.update(...)`), never SQL. An engine may run units one after
another (SQLite: a group-commit batch whose methods never suspend) or many at once (PostgreSQL:
one transaction per unit on a pooled connection); units must not rely on either."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from service.jobs import Status
from service.store.archives import Archive, Copied, NewArchive
from service.store.codec import dumps as dumps
from service.store.codec import iso as iso
from service.store.model import Head
from service.store.model import Idempotent as Idempotent
from service.store.model import Job as Job
from service.store.records import Counts, Delivery, DeliveryLog, NewDelivery, Pruned, Subscription
from service.store.records import Event as Event

T = TypeVar("T")
log = logging.getLogger(__name__)

# (job id, type, source, created_at, data, dedupe): an event as `EventsRepo.append_many` takes it
NewEvent = tuple[str, str, str, float, dict[str, Any], str]
# (job id, status, progress, request id, now): a callback as `JobsRepo.apply_callbacks` takes it
Applied = tuple[str, Status, float | None, str | None, float]


class EventsRepo(Protocol):
    """The append-only event log as one unit of work sees it."""

    async def append(
        self,
        job_id: str | None,
        type_: str,
        source: str,
        now: float,
        data: dict[str, Any],
        dedupe: str | None = None,
    ) -> Event | None:
        """Append an event; None when the job has an event under `dedupe` already.

        Its id is a cursor: a reader that saw it never later sees a smaller new one."""

    async def append_many(self, rows: Sequence[NewEvent]) -> list[Event | None]:
        """Append these events in this order (ids ascending with it), each as `append` would:
        None for one whose job has an event under its dedupe key already. Every row has a
        dedupe key and no two rows share one; an engine may write them in one statement."""

    async def exists(self, job_id: str, dedupe: str) -> bool:
        """Whether the job has an event under this dedupe key."""

    async def by_ids(self, event_ids: Iterable[int]) -> dict[int, Event]:
        """These events, by id (what the deliveries carry)."""


class JobsRepo(Protocol):
    """The jobs rows as one unit of work sees them; `service.ledger` decides what to do."""

    async def in_flight(self, provider: str) -> int:
        """Jobs of a provider that it is working on now, or that are being submitted to it
        (read on every submission: a count kept as jobs change, never a scan of the jobs)."""

    async def insert_submitting(
        self,
        job_id: str,
        model: str,
        provider: str,
        input_: dict[str, Any],
        metadata: dict[str, Any],
        webhook: str | None,
        webhook_events: list[str] | None,
        now: float,
        lease_until: float,
        owner: str | None,
    ) -> int:
        """Insert a job as `submitting`, its due time (and `owner`'s lease) at `lease_until`;
        returns its seq (the caller knows every other column)."""

    async def defer(self, job_id: str, due: float) -> None:
        """Hold a job back, unleased, until `due`."""

    async def push_back(self, job_id: str, due: float) -> None:
        """A deferred job stays deferred: due again at `due`, no owner."""

    async def undefer(self, job_id: str, now: float, lease_until: float) -> None:
        """A deferred job is taken for submission, its lease running to `lease_until`."""

    async def submitted(self, job_id: str, due: float) -> None:
        """The submission's answer: first poll at `due`, lease released."""

    async def unlease(self, job_id: str) -> None:
        """Drop a job's lease, whoever holds it."""

    async def get(self, job_id: str) -> Job | None:
        """A job by id."""

    async def head(self, job_id: str) -> Head | None:
        """The head of a job."""

    async def update(self, job_id: str, sets: Mapping[str, Any]) -> Job:
        """Set the columns named in `sets` (fixed keys, never input) and return the job."""

    async def fail(self, job_id: str, error: dict[str, Any], now: float) -> None:
        """Mark a job failed with `error`: unscheduled, unclaimed, unleased."""

    async def apply_callback(
        self,
        job_id: str,
        status: Status,
        progress: float | None,
        request_id: str | None,
        now: float,
    ) -> Job | None:
        """The common callback in one statement: the job moves to `status` (not terminal) if
        it is at an earlier state, its provider id is known and is `request_id` (when given);
        progress only grows. The job as it leaves it, or None (nothing changed)."""

    async def apply_callbacks(self, rows: Sequence[Applied]) -> dict[str, Job]:
        """`apply_callback` for each (job id, status, progress, request id, now) row, no job id
        twice; an engine may write them in one statement. The jobs it changed, by id."""

    async def callback_budget(self, job_id: str) -> tuple[int, int]:
        """The callback events stored for a job: in all, and after it ended."""

    async def count_callback(self, job_id: str, ended: bool) -> None:
        """One more callback event stored (and one more late one when the job had ended)."""

    async def count_dropped(self, job_id: str) -> None:
        """One more callback counted but not stored."""

    async def claim(self, job_id: str, status: Status, due: float | None) -> None:
        """A callback claims `status`: confirmed by a poll due at `due`, from the first attempt."""

    async def claim_leased(
        self,
        job_id: str,
        status: Status,
        now: float,
        owner: str,
        until: float,
        providers: Sequence[str],
    ) -> Job | None:
        """A callback claims `status`, its confirmation poll (due at `now`) leased at once to
        `owner` until `until`, as `claim_due` leases it; only if the job's provider is one of
        `providers`. The job as leased, or None (nothing changed)."""

    async def note_claim(self, job_id: str, status: Status) -> None:
        """A callback claims `status`, the schedule unchanged."""

    async def claim_due(
        self, provider: str, now: float, limit: int, owner: str, until: float, alive_after: float
    ) -> list[tuple[Job, float | None]]:
        """Lease to `owner` until `until` up to `limit` jobs that are due, or whose lease is
        held by an owner not alive after `alive_after`; each with the due time it had."""

    async def next_due(self, provider: str) -> float | None:
        """The earliest poll time scheduled for a provider."""

    async def release(self, owner: str, now: float) -> int:
        """Every scheduled job `owner` leases: unleased and due at `now`."""

    async def poll_answered(self, job_id: str) -> None:
        """A poll had an answer: error count reset, callback claim settled."""

    async def poll_failed(self, job_id: str) -> None:
        """One more poll error in a row."""

    async def next_poll(self, job_id: str, due: float) -> None:
        """The next poll at `due`, one attempt later."""

    async def unlease_held(self, job_id: str, owner: str) -> None:
        """Drop a job's lease if `owner` holds it."""

    async def reschedule(self, rows: Iterable[tuple[float, str, str]]) -> None:
        """(due, job id, owner) rows: the next poll, one attempt later, the owner's lease
        dropped; a job no longer leased by that owner, or unscheduled, is left alone."""


class IdempotencyRepo(Protocol):
    """The idempotency keys as one unit of work sees them."""

    async def get(self, key: str) -> Idempotent | None:
        """The key's record, if stored."""

    async def add(self, key: str, request_hash: str, job_id: str, now: float) -> None:
        """Store a key for the job its request creates; its answer comes later."""

    async def answer(self, key: str, status_code: int, body: dict[str, Any]) -> None:
        """Keep the answer given under a key."""


class SubscriptionsRepo(Protocol):
    """The subscriptions rows (and the service-wide secret) as one unit of work sees them."""

    async def version(self) -> str:
        """A value that changes whenever any subscription does."""

    async def bump(self) -> None:
        """Move the version on: every process's cached list is stale."""

    async def all(self) -> list[Subscription]:
        """Every subscription."""

    async def get(self, sub_id: str) -> Subscription | None:
        """A subscription by id."""

    async def by_ids(self, sub_ids: Iterable[str]) -> dict[str, Subscription]:
        """These subscriptions, by id."""

    async def insert(self, sub: Subscription) -> None:
        """Add a subscription (its seq is the store's to give)."""

    async def update(self, sub_id: str, changes: Mapping[str, Any]) -> None:
        """Set these columns (events a list, filter a dict or None) on one subscription."""

    async def delete(self, sub_id: str) -> bool:
        """Delete a subscription: whether it was there."""

    async def rotate_secret(self, sub_id: str, secret: str, old_until: float, now: float) -> None:
        """Make `secret` current; the current one becomes the old one until `old_until`."""

    async def pause(self, sub_id: str, reason: str, now: float) -> bool:
        """Pause an active subscription: whether it was active."""

    async def pace(self, sub_ids: Iterable[str], now: float) -> None:
        """A paced subscription's next message waits 1/rate from `now`."""

    async def not_before(self, sub_id: str, when: float) -> None:
        """Its next message waits until `when`; never moved earlier."""

    async def succeeded(self, sub_id: str) -> None:
        """A delivery got through: the subscription is not failing."""

    async def failed(self, sub_id: str, now: float) -> float | None:
        """A delivery failed: since when every one has (None when the row is gone)."""

    async def service_secret(self, fresh: str) -> dict[str, str]:
        """The service-wide secret's values by key, `fresh` stored first if there is none."""

    async def set_service_secret(self, current: str, previous: str, previous_until: float) -> None:
        """Store a new service-wide secret and the one it replaces."""


class DeliveriesRepo(Protocol):
    """The deliveries rows and their attempt log as one unit of work sees them."""

    async def get(self, delivery_id: str) -> Delivery | None:
        """A delivery by id."""

    async def add(self, new: Sequence[NewDelivery], lease: tuple[str, float] | None = None) -> None:
        """Add pending deliveries, each due at once; with `lease` (owner, until), leased to
        that owner until then instead, as a claim would have left them."""

    async def room(self, sub_ids: Iterable[str], now: float, most: int) -> dict[str, int]:
        """How many fresh deliveries each of these subscriptions may be sent now without a
        claim: its max_in_flight less its pending deliveries (any, counted up to `most`); only
        active subscriptions without a pace and not held back by next_send_at are named.
        Empty when it cannot be decided now (another transaction is claiming)."""

    async def cancel_pending(self, sub_id: str, now: float, reason: str) -> None:
        """Cancel a subscription's pending deliveries (they stay in the log)."""

    async def claim(
        self, now: float, limit: int, owner: str, lease: float, alive_after: float
    ) -> list[Delivery]:
        """Lease due deliveries, and those leased by an owner not heard from after
        `alive_after` (or gone), oldest first: the head only for ordered destinations, never
        more per subscription than its max_in_flight less those in flight, one at a time for
        a paced one and not before its next_send_at."""

    async def release(self, owner: str, now: float) -> int:
        """Give up every pending delivery `owner` has leased: due at `now`."""

    async def log_attempt(
        self,
        delivery_id: str,
        now: float,
        status_code: int | None,
        latency_ms: float,
        response: str | None,
        error: str | None,
    ) -> None:
        """Append one send to the attempt log."""

    async def settle(
        self,
        delivery_id: str,
        status: str,
        due: float | None,
        counts_round: bool,
        status_code: int | None,
        error: str | None,
        now: float,
    ) -> None:
        """Move a pending delivery on after an attempt and drop its lease."""

    async def retry(self, delivery_id: str, now: float) -> None:
        """Make a delivery pending and due at `now` with a fresh retry schedule."""


class OwnersRepo(Protocol):
    """The owners rows as one unit of work sees them; `service.owners` decides what to do."""

    async def upsert(self, owner: str, host: str, pid: int, now: float) -> None:
        """Add this owner's row, or refresh its heartbeat if the row is there."""

    async def beat(self, owner: str, now: float) -> tuple[bool, float | None]:
        """Set this owner's heartbeat to `now`: whether its row was there, and the oldest
        heartbeat of another owner (None when there is none)."""

    async def oldest_other(self, owner: str) -> float | None:
        """The oldest heartbeat of an owner other than `owner`."""

    async def drop_silent(self, owner: str, alive_after: float) -> int:
        """Delete the rows of other owners whose heartbeat is not later than `alive_after`."""

    async def remove(self, owner: str) -> None:
        """Delete this owner's row."""


class ArchivesRepo(Protocol):
    """The archives rows (RELAY_ARCHIVE) as one unit of work sees them."""

    async def add(self, rows: Sequence[NewArchive]) -> None:
        """Add outputs to copy, each due at once (one already there is left alone)."""

    async def claim(
        self, now: float, limit: int, owner: str, until: float, alive_after: float
    ) -> list[Archive]:
        """Lease to `owner` until `until` pending rows that are due, or leased by an owner not
        alive after `alive_after` (or gone), oldest due first."""

    async def done(self, job_id: str, n: int, owner: str, copied: Copied, now: float) -> bool:
        """The copy is in the archive: whether `owner` still held the row's lease."""

    async def retry(self, job_id: str, n: int, owner: str, due: float, error: str) -> bool:
        """The copy failed and is tried again at `due`: whether `owner` held the lease."""

    async def fail(self, job_id: str, n: int, owner: str, error: str, now: float) -> bool:
        """The copy is given up: whether `owner` held the lease."""

    async def for_job(self, job_id: str) -> list[Archive]:
        """A job's rows, by output number (PostgreSQL: locked to the unit's end, so units
        settling outputs of one job take turns and exactly one sees them all settled)."""

    async def release(self, owner: str, now: float) -> int:
        """Give up every pending row `owner` has leased: due at `now`."""

    async def expired(self, before: float, limit: int) -> list[Archive]:
        """Up to `limit` copied rows of jobs that ended before `before`."""

    async def deleted(self, job_id: str, n: int, now: float) -> None:
        """The copy was removed from the archive (retention)."""

    async def next_due(self) -> float | None:
        """When the next pending row is due (or its lease runs out)."""


class Tx(Protocol):
    """One unit of work's view of the store: its repositories and its wake-ups."""

    @property
    def jobs(self) -> JobsRepo:
        """The jobs rows (state, callbacks, poll leases)."""

    @property
    def events(self) -> EventsRepo:
        """The event log."""

    @property
    def idempotency(self) -> IdempotencyRepo:
        """The idempotency keys."""

    @property
    def subscriptions(self) -> SubscriptionsRepo:
        """The subscriptions rows and the service-wide secret."""

    @property
    def deliveries(self) -> DeliveriesRepo:
        """The deliveries rows and their attempt log."""

    @property
    def owners(self) -> OwnersRepo:
        """The owners rows (process liveness)."""

    @property
    def archives(self) -> ArchivesRepo:
        """The archives rows (outputs to copy)."""

    @property
    def memo(self) -> dict[str, Any]:
        """This process's memo for this database: caches that check themselves against it."""

    def notify(self, channel: str) -> None:
        """Wake whoever waits on `channel`, in every process, once this unit has committed."""

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call `fn` in this process once this unit has committed; never if it is not."""


Unit = Callable[[Tx], Awaitable[T]]


class Grouped(Generic[T]):
    """A unit of work an engine may run set-based with the like units queued beside it.

    Called alone it is an ordinary unit (`whole`), and an engine that never groups sees only
    that. An engine that groups calls `together(txs, items)` once for a run of consecutive
    units sharing `together`, no `key` twice, each unit's own Tx beside its item (statements
    may go through any of them; wake-ups and after-commit calls go on the unit's own). It
    returns each unit's result, or None for one it left alone, which the engine then runs as
    `rest`. When `together` raises, nothing it did is kept and every unit runs as `whole`."""

    __slots__ = ("item", "key", "rest", "together", "whole")

    def __init__(
        self,
        together: Callable[[Sequence[Tx], Sequence[Any]], Awaitable[list[T | None]]],
        item: Any,
        key: str,
        whole: Unit[T],
        rest: Unit[T],
    ) -> None:
        self.together = together
        self.item = item
        self.key = key
        self.whole = whole
        self.rest = rest

    def __call__(self, tx: Tx) -> Awaitable[T]:
        return self.whole(tx)


class Store(Protocol):
    """A database behind the seam: units of work, reads, wake-ups, health."""

    # why writes fail now, while they fail for a reason of the storage's own; else None
    refusing: str | None

    @property
    def where(self) -> str:
        """The database named for people and logs: a path, or a URL without its password."""

    async def write(self, fn: Unit[T]) -> T:
        """Run `fn` in a write transaction; return once it is committed.

        Raises StorageUnavailable (nothing of `fn` kept) when the storage refuses the write."""

    def waiter(self, channel: str) -> Any:
        """An asyncio.Event set whenever a unit notified `channel` (clear it before waiting)."""

    async def close(self) -> None:
        """Finish queued writes and close every connection."""

    async def ping(self) -> None:
        """A trivial read: StorageUnavailable when the database cannot answer."""

    async def probe(self) -> None:
        """Store a callback's worth of bytes and take them back, committed."""

    async def limit_size(self, max_bytes: int | None) -> None:
        """Cap the database's size where the engine can (SQLite); None lifts the cap."""

    async def meta_get_or_set(self, key: str, make: Callable[[], str]) -> str:
        """The stored value of `key`, storing `make()` first when there is none."""

    async def get_job(self, job_id: str) -> Job | None:
        """A job by id."""

    async def archives(self, job_id: str) -> list[Archive]:
        """A job's archives rows, by output number."""

    async def list_jobs(
        self,
        *,
        status: str | None,
        model: str | None,
        before: int | None,
        limit: int,
        provider: str | None = None,
        metadata: tuple[str, str | None] | None = None,
    ) -> list[Job]:
        """Jobs newest first, keyset-paginated on seq; `metadata` is (key, value or None), its
        key checked by service.store.jobquery.check_meta (ValueError)."""

    async def counts_since(self, since: float) -> dict[str, int]:
        """Jobs created at or after `since`, by status."""

    async def events(
        self, *, job_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[Event]:
        """Events oldest first after a cursor, for one job or for all."""

    async def idempotent(self, key: str) -> Idempotent | None:
        """A stored idempotency key."""

    async def next_due(self, provider: str) -> float | None:
        """The earliest poll time scheduled for a provider."""

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        """A subscription by id."""

    async def list_subscriptions(self, *, before: int | None, limit: int) -> list[Subscription]:
        """Subscriptions newest first, keyset-paginated on seq."""

    async def get_delivery(self, delivery_id: str) -> DeliveryLog | None:
        """A delivery and its attempts."""

    async def list_deliveries(
        self,
        *,
        subscription_id: str | None = None,
        job_id: str | None = None,
        status: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[DeliveryLog]:
        """Deliveries newest first, each with its attempt log; filters left None match all."""

    async def counts(self) -> Counts:
        """What /metrics shows of the database."""

    async def next_attempt_due(self) -> float | None:
        """When the next pending delivery is due."""

    async def prune(self, before: float, now: float, budget: int) -> Pruned | None:
        """One retention batch in a transaction of its own: up to `budget` rows (attempts,
        deliveries, events) of jobs ended before `before` deleted, the jobs left with nothing
        marked pruned at `now`. None when another process is pruning (PostgreSQL)."""

    async def prunable(self, before: float) -> Pruned:
        """What pruning every job ended before `before` would remove; nothing changes."""


def run_hooks(hooks: Iterable[Callable[[], None]]) -> None:
    """A committed unit's after-commit calls: one failing spoils neither the others nor the
    write, which is committed (and may be answered) already."""
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("an after-commit call failed")


def body_hash(body: bytes) -> str:
    """A short stable digest of a raw body."""
    return hashlib.sha256(body).hexdigest()[:32]
