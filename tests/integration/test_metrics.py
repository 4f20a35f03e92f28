"""GET /metrics: open by default, behind a bearer token when RELAY_METRICS_TOKEN is set."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Running, StartRelay


async def _metrics(relay: Running, authorization: str | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=relay.url) as client:
        return await client.get("/metrics", headers=headers)


async def test_metrics_are_open_without_a_token(relay: Running) -> None:
    answer = await _metrics(relay, None)
    assert answer.status_code == 200
    assert "relay_events_total" in answer.text


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer wrong", "Basic m3trics-token", "m3trics-token"]
)
async def test_metrics_token_is_required_when_set(
    start_relay: StartRelay, authorization: str | None
) -> None:
    relay = await start_relay(RELAY_METRICS_TOKEN="m3trics-token", RELAY_API_TOKENS="api-token")
    answer = await _metrics(relay, authorization)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["error"]["code"] == "unauthorized"
    assert "m3trics-token" not in answer.text


async def test_metrics_answer_the_right_token_only(start_relay: StartRelay) -> None:
    relay = await start_relay(RELAY_METRICS_TOKEN="m3trics-token", RELAY_API_TOKENS="api-token")
    answer = await _metrics(relay, "Bearer m3trics-token")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "relay_jobs" in answer.text
    # an API token is not the metrics token
    assert (await _metrics(relay, "Bearer api-token")).status_code == 401
    assert (await _metrics(relay, "bearer m3trics-token")).status_code == 200
