"""SQLite store: one group-commit writer, one reader, versioned migrations, the reads."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from service import jobs
from service.jobs import Status

log = logging.getLogger(__name__)
T = TypeVar("T")
Fn = Callable[["Tx"], Any]
EventHook = Callable[["Tx", "Event", "Job | None"], None]


def _loads(text: str | None, empty: Any = None) -> Any:
    """Decode a JSON column; the common empty values skip the decoder."""
    if text is None:
        return empty
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return json.loads(text)


def dumps(value: Any) -> str:
    """Compact JSON for storage."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds and a Z."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Job:
    """A job row."""

    seq: int
    id: str
    model: str
    provider: str
    status: Status
    progress: float
    input: dict[str, Any]
    metadata: dict[str, Any]
    outputs: list[dict[str, Any]]
    error: dict[str, Any] | None
    provider_job_id: str | None
    cost: float | None
    webhook: str | None
    webhook_events: list[str] | None
    created_at: float
    updated_at: float
    finished_at: float | None
    next_poll_at: float | None
    poll_attempt: int
    poll_errors: int
    callback_status: str | None
    deferred: bool = False

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        """Decode a `SELECT * FROM jobs` row."""
        return cls(
            seq=row["seq"],
            id=row["id"],
            model=row["model"],
            provider=row["provider"],
            status=Status(row["status"]),
            progress=row["progress"],
            input=_loads(row["input"]),
            metadata=_loads(row["metadata"]),
            outputs=_loads(row["outputs"]),
            error=_loads(row["error"]) if row["error"] else None,
            provider_job_id=row["provider_job_id"],
            cost=row["cost"],
            webhook=row["webhook"],
            webhook_events=_loads(row["webhook_events"]) if row["webhook_events"] else None,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            next_poll_at=row["next_poll_at"],
            poll_attempt=row["poll_attempt"],
            poll_errors=row["poll_errors"],
            callback_status=row["callback_status"],
            deferred=bool(row["deferred"]),
        )

    def notification_data(self) -> dict[str, Any]:
        """The job as notifications carry it (SPEC: Outgoing notifications)."""
        return {
            "id": self.id,
            "model": self.model,
            "status": str(self.status),
            "progress": self.progress,
            "outputs": self.outputs,
            "error": self.error,
            "metadata": self.metadata,
            "provider": self.provider,
            "provider_job_id": self.provider_job_id,
            "cost": self.cost,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }

    def public(self) -> dict[str, Any]:
        """The job as the API shows it."""
        out = self.notification_data()
        if self.deferred:
            out["deferred"] = True
        out["input"] = self.input
        out["webhook"] = self.webhook
        out["webhook_events_filter"] = self.webhook_events
        out["finished_at"] = iso(self.finished_at)
        return out


@dataclass(frozen=True, slots=True)
class Event:
    """An event row: append-only."""

    id: int
    job_id: str | None
    type: str
    source: str
    created_at: float
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Event:
        """Decode an events row."""
        return cls(
            row["id"],
            row["job_id"],
            row["type"],
            row["source"],
            row["created_at"],
            json.loads(row["data"]),
        )

    def public(self) -> dict[str, Any]:
        """The event as the API shows it."""
        return {
            "id": self.id,
            "job_id": self.job_id,
            "type": self.type,
            "source": self.source,
            "created_at": iso(self.created_at),
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Idempotent:
    """A stored Idempotency-Key and, once known, the answer it gave."""

    key: str
    request_hash: str
    job_id: str | None
    status_code: int | None
    response: dict[str, Any] | None


class Tx:
    """One unit of work inside a group-commit batch; `signal` wakes waiters after the commit."""

    __slots__ = ("conn", "hooks", "signals")

    def __init__(self, conn: sqlite3.Connection, hooks: list[EventHook]) -> None:
        self.conn = conn
        self.hooks = hooks
        self.signals: set[str] = set()

    def signal(self, name: str) -> None:
        """Wake whoever waits on `name` once this transaction has committed."""
        self.signals.add(name)

    def one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        """The first row of a query."""
        row: sqlite3.Row | None = self.conn.execute(sql, tuple(params)).fetchone()
        return row

    def job(self, job_id: str) -> Job | None:
        """A job by id, read inside the transaction."""
        row = self.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    def add_event(
        self,
        job_id: str | None,
        type_: str,
        source: str,
        now: float,
        data: dict[str, Any],
        dedupe: str | None = None,
        job: Job | None = None,
    ) -> Event | None:
        """Append an event; None when an event with the same dedupe key already exists.

        `job` is the job as this event leaves it, for the hooks (it saves them a query)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO events (job_id, type, source, created_at, data, dedupe)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, type_, source, now, dumps(data), dedupe),
        )
        if cur.rowcount == 0:
            return None
        event = Event(int(cur.lastrowid or 0), job_id, type_, source, now, data)
        for hook in self.hooks:
            hook(self, event, job)
        self.signal("events")
        return event


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("service") / "sql"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql") and entry.name[:3].isdigit():
            found.append((int(entry.name[:3]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _migrate(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in _migrations():
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # re-check under the write lock: another process may have migrated meanwhile
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if number > current:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = number
    return version


def _statements(script: str) -> list[str]:
    """Split a migration into statements (triggers hold `;` inside BEGIN ... END)."""
    out: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            out.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        out.append(buffer.strip())
    return out


def _run_units(conn: sqlite3.Connection, batch: list[tuple[Fn, Tx]]) -> list[tuple[bool, Any]]:
    """Open a transaction and run every unit in a savepoint, so one failure spoils no other."""
    results: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn, tx in batch:
            conn.execute("SAVEPOINT unit")
            try:
                results.append((True, fn(tx)))
                conn.execute("RELEASE unit")
            except Exception as exc:
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                tx.signals.clear()
                results.append((False, exc))
    except BaseException:
        _rollback(conn)
        raise
    return results


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


async def _on_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` on the connection's own thread in one hop.

    aiosqlite has no public call for this; group commit needs a whole batch per hop
    (PERF-NOTES: each await on aiosqlite costs a thread round trip), hence the pinned minor.
    """
    result: T = await conn._execute(fn, conn._conn)  # type: ignore[no-untyped-call]
    return result


def _connect_options(conn: sqlite3.Connection) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")


class Store:
    """The database: `write` runs units of work through one group-commit writer."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._queue: asyncio.Queue[tuple[Fn, Tx, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.hooks: list[EventHook] = []
        self._waiters: dict[str, asyncio.Event] = {}

    @classmethod
    async def open(cls, path: str) -> Store:
        """Open (creating folders and schema as needed) the database at `path`."""
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # The writer's units run on the event loop's thread (check_same_thread=False) and
        # only COMMIT runs on aiosqlite's: see Store._write_loop.
        writer = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
        await _on_thread(writer, _connect_options)
        await _on_thread(writer, _migrate)
        reader = await aiosqlite.connect(path, isolation_level=None)
        await _on_thread(reader, _connect_options)
        store = cls(writer, reader)
        store._task = asyncio.create_task(store._write_loop(), name="store-writer")
        return store

    async def close(self) -> None:
        """Finish queued writes and close both connections."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._writer.close()
        await self._reader.close()

    def waiter(self, name: str) -> asyncio.Event:
        """An event set after each commit that signalled `name` (clear it before waiting)."""
        return self._waiters.setdefault(name, asyncio.Event())

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` inside a write transaction; return once it is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((fn, Tx(self._writer._conn, self.hooks), future))
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the reader connection (WAL: it never blocks the writer)."""
        return await _on_thread(self._reader, fn)

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            # Group commit: take whatever queued while the last batch ran, no timer.
            while not self._queue.empty() and len(batch) < 2000:
                batch.append(self._queue.get_nowait())
            try:
                # Units run here, on the loop's thread: SQLite statements take microseconds,
                # and running them on another thread costs more in GIL hand-offs with the
                # event loop than the statements themselves (measured: 107 vs 45 us a unit).
                # COMMIT (the fsync) goes to the connection's thread, which releases the GIL
                # while it waits, so the loop serves requests meanwhile.
                results = _run_units(self._writer._conn, [(fn, tx) for fn, tx, _ in batch])
                await _on_thread(self._writer, _commit)
            except Exception as exc:
                log.exception("write batch of %d failed", len(batch))
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                fired: set[str] = set()
                for (ok, value), (_, tx, future) in zip(results, batch, strict=True):
                    fired |= tx.signals
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                for name in fired:
                    self.waiter(name).set()
            finally:
                for _ in batch:
                    self._queue.task_done()

    # -- meta --------------------------------------------------------------------------------

    async def meta_get_or_set(self, key: str, make: Callable[[], str]) -> str:
        """The stored value of `key`, storing `make()` first when there is none."""

        def unit(tx: Tx) -> str:
            # OR IGNORE: two processes starting on a new database keep the first one's value
            tx.conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, make()))
            row = tx.one("SELECT value FROM meta WHERE key = ?", (key,))
            assert row is not None  # noqa: S101 - inserted or already there
            return str(row["value"])

        return await self.write(unit)

    # -- reads -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """A job by id."""

        def q(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return Job.from_row(row) if row else None

        return await self.read(q)

    async def list_jobs(
        self, *, status: str | None, model: str | None, before: int | None, limit: int
    ) -> list[Job]:
        """Jobs newest first, keyset-paginated on seq."""
        where: list[str] = []
        params: list[Any] = []
        if status:
            where.append("status = ?")
            params.append(status)
        if model:
            where.append("model = ?")
            params.append(model)
        if before is not None:
            where.append("seq < ?")
            params.append(before)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)

        def q(conn: sqlite3.Connection) -> list[Job]:
            return [Job.from_row(r) for r in conn.execute(sql, params)]

        return await self.read(q)

    async def events(
        self, *, job_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[Event]:
        """Events oldest first after a cursor, for one job or for all."""
        if job_id is None:
            sql = "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?"
            params: tuple[Any, ...] = (after, limit)
        else:
            sql = "SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?"
            params = (job_id, after, limit)

        def q(conn: sqlite3.Connection) -> list[Event]:
            return [Event.from_row(r) for r in conn.execute(sql, params)]

        return await self.read(q)

    async def idempotent(self, key: str) -> Idempotent | None:
        """A stored idempotency key."""

        def q(conn: sqlite3.Connection) -> Idempotent | None:
            row = conn.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
            return _idem(row) if row else None

        return await self.read(q)

    async def next_due(self, provider: str) -> float | None:
        """The earliest poll time scheduled for a provider."""

        def q(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(next_poll_at) FROM jobs"
                " WHERE provider = ? AND next_poll_at IS NOT NULL",
                (provider,),
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self.read(q)


def _idem(row: sqlite3.Row) -> Idempotent:
    return Idempotent(
        row["key"],
        row["request_hash"],
        row["job_id"],
        row["status_code"],
        json.loads(row["response"]) if row["response"] else None,
    )


def body_hash(body: bytes) -> str:
    """A short stable digest of a raw body."""
    return hashlib.sha256(body).hexdigest()[:32]


__all__ = ["Event", "Idempotent", "Job", "Store", "Tx", "body_hash", "dumps", "iso", "jobs"]
