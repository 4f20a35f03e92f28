"""What any store's jobs and idempotency repositories must meet, called as the ledger calls
them on a unit of work: records in, records out, JSON columns round-tripped."""

from __future__ import annotations

from service import ledger, owners
from service.jobs import Status
from service.store import Store

NOW = 1_800_000_000.0


async def _job(store: Store, job_id: str, due: float) -> None:
    new = ledger.NewJob(job_id, "pixazo/seedvr-image", "pixazo", {"a": 1}, {}, None, None)
    created = await store.write(lambda tx: ledger.create_job(tx, new, NOW - 60, None, due))
    assert created.job is not None


async def test_idempotency_keeps_the_key_then_its_answer(store: Store) -> None:
    assert await store.write(lambda tx: tx.idempotency.get("k1")) is None
    await store.write(lambda tx: tx.idempotency.add("k1", "h" * 32, "job_x", NOW))
    kept = await store.write(lambda tx: tx.idempotency.get("k1"))
    assert kept is not None
    assert (kept.request_hash, kept.job_id, kept.status_code, kept.response) == (
        "h" * 32,
        "job_x",
        None,
        None,
    )
    await store.write(lambda tx: tx.idempotency.answer("k1", 202, {"id": "job_x", "n": [1]}))
    answered = await store.write(lambda tx: tx.idempotency.get("k1"))
    assert answered is not None
    assert (answered.status_code, answered.response) == (202, {"id": "job_x", "n": [1]})


async def test_update_stores_json_columns_and_returns_the_job(store: Store) -> None:
    await _job(store, "job_u", NOW + 60)
    sets = {
        "status": str(Status.FAILED),
        "error": {"code": "provider_failed", "message": "no"},
        "outputs": [{"url": "https://cdn.example/a.png"}],
        "updated_at": NOW,
    }
    job = await store.write(lambda tx: tx.jobs.update("job_u", sets))
    assert job.status is Status.FAILED
    assert job.error == {"code": "provider_failed", "message": "no"}
    assert job.outputs == [{"url": "https://cdn.example/a.png"}]
    reread = await store.write(lambda tx: tx.jobs.get("job_u"))
    assert reread == job


async def test_claim_due_hands_back_each_job_with_the_due_time_it_had(store: Store) -> None:
    await _job(store, "job_a", NOW - 5)
    await _job(store, "job_b", NOW - 2)
    await _job(store, "job_c", NOW + 60)  # not yet due
    claimed = await store.write(
        lambda tx: tx.jobs.claim_due("pixazo", NOW, 10, "me", NOW + 30, owners.alive_after(NOW))
    )
    assert [(j.id, due, j.next_poll_at) for j, due in claimed] == [
        ("job_a", NOW - 5, NOW + 30),
        ("job_b", NOW - 2, NOW + 30),
    ]
    assert await store.write(lambda tx: tx.jobs.next_due("pixazo")) == NOW + 30


async def _queued(store: Store, job_id: str, provider_job_id: str | None) -> None:
    await _job(store, job_id, NOW + 60)
    sets: dict[str, object] = {"status": str(Status.QUEUED), "progress": 0.3}
    if provider_job_id is not None:
        sets["provider_job_id"] = provider_job_id
    await store.write(lambda tx: tx.jobs.update(job_id, sets))


async def test_apply_callback_moves_a_job_forward_in_one_statement(store: Store) -> None:
    await _queued(store, "job_p", "req-1")
    moved = await store.write(
        lambda tx: tx.jobs.apply_callback("job_p", Status.PROCESSING, 0.5, "req-1", NOW)
    )
    assert moved is not None
    assert (moved.status, moved.progress, moved.updated_at) == (Status.PROCESSING, 0.5, NOW)
    assert moved == await store.write(lambda tx: tx.jobs.get("job_p"))


async def test_apply_callback_keeps_progress_growing_and_needs_no_request_id(
    store: Store,
) -> None:
    await _queued(store, "job_g", "req-1")
    moved = await store.write(
        lambda tx: tx.jobs.apply_callback("job_g", Status.PROCESSING, 0.1, None, NOW)
    )
    assert moved is not None and moved.progress == 0.3
    await _queued(store, "job_n", "req-2")
    moved = await store.write(
        lambda tx: tx.jobs.apply_callback("job_n", Status.PROCESSING, None, None, NOW)
    )
    assert moved is not None and (moved.status, moved.progress) == (Status.PROCESSING, 0.3)


async def test_apply_callback_changes_nothing_when_it_does_not_apply(store: Store) -> None:
    await _queued(store, "job_m", "req-1")
    await _queued(store, "job_u", None)  # the provider's answer not in yet
    before = await store.write(lambda tx: tx.jobs.get("job_m"))
    for job_id, status, request_id in (
        ("job_m", Status.PROCESSING, "req-other"),  # another request's callback
        ("job_m", Status.QUEUED, "req-1"),  # not forward
        ("job_u", Status.PROCESSING, None),  # no provider id to match
        ("job_missing", Status.PROCESSING, None),
    ):
        outcome = await store.write(
            lambda tx, j=job_id, s=status, r=request_id: tx.jobs.apply_callback(j, s, 0.9, r, NOW)
        )
        assert outcome is None, (job_id, status, request_id)
    assert await store.write(lambda tx: tx.jobs.get("job_m")) == before
    await store.write(lambda tx: tx.jobs.apply_callback("job_m", Status.PROCESSING, 0.4, None, NOW))
    # at processing already: a second processing callback does not apply
    again = await store.write(
        lambda tx: tx.jobs.apply_callback("job_m", Status.PROCESSING, 0.8, None, NOW + 1)
    )
    assert again is None
