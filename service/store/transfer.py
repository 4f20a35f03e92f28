"""migrate-store: copy an installation from its SQLite file into an empty PostgreSQL database."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from service import owners
from service.errors import StorageUnavailable
from service.store import engine_of, open_store, redacted
from service.store.postgres.load import DatabaseError, PgTarget, TargetBusy
from service.store.sqlite.export import SourceError, SqliteSource

# In the order of their references; `owners` (process liveness) and `probe` stay behind.
TABLES = ("jobs", "archives", "events", "idempotency", "subscriptions", "deliveries", "attempts")
# A target holding any of these is someone's installation: never merged into.
GUARDED = (
    "jobs",
    "archives",
    "events",
    "subscriptions",
    "deliveries",
    "idempotency",
    "attempts",
)
SKIPPED_META = ("probe",)
VERSION_KEY = "subscriptions_version"  # the outbox's cache key: moved on so caches reload
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


class TransferError(Exception):
    """The copy did not happen; the message (no password in it) says why."""


@dataclass
class Report:
    """What was copied: rows per table and the last event id (the cursor to resume from)."""

    source: str
    target: str
    counts: dict[str, int] = field(default_factory=dict)
    last_event_id: int | None = None
    left_out: list[str] = field(default_factory=list)  # table.column the target lacks

    def lines(self) -> list[str]:
        """The report as printed by the command line."""
        out = [f"copied {self.source} -> {self.target}"]
        width = max(len(t) for t in self.counts)
        out += [
            f"  {table:<{width}}  {n:>8} row{'' if n == 1 else 's'}"
            for table, n in self.counts.items()
        ]
        last = "none" if self.last_event_id is None else str(self.last_event_id)
        out.append(f"last event id: {last}")
        if self.left_out:
            out.append(f"left out (the target has no such column): {', '.join(self.left_out)}")
        return out


def sqlite_path(value: str) -> str | None:
    """The file named by sqlite:///abs/path, sqlite://relative or a plain path; None if not."""
    if value.lower().startswith("sqlite://"):
        path = value[len("sqlite://") :]
        return path or None
    if "://" in value or not value:
        return None
    return value


def is_postgres(value: str) -> bool:
    """Whether `value` is a postgresql:// (or postgres://) URL with something after it."""
    return "://" in value and engine_of(value) == "postgresql" and bool(value.partition("://")[2])


async def _migrate_target(url: str) -> None:
    store = await open_store(url)  # the adapter creates and migrates the schema
    await store.close()


def _safe(text: str, url: str) -> str:
    """An error text with the URL's passwords masked, should a driver ever echo one."""
    parts = urlsplit(url)
    found = {parts.password or ""}
    found |= {v for k, v in parse_qsl(parts.query) if k.lower() == "password"}
    for password in sorted(found | {unquote(p) for p in found}, key=len, reverse=True):
        if password:
            text = text.replace(password, "***")
    return text


def migrate(source: str, target: str) -> Report:
    """Copy the SQLite installation at `source` into the empty PostgreSQL `target`.

    Raises TransferError, no row written (the schema may be), when it cannot."""
    path = sqlite_path(source)
    if path is None:
        raise TransferError(f"not a SQLite database: {source}")
    where = redacted(target)
    # the source first: a missing or running one is refused before the target is touched
    try:
        reader = SqliteSource(path)
    except SourceError as exc:
        raise TransferError(f"cannot read the source: {exc}") from exc
    try:
        running = reader.live_owners(owners.alive_after(time.time()))
        if running:
            raise TransferError(
                f"a relay is running on {path} ({running} process{'es' if running > 1 else ''}"
                f" with a heartbeat in the last {owners.DEAD_AFTER:g} s): stop it first"
            )
        asyncio.run(_migrate_target(target))
        writer = PgTarget(target)
    except StorageUnavailable as exc:
        reader.close()
        raise TransferError(f"cannot use the target: {_safe(exc.reason, target)}") from exc
    except DatabaseError as exc:
        reader.close()
        raise TransferError(f"cannot use the target {where}: {_safe(str(exc), target)}") from exc
    except BaseException:
        reader.close()
        raise
    report = Report(path, where)
    try:
        with writer.transaction((*TABLES, "meta")):
            _refuse_non_empty(writer, where)
            for table in TABLES:
                report.counts[table] = _copy_table(reader, writer, table, report.left_out)
            report.counts["meta"] = _copy_meta(reader, writer)
            writer.move_identities(TABLES)
            report.last_event_id = writer.last("events", "id")
    except SourceError as exc:
        raise TransferError(f"cannot read the source, nothing was kept: {exc}") from exc
    except TargetBusy as exc:
        raise TransferError(f"the target {where} is busy: {exc}") from exc
    except DatabaseError as exc:
        message = _safe(str(exc).strip().splitlines()[0] if str(exc).strip() else "", target)
        raise TransferError(
            f"copying into {where} failed, nothing was kept: {type(exc).__name__}: {message}"
        ) from exc
    finally:
        writer.close()
        reader.close()
    return report


def _refuse_non_empty(writer: PgTarget, where: str) -> None:
    held = [(table, writer.count(table)) for table in GUARDED]
    held = [(table, n) for table, n in held if n]
    if held:
        listed = ", ".join(f"{table} has {n} row{'s' if n != 1 else ''}" for table, n in held)
        raise TransferError(f"the target {where} is not empty ({listed}); nothing was copied")


def _copy_table(reader: SqliteSource, writer: PgTarget, table: str, left_out: list[str]) -> int:
    wanted = set(writer.columns(table))
    # by name, both sides' columns: a column only the target knows takes its default; one
    # only the source knows (a newer relay's file) is named in the report
    have = reader.columns(table)
    columns = [c for c in have if c in wanted and _NAME.fullmatch(c)]
    left_out += [f"{table}.{c}" for c in have if c not in columns]
    if not columns:
        return 0
    return writer.copy(table, columns, reader.rows(table, columns))


def _copy_meta(reader: SqliteSource, writer: PgTarget) -> int:
    if not reader.columns("meta"):
        return 0
    before = writer.get_meta(VERSION_KEY)
    skipped = ", ".join(f"'{k}'" for k in SKIPPED_META)
    rows = reader.rows("meta", ("key", "value"), f"WHERE key NOT IN ({skipped})")
    count = writer.put_meta((str(k), str(v)) for k, v in rows)
    after = writer.get_meta(VERSION_KEY)
    if before is not None or after is not None:
        # a process that cached the target's subscriptions under a version the copy happened
        # to repeat would keep a stale list: the version moves past both sides'
        versions = [int(v) for v in (before, after) if v is not None and v.isdigit()]
        writer.put_meta([(VERSION_KEY, str(max(versions, default=0) + 1))])
    return count
