"""SQLite adapter: an online backup of a database, into a new file of mode 0600."""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path


class BackupFailed(Exception):
    """The backup could not be made (the reason says why); nothing is left at the target."""


def backup(source: Path, target: Path) -> int:
    """Copy the database at `source` into `target` (replaced if it exists) while other
    connections write; returns the jobs in the copy. Raises BackupFailed."""
    try:
        return _copy(source, target)
    except (OSError, sqlite3.Error) as exc:
        raise BackupFailed(str(exc)) from exc


def _copy(source: Path, target: Path) -> int:
    """Copy the database at `source` into `target` (replaced if it exists): one consistent
    snapshot, taken while other connections write; returns the jobs in the copy."""
    # A new file of mode 0600 beside the target, renamed over it once complete: a failed or
    # interrupted backup never leaves a partial file under the target's name.
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(partial)
            try:
                dst.execute("PRAGMA synchronous = FULL")
                # pages=-1: the whole database in one step, under one read transaction. In WAL
                # mode that read blocks no writer, and it is one snapshot; a copy made in
                # several steps starts over whenever another connection writes.
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                jobs = int(dst.execute("SELECT count(*) FROM jobs").fetchone()[0])
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    _sync_folder(target.parent)
    return jobs


def _sync_folder(folder: Path) -> None:
    """Make the rename durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
