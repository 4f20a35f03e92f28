"""The poller keeps a lone job's schedule: RELAY_POLL_MIN, then doubling, never RELAY_POLL_MAX."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from service.sim.scenario import ScenarioSim
from tests.conftest import StartRelay


async def test_a_job_alone_in_flight_is_polled_on_its_schedule(
    start_relay: StartRelay, scenario: ScenarioSim
) -> None:
    # The job ends ~1.3 s after submission. Polls fall due at about 0.25, 0.5, 1, 2 s after
    # the first (±20% jitter), so the poll that sees the end comes within ~2.5 s; before,
    # the poller slept until the claimed job's lease ended or RELAY_POLL_MAX (30 s) passed.
    scenario.queue_seconds, scenario.process_seconds = 0.1, 1.2
    relay = await start_relay(RELAY_POLL_MIN="0.25", RELAY_POLL_MAX="30")
    asset = scenario.add_asset(b"x" * 100, "image/png")
    started = time.monotonic()
    answer = await relay.submit({"model": "scenario/upscale-v3", "input": {"image": asset}})
    assert answer.status_code == 202, answer.text
    done = await relay.wait_status(answer.json()["id"], {"succeeded", "failed"}, limit=6)
    assert done["status"] == "succeeded"
    assert time.monotonic() - started < 4.0
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families((await relay.client.get("/metrics")).text)
        for s in family.samples
        if s.labels.get("provider", "scenario") == "scenario"
    }
    assert samples["relay_poll_lateness_seconds_count"] >= 3
    # Every poll started within 10% of its interval plus 100 ms of the time it was due.
    worst = samples["relay_poll_lateness_max_seconds"]
    assert worst <= 0.1 + 0.1 * 2.0, worst
