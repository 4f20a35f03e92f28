"""Archived outputs as readers see them: keys become URLs, signed afresh on each read where
the backend signs (S3), the relay's own URL for a folder archive."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

from service.archive.backend import Stored
from service.archive.present import Presenter, strip_keys
from service.archive.units import Plan
from service.store.archives import Archive
from service.store.records import Event


class Signing:
    """A backend that signs each URL anew, as S3's presigned GETs are."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)

    def describe(self) -> str:
        return "s3://bucket/prefix"

    async def put(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> Stored:
        raise NotImplementedError

    async def delete(self, key: str) -> None:
        raise NotImplementedError

    async def url(self, key: str, ttl: int) -> str | None:
        return f"https://bucket.example/{key}?ttl={ttl}&sig={next(self.counter)}"

    async def close(self) -> None:
        return None


def event(outputs: list[dict[str, object]]) -> Event:
    data = {"id": "job_a", "outputs": outputs}
    return Event(1, "job_a", "job.succeeded", "system", 0.0, data)


OUT = {"url": "https://provider.example/a.png", "archive_key": "2027/01/15/job_a/0.png"}


async def test_each_read_of_an_s3_archive_is_signed_afresh() -> None:
    presenter = Presenter(Signing(), Plan("before_notify", "http://relay", served=False), 600)
    first = await presenter.event(event([dict(OUT), {"url": "https://provider.example/b"}]))
    second = await presenter.event(event([dict(OUT)]))
    a, b = first.data["outputs"]
    assert a["archive_url"] == "https://bucket.example/2027/01/15/job_a/0.png?ttl=600&sig=1"
    assert "archive_key" not in a
    assert b == {"url": "https://provider.example/b"}
    assert second.data["outputs"][0]["archive_url"].endswith("sig=2")


async def test_a_folder_archive_is_served_by_the_relay() -> None:
    presenter = Presenter(Signing(), Plan("after_notify", "http://relay", served=True), 600)
    shown = await presenter.event(event([dict(OUT)]))
    assert shown.data["outputs"][0]["archive_url"] == "http://relay/v1/outputs/job_a/0"


def test_keys_are_dropped_when_archiving_is_off() -> None:
    plain = event([{"url": "https://provider.example/b"}])
    assert strip_keys(plain) is plain  # nothing to do: the same event
    assert strip_keys(event([dict(OUT)])).data["outputs"] == [{"url": OUT["url"]}]


async def test_a_jobs_outputs_show_their_archive_state() -> None:
    presenter = Presenter(Signing(), Plan("before_notify", "http://relay", served=False), 60)
    done = Archive(
        "job_a",
        0,
        "u",
        "image/png",
        True,
        "done",
        1,
        None,
        None,
        "k/0.png",
        "ab",
        10,
        "image/png",
        4,
        3,
        None,
        0.0,
        1.0,
        0.0,
    )
    failed = Archive(
        "job_a",
        1,
        "u",
        None,
        True,
        "failed",
        5,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        "HTTP 404",
        0.0,
        1.0,
        0.0,
    )
    outputs = [{"url": "a"}, {"url": "b"}, {"url": "c"}]
    shown = await presenter.job_outputs("job_a", outputs, [done, failed])
    assert shown[0]["archive_status"] == "archived"
    assert shown[0]["archive_url"].startswith("https://bucket.example/k/0.png?ttl=60")
    assert (shown[0]["sha256"], shown[0]["bytes"], shown[0]["width"], shown[0]["height"]) == (
        "ab",
        10,
        4,
        3,
    )
    assert shown[1] == {"url": "b", "archive_status": "failed", "archive_error": "HTTP 404"}
    assert shown[2] == {"url": "c"}
