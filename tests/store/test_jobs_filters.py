"""The jobs listing's provider and metadata filters and the counts since a time, on any store:
the filters apply to the whole history (not a window of recent jobs), with the same cursor."""

from __future__ import annotations

from typing import Any

import pytest

from service import ledger
from service.jobs import Report, Status
from service.store import Store

NOW = 1_800_000_000.0
IMAGE, VIDEO = "pixazo/seedvr-image", "scenario/upscale-v3"


async def _job(store: Store, n: int, metadata: dict[str, Any], created: float) -> None:
    model = IMAGE if n % 2 else VIDEO
    new = ledger.NewJob(
        f"job_{n:04d}",
        model,
        model.split("/")[0],
        {"image_url": "https://example.com/in.png"},
        metadata,
        None,
        None,
    )
    made = await store.write(lambda tx: ledger.create_job(tx, new, created, None, created + 60))
    assert made.job is not None


async def _ids(store: Store, **kw: Any) -> list[str]:
    """Every page of the listing, two jobs a page, following the cursor; the ids in order."""
    out: list[str] = []
    before: int | None = None
    for _ in range(50):
        page = await store.list_jobs(
            **{"status": None, "model": None, "before": before, **kw}, limit=2
        )
        if not page:
            return out
        out += [j.id for j in page]
        before = page[-1].seq
    raise AssertionError("the cursor never reached the end")


async def test_provider_and_metadata_filters_page_through_the_whole_history(store: Store) -> None:
    metas: list[dict[str, Any]] = [
        {"tenant": "acme", "n": 1},
        {"tenant": "globex"},
        {"tenant": "acme", "vip": True},
        {"n": 1.5, "a.b": "dotted"},
        {"tenant": "acme", "it's": "x", "n": None},
        {},
        {"tenant": "acme"},
    ]
    for n, meta in enumerate(metas, start=1):
        await _job(store, n, meta, NOW + n)
    # odd n: pixazo (IMAGE), even n: scenario (VIDEO)
    assert await _ids(store, provider="pixazo") == ["job_0007", "job_0005", "job_0003", "job_0001"]
    assert await _ids(store, provider="scenario") == ["job_0006", "job_0004", "job_0002"]
    assert await _ids(store, metadata=("tenant", None)) == [
        "job_0007",
        "job_0005",
        "job_0003",
        "job_0002",
        "job_0001",
    ]
    acme = ["job_0007", "job_0005", "job_0003", "job_0001"]
    assert await _ids(store, metadata=("tenant", "acme")) == acme
    assert await _ids(store, metadata=("tenant", "acme"), provider="scenario") == []
    assert await _ids(store, metadata=("tenant", "acme"), model=IMAGE) == acme
    # values other than strings match their JSON text; a key may hold dots and quotes
    assert await _ids(store, metadata=("n", "1")) == ["job_0001"]
    assert await _ids(store, metadata=("n", "1.5")) == ["job_0004"]
    assert await _ids(store, metadata=("n", "null")) == ["job_0005"]
    assert await _ids(store, metadata=("vip", "true")) == ["job_0003"]
    assert await _ids(store, metadata=("a.b", "dotted")) == ["job_0004"]
    assert await _ids(store, metadata=("it's", None)) == ["job_0005"]
    assert await _ids(store, metadata=("a", None)) == []
    # a value that looks like SQL is only a value
    assert await _ids(store, metadata=("tenant", "acme' OR '1'='1")) == []
    assert await _ids(store, metadata=("tenant') OR 1=1 --", None)) == []


async def test_metadata_filter_refuses_a_key_it_cannot_name(store: Store) -> None:
    for key in ("", 'a"b', "a\\b", "a\nb", "k" * 65):
        with pytest.raises(ValueError, match="metadata key"):
            await store.list_jobs(
                status=None, model=None, before=None, limit=5, metadata=(key, None)
            )


async def test_status_filter_with_metadata_and_counts_since(store: Store) -> None:
    for n in range(1, 7):
        # jobs 1-2 a day and more ago, 3-6 within the day
        created = NOW - 90_000 + n if n <= 2 else NOW - 3_600 + n
        await _job(store, n, {"batch": "b1" if n % 3 else "b2"}, created)
    report = Report(Status.QUEUED, "QUEUED", provider_job_id="req_x")
    for job_id in ("job_0001", "job_0004", "job_0005"):
        rid = Report(report.status, report.raw_status, provider_job_id="req_" + job_id)
        await store.write(
            lambda tx, j=job_id, r=rid: ledger.record_submitted(tx, j, r, NOW, NOW + 5, None)
        )
    assert await _ids(store, status="queued", metadata=("batch", "b1")) == [
        "job_0005",
        "job_0004",
        "job_0001",
    ]
    assert await store.counts_since(NOW - 86_400) == {"queued": 2, "submitting": 2}
    assert await store.counts_since(NOW - 200_000) == {"queued": 3, "submitting": 3}
    assert await store.counts_since(NOW + 1) == {}
