"""The S3 archive backend against a real S3 server on loopback (moto's, with auth on)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx
import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.archive.backend import ArchiveError
from service.archive.s3 import PART, S3Backend, parse_url
from service.sim.server import serve
from tests.s3server import BUCKET, REGION, S3Server

MiB = 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The AWS variables of the server's user, as the relay would find them."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


def backend(s3: S3Server, prefix: str = "outputs") -> S3Backend:
    return S3Backend.from_url(f"s3://{BUCKET}/{prefix}", s3.endpoint, None)


def pattern(size: int) -> bytes:
    """Bytes that differ from part to part, so a misplaced part changes the checksum."""
    block = hashlib.sha256(str(size).encode()).digest() * (CHUNK // 32)
    return b"".join(bytes([i % 251]) + block[1:] for i in range(size // CHUNK))


async def chunked(data: bytes, fail_at: int | None = None) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), CHUNK):
        if fail_at is not None and offset >= fail_at:
            raise ConnectionResetError("the provider closed the connection")
        await asyncio.sleep(0)
        yield data[offset : offset + CHUNK]


def signed_by(url: str, key: str, secret: str) -> bool:
    """Whether a presigned URL's SigV4 signature is the one `secret` gives: botocore's own
    signer recomputes it (moto's server checks no query-string signature)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = query.pop("X-Amz-Signature")
    request = AWSRequest(method="GET", url=parts._replace(query=urlencode(query)).geturl())
    request.context["timestamp"] = query["X-Amz-Date"]
    auth = S3SigV4QueryAuth(Credentials(key, secret), "s3", REGION, int(query["X-Amz-Expires"]))
    canonical = auth.canonical_request(request)
    return bool(auth.signature(auth.string_to_sign(request, canonical), request) == signature)


async def presigned_get(s3: S3Server, url: str) -> httpx.Response:
    """A plain GET of a presigned URL, with moto's header-only auth check off meanwhile."""
    s3.require_auth(False)
    try:
        async with httpx.AsyncClient() as http:
            return await http.get(url)
    finally:
        s3.require_auth(True)


def keys(s3: S3Server, prefix: str = "") -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


async def test_streamed_put_lands_in_parts_and_presigned_url_reads_it(aws_env: S3Server) -> None:
    data = pattern(20 * MiB)
    store = backend(aws_env)
    stored = await store.put("2026/11/30/job_1/0.mp4", chunked(data), "video/mp4")
    assert (stored.key, stored.bytes) == ("2026/11/30/job_1/0.mp4", len(data))
    head = aws_env.client().head_object(Bucket=BUCKET, Key="outputs/2026/11/30/job_1/0.mp4")
    assert head["ETag"].endswith('-3"')  # a multipart upload of 8 + 8 + 4 MiB
    url = await store.url(stored.key, 60)
    assert url is not None
    assert signed_by(url, aws_env.access_key, aws_env.secret_key)
    got = await presigned_get(aws_env, url)
    assert got.status_code == 200
    assert got.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    await store.close()


async def test_small_object_goes_in_one_put(aws_env: S3Server) -> None:
    data = pattern(CHUNK * 3)
    store = backend(aws_env)
    stored = await store.put("small/0.png", chunked(data), "image/png")
    assert stored.bytes == len(data)
    got = aws_env.client().get_object(Bucket=BUCKET, Key="outputs/small/0.png")
    assert "-" not in got["ETag"]  # a single PUT, not a multipart upload
    assert got["ContentType"] == "image/png"
    assert got["Body"].read() == data


async def test_exactly_one_part_and_empty_object(aws_env: S3Server) -> None:
    store = backend(aws_env)
    assert (await store.put("edge/part.bin", chunked(pattern(PART)), "image/png")).bytes == PART
    assert (await store.put("edge/empty.bin", chunked(b""), "image/png")).bytes == 0
    got = aws_env.client().get_object(Bucket=BUCKET, Key="outputs/edge/empty.bin")
    assert got["Body"].read() == b""


async def test_presigned_url_is_signed_for_ttl(aws_env: S3Server) -> None:
    store = backend(aws_env)
    await store.put("ttl/0 a+b.png", chunked(pattern(CHUNK)), "image/png")
    url = await store.url("ttl/0 a+b.png", 90)
    assert url is not None
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == f"/{BUCKET}/outputs/ttl/0%20a%2Bb.png"  # path-style with an endpoint
    assert query["X-Amz-Expires"] == ["90"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 5  # signed now, not cached
    # S3 checks these: the signature over X-Amz-Date + X-Amz-Expires is the whole lifetime
    assert signed_by(url, aws_env.access_key, aws_env.secret_key)
    assert not signed_by(url, aws_env.access_key, aws_env.fake_secret())
    got = await presigned_get(aws_env, url)
    assert (got.status_code, got.content) == (200, pattern(CHUNK))
    long = await store.url("ttl/0 a+b.png", 30 * 86400)
    assert long is not None and parse_qs(urlsplit(long).query)["X-Amz-Expires"] == ["604800"]
    assert aws_env.secret_key not in url


async def test_many_urls_in_one_call(aws_env: S3Server) -> None:
    store = backend(aws_env)
    names = [f"many/{n}.png" for n in range(3)]
    for name in names:
        await store.put(name, chunked(pattern(CHUNK)), "image/png")
    urls = await store.urls(names, 120)
    assert [urlsplit(u).path for u in urls] == [f"/{BUCKET}/outputs/{n}" for n in names]
    assert all(signed_by(u, aws_env.access_key, aws_env.secret_key) for u in urls)
    assert all(parse_qs(urlsplit(u).query)["X-Amz-Expires"] == ["120"] for u in urls)
    assert await store.urls([], 120) == []
    with pytest.raises(ValueError, match="archive key"):
        await store.urls(["ok.png", "/abs.png"], 120)


async def test_failed_put_leaves_no_object_and_no_pending_upload(aws_env: S3Server) -> None:
    store = backend(aws_env)
    with pytest.raises(ConnectionResetError, match="provider closed"):
        # past the first part: the multipart upload has begun when the source fails
        await store.put("broken/0.mp4", chunked(pattern(20 * MiB), 12 * MiB), "video/mp4")
    assert keys(aws_env, "outputs/broken/") == []
    assert aws_env.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    with pytest.raises(ConnectionResetError):  # before the first part is full: nothing sent
        await store.put("broken/1.png", chunked(pattern(MiB), CHUNK * 4), "image/png")
    assert keys(aws_env, "outputs/broken/") == []


async def test_cancelled_put_aborts_its_upload(aws_env: S3Server) -> None:
    async def slow() -> AsyncIterator[bytes]:
        for i in range(2000):
            await asyncio.sleep(0.002)
            yield bytes([i % 256]) * CHUNK

    store = backend(aws_env)
    task = asyncio.create_task(store.put("cancelled/0.mp4", slow(), "video/mp4"))
    for _ in range(500):  # until the multipart upload exists (the first part is past)
        if aws_env.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads"):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the multipart upload never began")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert aws_env.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert keys(aws_env, "outputs/cancelled/") == []


async def test_delete_removes_and_a_missing_key_is_fine(aws_env: S3Server) -> None:
    store = backend(aws_env)
    await store.put("gone/0.png", chunked(pattern(CHUNK)), "image/png")
    assert keys(aws_env, "outputs/gone/") == ["outputs/gone/0.png"]
    await store.delete("gone/0.png")
    assert keys(aws_env, "outputs/gone/") == []
    await store.delete("gone/0.png")
    await store.delete("never/there.png")


async def test_prefix_of_the_url(aws_env: S3Server) -> None:
    store = backend(aws_env, "a/b")
    await store.put("2026/01/02/job_9/1.webp", chunked(pattern(CHUNK)), "image/webp")
    assert keys(aws_env, "a/") == ["a/b/2026/01/02/job_9/1.webp"]
    bare = S3Backend.from_url(f"s3://{BUCKET}", aws_env.endpoint, None)
    await bare.put("top.png", chunked(pattern(CHUNK)), "image/png")
    assert "top.png" in keys(aws_env)
    assert bare.describe() == f"s3://{BUCKET} at {aws_env.endpoint}"
    with pytest.raises(ValueError, match="archive key"):
        await store.put("../escape.png", chunked(b"x"), "image/png")


async def test_wrong_credentials_do_not_retry_and_do_not_leak(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = s3.fake_secret()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = backend(s3)
    for attempt in (
        store.put("denied/0.png", chunked(pattern(CHUNK)), "image/png"),
        store.put("denied/1.mp4", chunked(pattern(9 * MiB)), "video/mp4"),
        store.delete("denied/0.png"),
    ):
        with pytest.raises(ArchiveError) as caught:
            await attempt
        text = f"{caught.value} {caught.value.reason!r} {caught.value.__cause__!r}"
        assert caught.value.retry is False
        assert "credentials were refused" in caught.value.reason
        assert "HTTP 403" in caught.value.reason
        for secret in (wrong, s3.access_key, "X-Amz-", "Signature="):
            assert secret not in text
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert keys(s3, "outputs/denied/") == []


async def test_no_credentials_says_so(aws_env: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with socket.socket() as sock:  # the instance metadata service, absent: nothing listens
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AWS_METADATA_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
    store = backend(aws_env)
    with pytest.raises(ArchiveError) as caught:
        await store.put("nocreds/0.png", chunked(pattern(CHUNK)), "image/png")
    assert "no credentials: AWS_ACCESS_KEY_ID" in caught.value.reason
    assert caught.value.retry is True


async def test_missing_bucket_does_not_retry(aws_env: S3Server) -> None:
    store = S3Backend.from_url("s3://no-such-bucket/x", aws_env.endpoint, None)
    with pytest.raises(ArchiveError) as caught:
        await store.put("0.png", chunked(pattern(CHUNK)), "image/png")
    assert caught.value.retry is False
    assert "no such bucket" in caught.value.reason
    with pytest.raises(ArchiveError) as caught:
        await store.delete("0.png")
    assert caught.value.retry is False


async def test_server_down_retries(aws_env: S3Server) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = S3Backend.from_url(f"s3://{BUCKET}/outputs", endpoint, None)
    for attempt in (
        store.put("down/0.png", chunked(pattern(CHUNK)), "image/png"),
        store.put("down/1.mp4", chunked(pattern(9 * MiB)), "video/mp4"),
        store.delete("down/0.png"),
    ):
        with pytest.raises(ArchiveError) as caught:
            await attempt
        assert caught.value.retry is True
        assert "could not be reached" in caught.value.reason
        assert endpoint in caught.value.reason
    # signing needs no request: the URL is made even while the server is away
    assert await store.url("down/0.png", 60) is not None


async def test_server_errors_retry(aws_env: S3Server) -> None:
    hits = 0

    async def failing(request: Request) -> Response:
        nonlocal hits
        hits += 1
        body = "<Error><Code>SlowDown</Code><Message>Please reduce your rate</Message></Error>"
        return Response(body, status_code=503, media_type="application/xml")

    app = Starlette(routes=[Route("/{path:path}", failing, methods=["PUT", "POST", "DELETE"])])
    async with serve(app) as url:
        store = S3Backend.from_url(f"s3://{BUCKET}/p", url, None)
        with pytest.raises(ArchiveError) as caught:
            await store.put("0.png", chunked(pattern(CHUNK)), "image/png")
    assert caught.value.retry is True
    assert "HTTP 503 SlowDown" in caught.value.reason
    assert hits == 4  # obstore's own 3 quick retries, then the archiver's schedule takes over


def test_describe_and_urls_carry_no_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    store = S3Backend.from_url(
        "s3://my-bucket/out/", "https://user:pa55@acct.r2.cloudflarestorage.com/?x=1", "auto"
    )
    shown = store.describe()
    assert shown == "s3://my-bucket/out at https://acct.r2.cloudflarestorage.com"
    for secret in ("AKIAEXAMPLEKEYID0000", "s3cr3t-value", "pa55", "user"):
        assert secret not in shown
    aws = S3Backend.from_url("s3://my-bucket", None, "eu-west-1")
    assert aws.describe() == "s3://my-bucket"


async def test_addressing_of_aws_and_of_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    aws = S3Backend.from_url("s3://my-bucket/out", None, "eu-west-1")
    url = await aws.url("0.png", 60)
    assert url is not None
    assert url.startswith("https://my-bucket.s3.eu-west-1.amazonaws.com/out/0.png?")
    dotted = await S3Backend.from_url("s3://my.bucket", None, "eu-west-1").url("0.png", 60)
    assert dotted is not None
    assert dotted.startswith("https://s3.eu-west-1.amazonaws.com/my.bucket/0.png?")
    r2 = S3Backend.from_url("s3://my-bucket/out", "https://user:pa55@acct.r2.example/", "auto")
    url = await r2.url("0.png", 60)
    assert url is not None
    assert url.startswith("https://acct.r2.example/my-bucket/out/0.png?")
    assert "pa55" not in url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("s3://AKIA:topsecret@bucket/x", "no user, password"),
        ("file:///var/lib/x", "s3://bucket"),
        ("s3://bucket/x?token=topsecret", "s3://bucket"),
        ("s3://Bad_Bucket/x", "bucket name"),
        ("s3://bucket/a//b", "prefix"),
        ("s3://bucket/a/../b", "prefix"),
    ],
)
def test_parse_url_refuses_without_echoing(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        parse_url(url)
    assert "topsecret" not in str(caught.value)


def test_parse_url() -> None:
    assert parse_url("s3://bucket") == ("bucket", "")
    assert parse_url("s3://bucket/") == ("bucket", "")
    assert parse_url("s3://my.bucket-1/a/b/") == ("my.bucket-1", "a/b")


EXIT_RIGHT_AFTER_PUT = """
import asyncio, sys
from service.archive.s3 import S3Backend

async def chunks():
    yield b"x" * 1000

async def main():
    backend = S3Backend.from_url("s3://relay-archive/exit", sys.argv[1], None)
    await backend.put("0.bin", chunks(), "image/png")
    await backend.close()

asyncio.run(main())
"""


@pytest.mark.e2e
def test_process_exits_cleanly_right_after_a_put_and_close(aws_env: S3Server) -> None:
    # without close()'s grace, about 1 run in 8 ended in SIGABRT (an obstore thread ended by
    # the finalizing interpreter): 24 clean runs in a row would happen by luck 1 time in 20
    codes = []
    for _ in range(24):
        done = subprocess.run(  # noqa: S603 (our interpreter, a fixed script)
            [sys.executable, "-c", EXIT_RIGHT_AFTER_PUT, aws_env.endpoint],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            timeout=30,
            check=False,
        )
        codes.append(done.returncode)
    assert codes == [0] * 24
