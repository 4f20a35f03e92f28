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
