"""An S3-compatible bucket as the archive (AWS S3, Cloudflare R2, MinIO, Backblaze B2)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import obstore
from obstore import exceptions as obx
from obstore.store import S3Store

from service.archive.backend import ArchiveError, Stored

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

    from service.archive.backend import Backend

# Parts of 8 MiB (S3's floor is 5 MiB, R2 wants equal parts: obstore cuts them equal); two in
# flight at once, so a put holds about three parts whatever the object's size.
PART: Final = 8 * 1024 * 1024
CONCURRENCY: Final = 2
CLOSE_GRACE: Final = 0.1  # seconds: see close()
ABORT_WAIT: Final = 5.0  # seconds a cancelled put waits for obstore to abort its upload
# S3 refuses a presigned URL valid for more than 7 days.
MAX_TTL: Final = 7 * 24 * 3600
# obstore retries network errors and 5xx within one request; the archiver has its own durable
# schedule, so a few quick tries here and then ArchiveError(retry=True), never minutes of it.
RETRY: Final[RetryConfig] = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=30),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5)},
}

# object_store's message of a failed request: "Server returned non-2xx status code: 404 Not
# Found: <?xml ...<Code>NoSuchBucket</Code>...". Only the status and S3's error code are kept:
# the rest can carry the request's URL and, for a bad signature, the access key id.
_STATUS = re.compile(r"status code: (\d{3})\b")
_CODE = re.compile(r"<Code>([A-Za-z0-9.]{1,64})</Code>")
# With no key in the environment, object_store asks the instance's or task's metadata service
# (EC2 IMDS, ECS, EKS web identity) for credentials; its failure reads like a bucket's.
_CREDENTIAL_SOURCES = re.compile(
    r"/latest/api/token|/latest/meta-data/|169\.254\.170\.2|AssumeRoleWithWebIdentity"
)
_REFUSED: Final = (obx.PermissionDeniedError, obx.UnauthenticatedError, PermissionError)
_NOT_FOUND: Final = (obx.NotFoundError, FileNotFoundError)
_INVALID: Final = (
    obx.InvalidPathError,
    obx.NotSupportedError,
    obx.UnknownConfigurationKeyError,
    obx.AlreadyExistsError,
    obx.PreconditionError,
)
_FAILURES: Final = (obx.BaseError, OSError, ValueError)


class S3Backend:
    """Archived outputs in a bucket under a prefix, through obstore (Rust's object_store)."""

    def __init__(self, store: S3Store, bucket: str, prefix: str, endpoint: str | None) -> None:
        self._store = store
        self._bucket = bucket
        self._prefix = prefix
        self._endpoint = endpoint

    @classmethod
    def from_url(cls, url: str, endpoint: str | None, region: str | None) -> S3Backend:
        """`s3://bucket/prefix`; credentials and, without `region`, the region come from the
        AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION
        or AWS_DEFAULT_REGION) or the instance's role; `endpoint` for R2, MinIO, Backblaze."""
        bucket, prefix = parse_url(url)
        config: S3Config = {}
        client: ClientConfig = {}
        shown = None
        if endpoint:
            shown = _plain_endpoint(endpoint)
            config["endpoint"] = shown
            # path-style (endpoint/bucket/key): what MinIO and most other servers expect
            config["virtual_hosted_style_request"] = False
            if shown.startswith("http://"):
                client["allow_http"] = True  # a MinIO on the local network
        else:
            # AWS: bucket.s3.region.amazonaws.com, its recommended form; a dotted bucket name
            # would not match the *.s3 certificate there, so it stays path-style
            config["virtual_hosted_style_request"] = "." not in bucket
        if region:
            config["region"] = region
        try:
            store = S3Store(
                bucket,
                prefix=prefix or None,
                config=config,
                client_options=client,
                retry_config=RETRY,
            )
        except _FAILURES as exc:  # its text may quote a setting: only the kind of error
            kind = type(exc).__name__
            raise ValueError(f"the S3 archive's settings were refused ({kind})") from None
        return cls(store, bucket, prefix, shown)

    def describe(self) -> str:
        """`s3://bucket/prefix`, and the endpoint's scheme, host and path when one is set."""
        name = f"s3://{self._bucket}/{self._prefix}".rstrip("/")
        return f"{name} at {self._endpoint}" if self._endpoint else name

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> Stored:
        """One PUT when the object fits in a part; else a multipart upload, aborted on failure.
        An exception raised by `chunks` itself comes out unchanged, after the abort."""
        _check_key(key)
        source = _Source(chunks)
        await source.read_head(PART)
        try:
            if source.done:
                await obstore.put_async(
                    self._store,
                    key,
                    source.take_head(),
                    attributes={"Content-Type": content_type},
                    use_multipart=False,
                )
            else:
                await self._multipart(key, source, content_type)
        except _FAILURES as exc:
            if exc is source.failure:
                raise
            raise self._error("put", key, exc) from None
        if source.failure is not None:  # had obstore taken the error for the end: not kept
            with contextlib.suppress(*_FAILURES):
                await obstore.delete_async(self._store, key)
            raise source.failure
        return Stored(key=key, bytes=source.count)

    async def _multipart(self, key: str, source: _Source, content_type: str) -> None:
        upload = asyncio.ensure_future(
            obstore.put_async(
                self._store,
                key,
                source.rest(),
                attributes={"Content-Type": content_type},
                use_multipart=True,
                chunk_size=PART,
                max_concurrency=CONCURRENCY,
            )
        )
        try:
            await asyncio.shield(upload)
        except asyncio.CancelledError:
            # Cancelling obstore's future drops the upload without aborting it (a pending
            # multipart upload, billed until a lifecycle rule removes it). Instead the source
            # stops at its next chunk, obstore aborts, and then the cancellation goes on.
            source.abandoned = True
            done, _ = await asyncio.wait({upload}, timeout=ABORT_WAIT)
            if not done:
                upload.cancel()  # the source itself is stuck: the lifecycle rule cleans up
            elif not upload.cancelled():
                upload.exception()  # _Abandoned, expected: retrieved so asyncio stays quiet
            raise

    async def delete(self, key: str) -> None:
        """S3 answers 204 for a missing key, so a 404 here means the bucket is missing."""
        _check_key(key)
        try:
            await obstore.delete_async(self._store, key)
        except _FAILURES as exc:
            raise self._error("delete", key, exc) from None

    async def url(self, key: str, ttl: int) -> str | None:
        """A presigned GET (signed locally, no request) valid for `ttl` seconds, at most 7 days;
        with temporary credentials it also ends when they do. ~0.1 ms: see urls()."""
        return (await self.urls([key], ttl))[0]

    async def urls(self, keys: Sequence[str], ttl: int) -> list[str]:
        """Presigned GETs of several keys in one call: ~10 us a URL, where url() one at a time
        costs ~100 us (the hop to obstore's threads and back), so a page of jobs signs at once."""
        for key in keys:
            _check_key(key)
        if not keys:
            return []
        expires = timedelta(seconds=min(max(ttl, 1), MAX_TTL))
        try:
            return list(await obstore.sign_async(self._store, "GET", list(keys), expires))
        except _FAILURES as exc:
            raise self._error("sign", keys[0], exc) from None

    async def close(self) -> None:
        """Give obstore's runtime threads a moment to let go of their Python objects."""
        # A tokio thread drops its Python references (the awaited future, the event loop)
        # just after a call completes; if the interpreter is finalizing by then, CPython 3.11
        # ends that thread with pthread_exit, which aborts a Rust thread: SIGABRT at exit, in
        # 1 run in 5 to 10 of a script that exits right after a put; after a 10 ms pause, in
        # none of 90. The client pool itself closes with the store.
        await asyncio.sleep(CLOSE_GRACE)

    def _error(self, op: str, key: str, exc: BaseException) -> ArchiveError:
        where = f"{self.describe()} key {key}"
        text = str(exc)
        status = int(m.group(1)) if (m := _STATUS.search(text)) else None
        code = m.group(1) if (m := _CODE.search(text)) else None
        said = f" (HTTP {status}{f' {code}' if code else ''})" if status else ""
        if _CREDENTIAL_SOURCES.search(text):
            what = (
                "no credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are unset and the "
                "instance or task metadata service gave none"
            )
            retry = status is None or status >= 500  # a role being attached may yet appear
        elif isinstance(exc, _REFUSED) or status in (401, 403):
            what, retry = "the credentials were refused or lack permission", False
        elif isinstance(exc, _NOT_FOUND) or status == 404:
            what, retry = "no such bucket (or no permission to see it)", False
        elif status is not None and 400 <= status < 500 and status not in (408, 429):
            what, retry = "the request was refused", False
        elif isinstance(exc, _INVALID) or (status is None and isinstance(exc, ValueError)):
            what, retry = f"invalid request ({type(exc).__name__})", False
        elif status is not None:
            what, retry = "the server failed", True
        else:
            what, retry = "the endpoint could not be reached (network error or timeout)", True
        return ArchiveError(f"S3 {op} of {where} failed: {what}{said}", retry=retry)


class _Abandoned(Exception):
    """The put was cancelled: the source ends so that obstore aborts the upload."""


class _Source:
    """The caller's chunks: counts bytes and remembers an exception raised by them."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.count = 0
        self.done = False
        self.abandoned = False
        self._head = b""
        self.failure: BaseException | None = None

    async def _next(self) -> bytes | None:
        if self.abandoned:
            raise _Abandoned
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self.done = True
            return None
        except BaseException as exc:
            self.failure = exc
            raise
        self.count += len(chunk)
        return chunk

    async def read_head(self, size: int) -> None:
        """Read until `size` bytes or the end: small objects then go in one PUT."""
        parts: list[bytes] = []
        have = 0
        while have < size and (chunk := await self._next()) is not None:
            parts.append(chunk)
            have += len(chunk)
        self._head = b"".join(parts)

    def take_head(self) -> bytes:
        """The bytes read by read_head(), handed over once (only one holder at a time)."""
        head, self._head = self._head, b""
        return head

    async def rest(self) -> AsyncIterator[bytes]:
        """The head, then the remaining chunks."""
        yield self.take_head()  # obstore copies it into its part buffer
        while (chunk := await self._next()) is not None:
            yield chunk


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> ("bucket", "a/b"); ValueError (without the URL) otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("an S3 archive is s3://bucket or s3://bucket/prefix")
    if "@" in parts.netloc or ":" in parts.netloc:
        # credentials come from the AWS variables, never from the URL
        raise ValueError("an S3 archive URL takes no user, password or port: s3://bucket/prefix")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", parts.netloc):
        raise ValueError("an S3 bucket name is 3-63 of a-z, 0-9, '.' and '-'")
    prefix = parts.path.strip("/")
    if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
        raise ValueError("an S3 archive prefix has no empty, '.' or '..' segment")
    return parts.netloc, prefix


def _plain_endpoint(endpoint: str) -> str:
    """scheme://host[:port][/path] of the endpoint: no user, password or query in describe()."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("RELAY_ARCHIVE_ENDPOINT is an http:// or https:// URL")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:
        host = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
    return f"{parts.scheme}://{host}{parts.path.rstrip('/')}"


def _check_key(key: str) -> None:
    # a key the archiver built; a slip here must not write outside the prefix
    if not key or key.startswith("/") or any(s in ("", ".", "..") for s in key.split("/")):
        raise ValueError("an archive key is a relative path without empty, '.' or '..' parts")


if TYPE_CHECKING:

    def _is_a_backend(backend: S3Backend) -> Backend:  # mypy checks it against the seam
        return backend
