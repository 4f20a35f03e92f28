"""A COMPLETED callback's confirmation poll runs without a claim: leased to the relay's own
poller in the transaction that records the callback, and polled as soon as that commits."""

from __future__ import annotations

from typing import Any

from service.sim.pixazo import PixazoSim
from service.store import Job, Store
from tests.conftest import IMAGE_JOB
from tests.integration.helpers import FAST

CLAIM = "Poller._claim_and_peek.<locals>.unit"


class ClaimWatch:
    """The poller's store, watched: which jobs each of its claim transactions took."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.claimed: list[str] = []

    async def write(self, fn: Any) -> Any:
        result = await self.inner.write(fn)
        if getattr(fn, "__qualname__", "") == CLAIM:
            jobs: list[Job] = result[0]
            self.claimed += [job.id for job in jobs]
        return result

    def waiter(self, channel: str) -> Any:
        return self.inner.waiter(channel)


async def test_a_completed_callback_is_confirmed_without_a_claim(start_relay, pixazo: PixazoSim):
    # polls far apart: only the callback's confirmation can poll the job within the test
    relay = await start_relay(**FAST, RELAY_POLL_MIN="30", RELAY_POLL_MAX="60")
    pixazo.lose_callbacks = True
    job = (await relay.submit(IMAGE_JOB)).json()
    request_id = job["provider_job_id"]
    pixazo.set_status(request_id, "PROCESSING")
    await pixazo.send_callback(request_id)
    await relay.wait_status(job["id"], {"processing"})
    poller = relay.relay.poller
    watch = ClaimWatch(poller._store)
    poller._store = watch  # type: ignore[assignment]
    polls = pixazo.polls_at_once.get(request_id, 0)
    before = sum(1 for r in pixazo.requests if r.path.endswith(request_id))

    pixazo.set_status(request_id, "COMPLETED")
    await pixazo.send_callback(request_id)
    done = await relay.wait_status(job["id"], {"succeeded"})
    assert done["status"] == "succeeded"
    # confirmed by a poll of the provider (a bearer URL is never trusted alone) ...
    assert sum(1 for r in pixazo.requests if r.path.endswith(request_id)) > before
    assert pixazo.polls_at_once.get(request_id, 0) <= max(polls, 1)
    # ... that no claim transaction took: the callback's own unit leased it to this poller
    assert job["id"] not in watch.claimed
    types = [e["type"] for e in await relay.events(job["id"])]
    assert types.count("job.succeeded") == 1
