"""SQLite adapter: one group-commit writer, one reader, versioned migrations, the reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from service.errors import StorageUnavailable
from service.store import jobquery
from service.store.archives import Archive
from service.store.base import Grouped, Tx, Unit, run_hooks
from service.store.model import Idempotent, Job, _idem
from service.store.records import Event, Pruned
from service.store.schema import migrations, refuse_newer
from service.store.sqlite import retention
from service.store.sqlite.reads import Reads
from service.store.sqlite.tx import SqliteTx

log = logging.getLogger(__name__)
T = TypeVar("T")


def _migrations() -> list[tuple[int, str]]:
    return migrations("service.store.sqlite")


def _migrate(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    known = _migrations()
    refuse_newer(version, known)
    for number, script in known:
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


# Primary result codes that blame the storage, not the statement: the write may succeed later.
_STORAGE_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOLFS,
        sqlite3.SQLITE_NOTADB,
    }
)


def storage_error(exc: BaseException) -> StorageUnavailable | None:
    """The 503 an exception amounts to when the storage caused it; None for any other."""
    if isinstance(exc, StorageUnavailable):
        return exc
    if isinstance(exc, OSError):
        return StorageUnavailable(exc.strerror or str(exc))
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.DatabaseError) and isinstance(code, int):
        if code & 0xFF in _STORAGE_CODES:
            return StorageUnavailable(str(exc))
    return None


# How long a write waits by default for another connection (another process) to release the
# write lock before it fails as storage_unavailable. The wait happens on the writer's thread,
# never on the event loop's: the writer connection's own busy timeout is 0 (_begin_or_busy).
LOCK_WAIT = 10.0


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether another connection holds the lock this statement needs."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_BUSY


def _begin_or_busy(conn: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE at once (busy timeout 0: this never waits); False if the lock is held."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _busy(exc):
            return False
        raise
    return True


def _waiting(conn: sqlite3.Connection, sql: str, wait_ms: int) -> None:
    """Run `sql`, waiting up to `wait_ms` for a lock: only ever on the writer's thread."""
    try:
        conn.execute(sql)
        return
    except sqlite3.OperationalError as exc:
        if not _busy(exc):
            raise
    conn.execute(f"PRAGMA busy_timeout = {wait_ms:d}")
    try:
        conn.execute(sql)
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


SqliteUnit = Unit[Any]


def on_connection(fn: Callable[[sqlite3.Connection], T]) -> Unit[T]:
    """A unit of the adapter's own that runs `fn` on the writer connection."""

    async def unit(tx: Tx) -> T:
        assert isinstance(tx, SqliteTx)  # noqa: S101 - this adapter's units get its Tx
        return fn(tx.conn)

    return unit


def _run(fn: SqliteUnit, tx: Tx) -> Any:
    """Run a unit to its end without the event loop: the SQLite repositories never suspend,
    so the whole batch runs in one go on the loop's thread (~1 us per await)."""
    coro = fn(tx)
    assert isinstance(coro, Coroutine)  # noqa: S101 - units are async functions
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a unit of work awaited something other than the store inside SQLite")


# The shortest run of like units written together: measured per callback on the loop's
# thread (bench/grouped_writes.py), two grouped cost ~5 us more than two alone, four 8-14 us
# less, 32 23-29 us less.
GROUPED_FROM = 4


def _run_units(
    conn: sqlite3.Connection, batch: list[tuple[SqliteUnit, SqliteTx]]
) -> list[tuple[bool, Any]]:
    """Run every unit of an open transaction in a savepoint, so one failure spoils no other;
    a run of like Grouped units is written together first (see _run_group)."""
    results: list[tuple[bool, Any]] = []
    try:
        start = 0
        while start < len(batch):
            end = _run_of(batch, start)
            if end - start >= GROUPED_FROM:
                results += _run_group(conn, batch[start:end])
            else:
                results += [_run_alone(conn, fn, tx) for fn, tx in batch[start:end]]
            start = end
    except BaseException:
        _rollback(conn)
        raise
    return results


def _run_of(batch: list[tuple[SqliteUnit, SqliteTx]], start: int) -> int:
    """Where the run of Grouped units that may be written together from `start` ends: the
    same `together`, no key twice (a job's second callback waits for the next run)."""
    first = batch[start][0]
    if not isinstance(first, Grouped):
        return start + 1
    keys: set[str] = set()
    end = start
    while end < len(batch):
        fn = batch[end][0]
        if not isinstance(fn, Grouped) or fn.together is not first.together or fn.key in keys:
            break
        keys.add(fn.key)
        end += 1
    return end


def _run_group(
    conn: sqlite3.Connection, run: list[tuple[SqliteUnit, SqliteTx]]
) -> list[tuple[bool, Any]]:
    """A run of Grouped units written set-based in one savepoint; the units it leaves, each
    alone after it. If it fails, nothing of it is kept and each unit runs alone, whole, so one
    bad unit fails only itself."""
    units = [fn for fn, _ in run if isinstance(fn, Grouped)]
    txs = [tx for _, tx in run]
    items = [fn.item for fn in units]
    conn.execute("SAVEPOINT grouped")
    try:
        done = _run(lambda _: units[0].together(txs, items), txs[0])
        if not isinstance(done, list) or len(done) != len(run):
            raise RuntimeError("a grouped write answered for other units than it was given")
        conn.execute("RELEASE grouped")
    except Exception:
        if not conn.in_transaction:
            raise  # the whole transaction is gone (a full disk, an I/O error): see _run_alone
        conn.execute("ROLLBACK TO grouped")
        conn.execute("RELEASE grouped")
        for tx in txs:
            tx.channels.clear()
            tx.hooks = None
        return [_run_alone(conn, fn.whole, tx) for fn, tx in zip(units, txs, strict=True)]
    return [
        (True, value) if value is not None else _run_alone(conn, fn.rest, tx)
        for fn, tx, value in zip(units, txs, done, strict=True)
    ]


def _run_alone(conn: sqlite3.Connection, fn: SqliteUnit, tx: SqliteTx) -> tuple[bool, Any]:
    """One unit in its own savepoint: what it did is kept, or nothing of it (its error)."""
    conn.execute("SAVEPOINT unit")
    try:
        value = _run(fn, tx)
        conn.execute("RELEASE unit")
    except Exception as exc:
        if not conn.in_transaction:
            # SQLite may roll the whole transaction back on a full disk or an I/O
            # error: then no unit of the batch is kept, and none may be acknowledged.
            raise
        conn.execute("ROLLBACK TO unit")
        conn.execute("RELEASE unit")
        tx.channels.clear()
        tx.hooks = None
        return False, exc
    return True, value


def _commit(conn: sqlite3.Connection, wait_ms: int) -> None:
    try:
        _waiting(conn, "COMMIT", wait_ms)
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _connect_options(conn: sqlite3.Connection, wait_ms: int) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA busy_timeout = {wait_ms:d}")
    conn.execute("PRAGMA foreign_keys = ON")


def _prepare(path: Path) -> None:
    """Create the database's missing folders (0700) and its file (0600): it holds every secret."""
    missing: list[Path] = []
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=0o700, exist_ok=True)
    # SQLite gives the -wal and -shm files the database file's mode, so this covers them too.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)


# The writer's prepared statements kept: its own (~100) and the set-based ones, one per size
# from GROUPED_FROM to GROUP_MOST rows (sqlite3's default keeps 128, which they would churn).
CACHED_STATEMENTS = 1024


def _open_writer(path: str, wait_ms: int) -> sqlite3.Connection:
    """The writer connection, migrated: run on the writer's thread (migrations wait for locks)."""
    if path != ":memory:":
        _prepare(Path(path))
    # check_same_thread=False: the writer's thread opens it and runs BEGIN (when it must wait)
    # and COMMIT; the event loop's thread runs the units in between (Store._write_loop). The
    # two never touch it at the same time: the loop awaits each call it hands over.
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=CACHED_STATEMENTS
    )
    try:
        _connect_options(conn, wait_ms)
        _migrate(conn)
        conn.execute("PRAGMA busy_timeout = 0")
    except BaseException:
        conn.close()
        raise
    return conn


def _open_reader(path: str, wait_ms: int) -> sqlite3.Connection:
    """The reader connection; opened, used and closed only on the reader's thread."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _connect_options(conn, wait_ms)
    except BaseException:
        conn.close()
        raise
    return conn


_Call = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


# A plain thread and queue rather than concurrent.futures: measured on one core, a round
# trip costs the loop ~11 us this way against ~27 us through loop.run_in_executor.
class _Line:
    """A connection and the one thread of its own that runs its blocking calls, in order."""

    __slots__ = ("_calls", "_closed", "_thread", "conn")

    def __init__(self, name: str) -> None:
        self.conn: sqlite3.Connection | None = None
        self._closed = False
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # daemon: a store never closed must not keep the process alive; close() joins it
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args = call
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                future.get_loop().call_soon_threadsafe(_settle, future, *outcome)

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`fn(*args)` on this line's thread; the event loop serves others meanwhile."""
        if self._closed:
            raise RuntimeError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((future, fn, args))
        return future

    async def close(self) -> None:
        """Close the connection on its thread, then end the thread (idle by then)."""
        try:
            if self.conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    await self.call(self.conn.close)
        finally:
            self.conn = None
            self._closed = True
            # a thread left behind would outlive a failed start
            self._calls.put(None)
            self._thread.join()


# The readiness probe stores this many bytes and takes them back: as much as a callback
# keeps of its body, so "ready" means such a write fits.
PROBE_BYTES = 65536


class SqliteStore(Reads):
    """The database: `write` runs units of work through one group-commit writer; reads beside."""

    def __init__(self, writer: _Line, reader: _Line, path: str, wait_ms: int) -> None:
        assert writer.conn is not None and reader.conn is not None  # noqa: S101 - opened
        self._writer = writer
        self._reader = reader
        self._writer_conn = writer.conn
        self._reader_conn = reader.conn
        self.path = path
        self._wait_ms = wait_ms
        self._queue: asyncio.Queue[tuple[SqliteUnit, SqliteTx, asyncio.Future[Any]]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self._memo: dict[str, Any] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        # why the last write failed, while writes fail for a reason of the storage's own
        self.refusing: str | None = None

    @classmethod
    async def open(cls, path: str, *, lock_wait: float = LOCK_WAIT) -> SqliteStore:
        """Open (creating folders and schema as needed) the database at `path`.

        A write waits up to `lock_wait` seconds for another connection's lock.
        Raises StorageUnavailable when the file cannot be created, opened or written."""
        try:
            return await cls._open(path, round(lock_wait * 1000))
        except Exception as exc:
            failure = storage_error(exc)
            if failure is None:
                raise
            raise failure from exc

    @classmethod
    async def _open(cls, path: str, wait_ms: int) -> SqliteStore:
        writer, reader = _Line("store-writer"), _Line("store-reader")
        try:
            writer.conn = await writer.call(_open_writer, path, wait_ms)
            reader.conn = await reader.call(_open_reader, path, wait_ms)
        except BaseException:
            await reader.close()
            await writer.close()
            raise
        store = cls(writer, reader, path, wait_ms)
        store._task = asyncio.create_task(store._write_loop(), name="store-writer")
        return store

    @classmethod
    async def check(cls, path: str) -> None:
        """Open the database at `path` and store a probe; StorageUnavailable says why not."""
        store = await cls.open(path)
        try:
            await store.probe()
        finally:
            await store.close()

    async def close(self) -> None:
        """Finish queued writes and close both connections."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._writer.close()
        await self._reader.close()

    @property
    def where(self) -> str:
        """The database file's path."""
        return self.path

    def waiter(self, channel: str) -> asyncio.Event:
        """An event set after each commit that notified `channel` (clear it before waiting)."""
        return self._waiters.setdefault(channel, asyncio.Event())

    async def write(self, fn: Unit[T]) -> T:
        """Run `fn` inside a write transaction; return once it is committed.

        Raises StorageUnavailable (nothing of `fn` kept) when the storage refuses the write."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((fn, SqliteTx(self._writer_conn, self._memo), future))
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the reader connection, on its thread (WAL: it never blocks the writer)."""
        try:
            return await self._reader.call(fn, self._reader_conn)
        except sqlite3.DatabaseError as exc:
            failure = storage_error(exc)
            if failure is None:
                raise
            raise failure from exc

    async def probe(self) -> None:
        """Store PROBE_BYTES and take them back, committed: StorageUnavailable if it fails."""

        def unit(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', zeroblob(?))",
                (PROBE_BYTES,),
            )
            conn.execute("DELETE FROM meta WHERE key = 'probe'")

        await self.write(on_connection(unit))

    async def limit_size(self, max_bytes: int | None) -> None:
        """Cap the database at `max_bytes` (never below its size now); None lifts the cap."""

        def unit(conn: sqlite3.Connection) -> None:
            page = int(conn.execute("PRAGMA page_size").fetchone()[0])
            pages = 4294967294 if max_bytes is None else max(1, max_bytes // page)
            conn.execute(f"PRAGMA max_page_count = {pages:d}")

        await self.write(on_connection(unit))

    def _refused(self, failure: StorageUnavailable) -> None:
        if self.refusing is None:
            log.warning("the database %s refuses writes: %s", self.path, failure.reason)
        self.refusing = failure.reason

    def _stored(self) -> None:
        if self.refusing is not None:
            log.warning("the database %s takes writes again", self.path)
        self.refusing = None

    async def _write_loop(self) -> None:
        conn, wait_ms = self._writer_conn, self._wait_ms
        while True:
            first = await self._queue.get()
            batch = [first]
            # Group commit: take whatever queued while the last batch ran, no timer.
            while not self._queue.empty() and len(batch) < 2000:
                batch.append(self._queue.get_nowait())
            try:
                # The write lock: taken here at once when it is free; when another connection
                # holds it, the wait goes to the writer's thread, so the loop never stalls on it.
                if not _begin_or_busy(conn):
                    await self._writer.call(_waiting, conn, "BEGIN IMMEDIATE", wait_ms)
                # Units run here, on the loop's thread: SQLite statements take microseconds,
                # and running them on another thread costs more in GIL hand-offs with the
                # event loop than the statements themselves (measured: 107 vs 45 us a unit).
                # COMMIT (the fsync) goes to the writer's thread, which releases the GIL
                # while it waits, so the loop serves requests meanwhile.
                results = _run_units(conn, [(fn, tx) for fn, tx, _ in batch])
                await self._writer.call(_commit, conn, wait_ms)
            except Exception as exc:
                failure = storage_error(exc)
                if failure is None:
                    log.exception("write batch of %d failed", len(batch))
                else:
                    self._refused(failure)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(failure or exc)
            else:
                fired: set[str] = set()
                refused: StorageUnavailable | None = None
                stored = False
                for (ok, value), (_, tx, future) in zip(results, batch, strict=True):
                    fired |= tx.channels
                    if ok:
                        stored = True
                    else:
                        value = storage_error(value) or value
                        if isinstance(value, StorageUnavailable):
                            refused = value
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                if refused is not None:
                    self._refused(refused)
                elif stored:
                    self._stored()
                for name in fired:
                    self.waiter(name).set()
                for _, tx, _ in batch:
                    if tx.hooks:
                        run_hooks(tx.hooks)
            finally:
                for _ in batch:
                    self._queue.task_done()

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, before: float, now: float, budget: int) -> Pruned | None:
        """One retention batch, one unit of work (SQLite's write lock: one writer at a time)."""
        return await self.write(on_connection(lambda c: retention.batch(c, before, now, budget)))

    async def prunable(self, before: float) -> Pruned:
        """What pruning every job ended before `before` would remove; nothing changes."""
        return await self.read(lambda conn: retention.preview(conn, before))

    # -- meta --------------------------------------------------------------------------------

    async def meta_get_or_set(self, key: str, make: Callable[[], str]) -> str:
        """The stored value of `key`, storing `make()` first when there is none."""

        def unit(conn: sqlite3.Connection) -> str:
            # DO NOTHING: two processes starting on a new database keep the first one's value
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, make())
            )
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            assert row is not None  # noqa: S101 - inserted or already there
            return str(row["value"])

        return await self.write(on_connection(unit))

    # -- reads -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """A job by id."""

        def q(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return Job.from_row(row) if row else None

        return await self.read(q)

    async def archives(self, job_id: str) -> list[Archive]:
        """A job's archives rows, by output number."""

        def q(conn: sqlite3.Connection) -> list[Archive]:
            rows = conn.execute(
                "SELECT * FROM archives WHERE job_id = ? ORDER BY n", (job_id,)
            ).fetchall()
            return [Archive.from_row(r) for r in rows]

        return await self.read(q)

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
        """Jobs newest first, keyset-paginated on seq."""
        where, params = jobquery.jobs_where(
            "sqlite",
            status=status,
            model=model,
            provider=provider,
            metadata=metadata,
            before=before,
        )
        sql = jobquery.jobs_sql("sqlite", where)

        def q(conn: sqlite3.Connection) -> list[Job]:
            return [Job.from_row(r) for r in conn.execute(sql, (*params, limit))]

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
