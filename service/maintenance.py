"""`upscale-relay prune` and `upscale-relay backup`: the database's upkeep, by hand."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

COMMANDS = ("prune", "backup")


def add_parsers(sub: Any) -> None:
    """Add the `prune` and `backup` subcommands to `sub` (argparse's add_subparsers())."""
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database", help="the relay's database (default $RELAY_DATABASE, as `serve` reads it)"
    )
    prune = sub.add_parser(
        "prune",
        parents=[database],
        help="delete the events, deliveries and attempts of jobs that ended long ago",
        description="Delete, in small batches, the events (with the raw callbacks in them), "
        "deliveries and delivery attempts of jobs that ended longer ago than --older-than. "
        "The jobs themselves stay, with their final state, outputs and error. Safe while the "
        "relay runs.",
    )
    prune.add_argument(
        "--older-than", required=True, type=_age, metavar="AGE", help="e.g. 30d, 12h, 90m"
    )
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    backup = sub.add_parser(
        "backup",
        parents=[database],
        help="copy a SQLite database while the relay runs (or print pg_dump's command)",
        description="SQLite: a consistent copy of the database, taken while the relay runs "
        "and writes, into a new file (mode 0600: it holds every secret). PostgreSQL: prints "
        "the pg_dump command to run.",
    )
    backup.add_argument("path", metavar="PATH", help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")


def _age(value: str) -> float:
    from service.retention import parse_age

    try:
        return parse_age(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Run `prune` or `backup`; the exit code."""
    database = args.database or _configured_database()
    if database is None:
        return 2
    if args.command == "prune":
        return asyncio.run(_prune(database, args.older_than, args.dry_run))
    return _backup(database, Path(args.path), args.force)


def _configured_database() -> str | None:
    from service import config

    try:
        return config.load().database
    except config.ConfigError as exc:
        print(f"upscale-relay: {exc}", file=sys.stderr)
        return None


async def _prune(database: str, older_than: float, dry_run: bool) -> int:
    from service import retention
    from service.errors import StorageUnavailable
    from service.store import open_store, redacted

    missing = _missing_sqlite(database)
    if missing:
        print(f"upscale-relay: {missing}", file=sys.stderr)
        return 1
    now = time.time()
    try:
        store = await open_store(database)
    except StorageUnavailable as exc:
        where = redacted(database)
        print(f"upscale-relay: cannot use the database {where}: {exc.reason}", file=sys.stderr)
        return 1
    try:
        if dry_run:
            done = await store.prunable(now - older_than)
        else:
            done = await retention.prune(store, now - older_than, now)
    finally:
        await store.close()
    cutoff = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now - older_than))
    verb = "would delete" if dry_run else "deleted"
    print(f"jobs that ended before {cutoff} ({redacted(database)}):")
    print(f"  {verb} {done.events} events (raw callbacks included)")
    print(f"  {verb} {done.deliveries} deliveries")
    print(f"  {verb} {done.attempts} delivery attempts")
    kept = "would keep" if dry_run else "kept"
    print(f"  {kept} the rows of {done.jobs} jobs (final state, outputs, error)")
    return 0


def _missing_sqlite(database: str) -> str | None:
    """Why `database` names no SQLite file to work on (these commands never create one)."""
    from service.store import engine_of
    from service.store.transfer import sqlite_path

    if engine_of(database) == "postgresql":
        return None
    path = sqlite_path(database)
    if path is None or not Path(path).is_file():
        return f"no SQLite database at {database}"
    return None


def _backup(database: str, target: Path, force: bool) -> int:
    from service.store import engine_of
    from service.store.sqlite.backup import BackupFailed, backup
    from service.store.transfer import sqlite_path

    if engine_of(database) == "postgresql":
        print(pg_dump_advice(database, target))
        return 0
    missing = _missing_sqlite(database)
    source = sqlite_path(database)
    if missing or source is None:
        print(f"upscale-relay: {missing}", file=sys.stderr)
        return 1
    if target.exists() and not force:
        print(f"upscale-relay: {target} exists; pass --force to replace it", file=sys.stderr)
        return 1
    if target.exists() and target.resolve() == Path(source).resolve():
        print("upscale-relay: the backup cannot replace the database itself", file=sys.stderr)
        return 1
    try:
        jobs = backup(Path(source), target)
    except BackupFailed as exc:
        print(f"upscale-relay: backup failed: {exc}", file=sys.stderr)
        return 1
    size = target.stat().st_size
    print(f"backed up {source} to {target}: {jobs} jobs, {size} bytes (mode 0600)")
    return 0


def pg_dump_advice(database: str, target: Path) -> str:
    """The pg_dump (and pg_restore) commands for a PostgreSQL relay, without its password."""
    parts = urlsplit(database)
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].split(":", 1)[0] if "@" in parts.netloc else ""
    netloc = f"{user}@{host}" if user else host
    pairs = parts.query.split("&")
    query = "&".join(p for p in pairs if p and not p.lower().startswith("password="))
    url = shlex.quote(urlunsplit((parts.scheme, netloc, parts.path, query, "")))
    new_path = (parts.path.rstrip("/") or "/relay") + "_restored"
    restored = shlex.quote(urlunsplit((parts.scheme, netloc, new_path, query, "")))
    path = shlex.quote(str(target))
    return "\n".join(
        [
            "This relay keeps its data in PostgreSQL: back it up with pg_dump, which takes a",
            "consistent snapshot while the relay runs. The password is not printed: set",
            "PGPASSWORD=... in the command's environment, or put it in ~/.pgpass.",
            "",
            f"  pg_dump --format=custom --file={path} {url}",
            "",
            "Restore into a new, empty database (createdb it first), then point",
            "RELAY_DATABASE at it and start the relay:",
            "",
            f"  pg_restore --no-owner --exit-on-error --dbname={restored} {path}",
        ]
    )
