"""A full run of the real service at DEBUG, as text and as JSON: no secret reaches its log."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.sim.chat import ChatSim
from service.sim.media import MediaSim
from service.sim.pixazo import PixazoSim
from service.sim.scenario import SIGNATURE, ScenarioSim
from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.e2e.harness import TERMINAL, pg_service, service

pytestmark = pytest.mark.e2e

API_TOKEN = "tok-apiSECRET0001"
RELAY_SECRET = "relaySECRET0002-relaySECRET0002"
PIXAZO_KEY = "pixazoKEYsecret0003"
SCENARIO_KEY, SCENARIO_SECRET = "scenarioKEYsecret0004", "scenarioSECRET0005"
# Chat webhook URLs carry their credential in the path or the query string.
CHAT_PATHS = {
    "slack": "/services/T0001/B0001/slackPATHsecret0006",
    "discord": "/api/webhooks/1234/discordTOKENsecret0007",
    "teams": "/webhookb2/teamsPATHsecret0008",
    "google_chat": "/v1/spaces/AAA/messages?key=gchatKEYsecret0009&token=gchatTOKENsecret0010",
}
WEBHOOK_QUERY = "?sig=webhookQUERYsecret0011"
PER_JOB_QUERY = "?sig=perjobQUERYsecret0012"
FAILING_PATH = "/fail/failingPATHsecret0013"
MEDIA_QUERY = "?X-Amz-Signature=amzSIGNATUREsecret0014&X-Amz-Credential=amzCREDsecret0015"


async def _settled(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """Wait until `count` deliveries exist and none is pending."""
    deadline = time.monotonic() + 30
    while True:
        page = (await client.get("/v1/deliveries", params={"limit": 500})).json()["data"]
        if len(page) >= count and all(d["status"] != "pending" for d in page):
            return list(page)
        assert time.monotonic() < deadline, [(d["status"], d["subscription_id"]) for d in page]
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_reaches_the_log_at_debug_level(tmp_path: Path, log_format: str) -> None:
    pixazo = PixazoSim(api_key=PIXAZO_KEY, queue_seconds=0.05, process_seconds=0.1)
    scenario = ScenarioSim(
        api_key=SCENARIO_KEY, api_secret=SCENARIO_SECRET, queue_seconds=0.05, process_seconds=0.1
    )
    subscriber = Subscriber()
    failing = Subscriber(status=500)
    chats = {kind: ChatSim(kind) for kind in CHAT_PATHS}
    log_path = tmp_path / "relay.log"
    async with (
        serve(pixazo.app) as pixazo_url,
        serve(scenario.app) as scenario_url,
        serve(subscriber.app) as sub_url,
        serve(failing.app) as failing_url,
        serve(MediaSim().app) as media_url,
        serve(chats["slack"].app) as slack_url,
        serve(chats["discord"].app) as discord_url,
        serve(chats["teams"].app) as teams_url,
        serve(chats["google_chat"].app) as gchat_url,
    ):
        pixazo.base_url, scenario.base_url = pixazo_url, scenario_url
        chat_urls = {
            "slack": slack_url,
            "discord": discord_url,
            "teams": teams_url,
            "google_chat": gchat_url,
        }
        with log_path.open("wb") as log:
            async with service(
                tmp_path,
                log_level="debug",
                log=log,
                RELAY_API_TOKENS=API_TOKEN,
                RELAY_SECRET=RELAY_SECRET,
                PIXAZO_API_KEY=PIXAZO_KEY,
                PIXAZO_BASE_URL=pixazo_url,
                SCENARIO_API_KEY=SCENARIO_KEY,
                SCENARIO_API_SECRET=SCENARIO_SECRET,
                SCENARIO_BASE_URL=scenario_url,
                RELAY_RETRY_SCHEDULE="0,0.1",
                RELAY_LOG_FORMAT=log_format,
            ) as svc:
                await svc.start()
                auth = {"Authorization": f"Bearer {API_TOKEN}"}
                async with httpx.AsyncClient(base_url=svc.url, headers=auth) as client:
                    secrets = await _run(client, sub_url, failing_url, media_url, chat_urls)
                    callback_urls = [j.webhook_url for j in pixazo.jobs.values()]
        await pixazo.aclose()
        await scenario.aclose()

    text = log_path.read_text("utf-8", "replace")
    if log_format == "json":
        entries = [json.loads(line) for line in text.splitlines()]  # every line is one object
        assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
        loggers = {e["logger"] for e in entries}
        assert {"uvicorn.access", "uvicorn.error", "service.outbound"} <= loggers, loggers
        # the access log's own fields; a provider call's line carries the job id
        assert any(e.get("method") == "POST" and e.get("path") == "/v1/jobs" for e in entries)
        assert any(e["logger"] == "service.outbound" and "job=" in e["message"] for e in entries)
    assert "providers pixazo, scenario," in text  # the start-up line
    assert "POST /v1/jobs" in text  # the access log was on: the run really logged
    assert "/hooks/pixazo/" in text  # and saw the callbacks, without their tokens
    assert callback_urls and all(callback_urls)
    tokens = [url.rsplit("/", 1)[1] for url in callback_urls if url]
    # Every made-up secret above carries "secret00NN"; the generated ones are listed.
    leaked = sorted(set(re.findall(r"\w*secret00\d\d", text, flags=re.IGNORECASE)))
    leaked += [s for s in [*tokens, *secrets, f"Signature={SIGNATURE}"] if s in text]
    assert not leaked, f"secrets in the log: {leaked}"


async def _run(
    client: httpx.AsyncClient,
    sub_url: str,
    failing_url: str,
    media_url: str,
    chat_urls: dict[str, str],
) -> list[str]:
    """Jobs on both providers, every kind of subscription, a rotation, a failed delivery."""
    secrets: list[str] = []
    hook = await client.post(
        "/v1/subscriptions", json={"url": f"{sub_url}/hook{WEBHOOK_QUERY}", "events": ["job.*"]}
    )
    assert hook.status_code == 201, hook.text
    secrets.append(hook.json()["secret"])
    rotated = await client.post(f"/v1/subscriptions/{hook.json()['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    secrets.append(rotated.json()["secret"])
    bad = await client.post("/v1/subscriptions", json={"url": f"{failing_url}{FAILING_PATH}"})
    assert bad.status_code == 201, bad.text
    secrets.append(bad.json()["secret"])
    for kind, path in CHAT_PATHS.items():
        chat = await client.post(
            "/v1/subscriptions", json={"url": chat_urls[kind] + path, "kind": kind}
        )
        assert chat.status_code == 201, chat.text
    secrets.append((await client.get("/v1/webhook-secret")).json()["secret"])

    pixazo_job = {
        "model": "pixazo/seedvr-image",
        "input": {"image_url": "https://example.com/in.png"},
        "webhook": f"{sub_url}/per-job{PER_JOB_QUERY}",
    }
    scenario_job = {
        "model": "scenario/upscale-v3",
        "input": {"image": f"{media_url}/media/in.png{MEDIA_QUERY}"},
    }
    ids = []
    for body in (pixazo_job, scenario_job):
        answer = await client.post("/v1/jobs", json=body)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    for job_id in ids:
        deadline = time.monotonic() + 20
        while (job := (await client.get(f"/v1/jobs/{job_id}")).json())["status"] not in TERMINAL:
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.05)
        assert job["status"] == "succeeded", job
    # Two terminal events, each to seven subscriptions (the webhook one also gets the
    # others), plus the per-job webhook: every delivery ends, one of them failed.
    deliveries = await _settled(client, 2 * 6 + 1)
    assert any(d["status"] == "failed" for d in deliveries)
    assert any(d["status"] == "succeeded" for d in deliveries)
    return secrets


async def test_the_start_up_line_names_a_postgresql_database_without_its_password(
    pg_url: str, tmp_path: Path
) -> None:
    password = pg_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password
    log_path = tmp_path / "relay.log"
    with log_path.open("wb") as log:
        async with pg_service(
            pg_url, log_level="info", log=log, RELAY_LOG_FORMAT="json", PIXAZO_API_KEY=PIXAZO_KEY
        ) as svc:
            await svc.start()
            await svc.terminate()
    text = log_path.read_text("utf-8")
    entries = [json.loads(line) for line in text.splitlines()]
    starts = [e for e in entries if str(e["message"]).startswith("upscale-relay starting")]
    assert len(starts) == 1, entries
    line = str(starts[0]["message"])
    assert f"public URL {svc.url}," in line
    assert "providers pixazo," in line
    assert f"listening on http://127.0.0.1:{svc.port}" in line
    assert ":***@127.0.0.1:" in line
    assert password not in text and PIXAZO_KEY not in text
