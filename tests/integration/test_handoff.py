"""A job's fresh webhook goes out without a claim: leased to the relay's own worker in the
transaction that records the event, and sent as soon as that commits."""

from __future__ import annotations

import asyncio
import math
import time

from service import ledger
from service.store.records import DeliveryLog
from tests.conftest import IMAGE_JOB
from tests.integration.helpers import FAST, ServeSubscriber, run_job, subscribe, verify


async def test_a_fresh_webhook_is_sent_on_the_lease_its_event_set(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    subscriber.hang_seconds = 0.3  # within RELAY_DELIVERY_TIMEOUT: the send is under way a while
    sub = await subscribe(relay, f"{url}/hook", events=["job.succeeded"])
    await run_job(relay)
    store = relay.relay.store
    found: list[DeliveryLog] = []
    async with asyncio.timeout(5):
        while not found:
            found = await store.list_deliveries(subscription_id=sub["id"])
    # caught while its one send is under way (the subscriber has not answered yet)
    [log] = found
    delivery = log.delivery
    assert delivery.status == "pending" and delivery.attempts == 0
    # A claim leases from the time it runs; the hand-off from the event's own time.
    lease = 2 * relay.settings.delivery_timeout + 5
    assert delivery.next_attempt_at == delivery.created_at + lease
    [received] = await subscriber.wait_for(1)
    assert verify(sub["secret"], received)["type"] == "job.succeeded"
    assert received.headers["webhook-id"] == delivery.id


async def test_a_poll_that_ends_its_job_wakes_no_further_claim(start_relay, pixazo) -> None:
    relay = await start_relay(**FAST, workers=False)
    pixazo.lose_callbacks = True
    state = relay.relay
    owner = state.heartbeat.owner if state.heartbeat else ""
    provider = state.providers["pixazo"]
    ended = (await relay.submit(IMAGE_JOB)).json()
    going = (await relay.submit(IMAGE_JOB)).json()
    pixazo.set_status(ended["provider_job_id"], "COMPLETED")
    pixazo.set_status(going["provider_job_id"], "PROCESSING")
    claimed = await state.store.write(
        lambda tx: ledger.claim_due(tx, "pixazo", time.time() + 60, 10, owner, 30.0)
    )
    jobs = {j.id: j for j in claimed}
    poller = state.poller
    # A job still running is polled again: the poller's loop must wake for it.
    await poller.poll_one(provider, jobs[going["id"]])
    assert poller._earliest < math.inf
    poller._earliest = math.inf  # as the loop resets it when it sleeps
    # One that ended has no next poll: a wake-up would be a claim (a commit) for nothing.
    await poller.poll_one(provider, jobs[ended["id"]])
    assert poller._earliest == math.inf
    await relay.wait_status(ended["id"], {"succeeded"})
    await relay.wait_status(going["id"], {"processing"})
