"""Over real HTTP: jobs, real notifications and the test event all carry the one set of keys."""

from __future__ import annotations

from service import notification
from tests.integration.helpers import FAST, ServeSubscriber, run_job, settled, subscribe, verify


async def test_jobs_notifications_and_the_test_event_carry_the_same_keys(
    start_relay, serve_subscriber: ServeSubscriber
) -> None:
    relay = await start_relay(**FAST)
    subscriber, url = await serve_subscriber()
    sub = await subscribe(relay, f"{url}/all", events=["job.*"])
    job = await run_job(relay)
    assert job["status"] == "succeeded"
    assert set(notification.DATA_KEYS) <= set(job)
    tested = await relay.client.post(f"/v1/subscriptions/{sub['id']}/test")
    assert tested.status_code == 202, tested.text
    await settled(relay, 4, subscription_id=sub["id"])
    received = await subscriber.wait_for(4)
    bodies = [verify(sub["secret"], item) for item in received]
    assert {b["type"] for b in bodies} == {
        "job.queued",
        "job.processing",
        "job.succeeded",
        "job.test",
    }
    for body in bodies:
        # Exactly the keys, in their order: nothing of the event's own bookkeeping leaks.
        assert tuple(body["data"]) == notification.DATA_KEYS, body["type"]
    final = next(b["data"] for b in bodies if b["type"] == "job.succeeded")
    assert {k: final[k] for k in notification.DATA_KEYS} == {
        k: job[k] for k in notification.DATA_KEYS
    }


async def test_a_chat_template_may_name_the_cost(start_relay) -> None:
    relay = await start_relay(**FAST)
    template = "{data.model} cost {data.cost}"
    sub = await subscribe(relay, "http://127.0.0.1:9/slack", kind="slack", template=template)
    assert sub["template"] == template
