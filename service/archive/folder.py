"""The local-folder archive (RELAY_ARCHIVE=file:///...): written atomically, read in ranges."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from service.archive.backend import ArchiveError, Stored

# Bytes handed to one write in the worker thread: big enough to keep thread hops rare.
_FLUSH = 1024 * 1024


class FolderBackend:
    """Files under one folder: 0700 folders, 0600 files, each written to a temporary file in
    its own folder, fsynced, then renamed over its key (a crash leaves no half file)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        """The folder as a file:// URL."""
        return f"file://{self.root}"

    def path(self, key: str) -> Path:
        """Where `key` lives; a key never leaves the folder."""
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ArchiveError(f"invalid archive key {key!r}", retry=False)
        return self.root.joinpath(*parts)

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> Stored:
        """Stream `chunks` into the file of `key`, all or nothing."""
        target = self.path(key)
        try:
            await asyncio.to_thread(_folders, self.root, target.parent)
        except OSError as exc:
            reason = f"cannot create {target.parent}: {exc.strerror}"
            raise ArchiveError(reason, retry=True) from exc
        # a crash mid-write leaves its temporary file: the next write of the key removes it
        await asyncio.to_thread(_drop_parts, target)
        temp = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
        fd = await asyncio.to_thread(os.open, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        size = 0
        try:
            pending: list[bytes] = []
            held = 0
            async for chunk in chunks:
                pending.append(chunk)
                held += len(chunk)
                size += len(chunk)
                if held >= _FLUSH:
                    await asyncio.to_thread(_write_all, fd, pending)
                    pending, held = [], 0
            if pending:
                await asyncio.to_thread(_write_all, fd, pending)
            await asyncio.to_thread(os.fsync, fd)
            await asyncio.to_thread(os.close, fd)
            fd = -1
            await asyncio.to_thread(os.replace, temp, target)
            await asyncio.to_thread(_sync_dir, target.parent)
        except OSError as exc:
            raise ArchiveError(f"cannot write {key}: {exc.strerror}", retry=True) from exc
        finally:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return Stored(key, size)

    async def delete(self, key: str) -> None:
        """Remove the file of `key`; a missing one is no error."""
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path(key).unlink)

    async def url(self, key: str, ttl: int) -> str | None:
        """None: the relay serves the folder itself (GET /v1/outputs/{job_id}/{n})."""
        return None

    async def close(self) -> None:
        """Nothing to release."""


def _folders(root: Path, folder: Path) -> None:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def _drop_parts(target: Path) -> None:
    for left in target.parent.glob(f".{target.name}.*.part"):
        with contextlib.suppress(FileNotFoundError):
            left.unlink()


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _sync_dir(folder: Path) -> None:
    # the rename is durable once the folder's entry is on disk
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def read_range(
    path: Path, start: int, length: int, chunk: int = 256 * 1024
) -> AsyncIterator[bytes]:
    """`length` bytes of the file at `path` from `start`, in chunks (a range request's body)."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(handle.seek, start)
        left = length
        while left > 0:
            data = await asyncio.to_thread(handle.read, min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data
    finally:
        handle.close()
