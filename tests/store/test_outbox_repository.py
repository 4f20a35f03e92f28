"""The outbox's repositories on a unit of work: what outbox.py relies on them to do."""

from __future__ import annotations

import pytest

from service import outbox
from service.store import Store, Tx
from service.store.records import Subscription

NOW = 1_800_000_000.0
FIELDS = {"url": "https://hooks.example/relay", "kind": "webhook", "events": ["job.failed"]}


async def test_changes_round_trip_and_move_the_version_on(store: Store) -> None:
    sub = await store.write(lambda tx: outbox.create_subscription(tx, FIELDS, NOW))
    before = await store.write(lambda tx: tx.subscriptions.version())

    async def change(tx: Tx) -> None:
        await tx.subscriptions.update(sub.id, {"events": ["job.*"], "filter": {"models": ["m"]}})
        await tx.subscriptions.bump()

    await store.write(change)

    async def reread(tx: Tx) -> tuple[str, Subscription | None]:
        return await tx.subscriptions.version(), await tx.subscriptions.get(sub.id)

    after = await store.write(reread)
    assert after[0] != before
    assert after[1] is not None
    assert after[1].events == ("job.*",) and after[1].filter == {"models": ["m"]}


async def test_update_refuses_a_column_it_does_not_know(store: Store) -> None:
    sub = await store.write(lambda tx: outbox.create_subscription(tx, FIELDS, NOW))
    with pytest.raises(ValueError, match="not a settable"):
        await store.write(lambda tx: tx.subscriptions.update(sub.id, {"secret = 'x', url": 1}))


async def test_pause_only_an_active_one_and_failing_since_is_kept_until_a_success(
    store: Store,
) -> None:
    sub = await store.write(lambda tx: outbox.create_subscription(tx, FIELDS, NOW))
    assert await store.write(lambda tx: tx.subscriptions.failed(sub.id, NOW)) == NOW
    assert await store.write(lambda tx: tx.subscriptions.failed(sub.id, NOW + 5)) == NOW
    await store.write(lambda tx: tx.subscriptions.succeeded(sub.id))
    assert await store.write(lambda tx: tx.subscriptions.failed(sub.id, NOW + 9)) == NOW + 9
    assert await store.write(lambda tx: tx.subscriptions.pause(sub.id, "why", NOW)) is True
    assert await store.write(lambda tx: tx.subscriptions.pause(sub.id, "why", NOW)) is False
