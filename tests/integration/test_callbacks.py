"""Callbacks are never trusted blindly: forged, expired, malformed, unconfirmed or replayed."""

from __future__ import annotations

import asyncio
import json

import httpx
import itsdangerous
import pytest

from service import ledger
from service.sim.pixazo import PixazoSim
from tests.conftest import IMAGE_JOB, Running
from tests.integration.helpers import held_job

TERMINAL = {"succeeded", "failed", "canceled"}


async def _post(url: str, body: object | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient() as client:
        return await client.post(url, content=content, headers={"content-type": "application/json"})


async def _types(relay: Running, job_id: str) -> list[str]:
    return [e["type"] for e in await relay.events(job_id)]


@pytest.mark.parametrize("mangle", ["signature", "payload", "truncate", "garbage"])
async def test_tampered_token_is_refused_and_changes_nothing(
    relay: Running, pixazo: PixazoSim, mangle: str
) -> None:
    job, hook = await held_job(relay, pixazo)
    before = await _types(relay, job["id"])
    base, token = hook.rsplit("/", 1)
    payload, stamp, sig = token.split(".")
    forged = {
        "signature": f"{payload}.{stamp}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}",
        "payload": f"{payload[:-1]}{'x' if payload[-1] != 'x' else 'y'}.{stamp}.{sig}",
        "truncate": token[:-5],
        "garbage": "not-a-token",
    }[mangle]
    answer = await _post(f"{base}/{forged}", {"status": "COMPLETED", "request_id": "x"})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
    assert await _types(relay, job["id"]) == before


async def test_token_signed_by_another_secret_is_refused(relay: Running, pixazo: PixazoSim) -> None:
    job, _hook = await held_job(relay, pixazo)
    before = await _types(relay, job["id"])
    foreign = itsdangerous.URLSafeTimedSerializer(
        "another-secret", salt="upscale-relay/pixazo-callback"
    ).dumps(job["id"])
    answer = await _post(f"{relay.url}/hooks/pixazo/{foreign}", {"status": "COMPLETED"})
    assert answer.status_code == 404
    assert await _types(relay, job["id"]) == before
    assert (await relay.client.get(f"/v1/jobs/{job['id']}")).json()["status"] != "succeeded"


async def test_expired_token_gets_403_and_is_recorded_as_rejected(
    start_relay, pixazo: PixazoSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = await start_relay(RELAY_CALLBACK_MAX_AGE="60")
    job, _ = await held_job(relay, pixazo)
    signer = itsdangerous.timed.TimestampSigner
    real = signer.get_timestamp
    monkeypatch.setattr(signer, "get_timestamp", lambda self: real(self) - 3600)
    old = relay.relay.tokens.make(job["id"])
    monkeypatch.setattr(signer, "get_timestamp", real)
    answer = await _post(f"{relay.url}/hooks/pixazo/{old}", {"status": "COMPLETED"})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "token_expired"
    types = await _types(relay, job["id"])
    assert "callback.rejected" in types and "job.succeeded" not in types


async def test_body_that_is_not_json_gets_400_and_is_kept(
    relay: Running, pixazo: PixazoSim
) -> None:
    job, hook = await held_job(relay, pixazo)
    answer = await _post(hook, b"{not json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_json"
    events = await relay.events(job["id"])
    rejected = [e for e in events if e["type"] == "callback.rejected"]
    assert rejected and rejected[0]["data"]["reason"] == "invalid_json"
    assert rejected[0]["data"]["body"] == "{not json"


async def test_body_over_one_mebibyte_gets_413(relay: Running, pixazo: PixazoSim) -> None:
    job, hook = await held_job(relay, pixazo)
    before = await _types(relay, job["id"])
    answer = await _post(hook, b'{"pad": "' + b"x" * (1024 * 1024) + b'"}')
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert await _types(relay, job["id"]) == before


async def test_leaked_url_cannot_complete_a_job_with_foreign_media(
    relay: Running, pixazo: PixazoSim
) -> None:
    job, hook = await held_job(relay, pixazo)
    fake = {
        "request_id": job["provider_job_id"],
        "status": "COMPLETED",
        "output": {"media_url": ["https://evil.example/owned.png"], "media_type": "image/png"},
    }
    answer = await _post(hook, fake)
    assert answer.status_code == 200
    await asyncio.sleep(0.3)  # the confirmation poll runs at once and finds PROCESSING
    now = (await relay.client.get(f"/v1/jobs/{job['id']}")).json()
    assert now["status"] == "processing"
    rejected = [e for e in await relay.events(job["id"]) if e["type"] == "callback.rejected"]
    assert rejected[0]["data"]["reason"] == "unconfirmed"
    # when the provider really completes, the outputs come from the provider, not the callback
    pixazo.set_status(job["provider_job_id"], "COMPLETED")
    await pixazo.send_callback(job["provider_job_id"])
    done = await relay.wait_status(job["id"], TERMINAL)
    assert done["status"] == "succeeded"
    assert "evil.example" not in json.dumps(done["outputs"])


async def test_callback_naming_another_request_is_refused(
    relay: Running, pixazo: PixazoSim
) -> None:
    job, hook = await held_job(relay, pixazo)
    answer = await _post(hook, {"request_id": "seedvr-upscale_other", "status": "COMPLETED"})
    assert answer.status_code == 409
    assert "callback.rejected" in await _types(relay, job["id"])
    assert (await relay.client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "processing"


async def test_out_of_order_callbacks_never_move_a_job_back(
    relay: Running, pixazo: PixazoSim
) -> None:
    job, hook = await held_job(relay, pixazo)
    rid = job["provider_job_id"]
    pixazo.set_status(rid, "COMPLETED")
    assert (await _post(hook, pixazo.status_body(rid))).status_code == 200
    await relay.wait_status(job["id"], TERMINAL)
    late = {"request_id": rid, "status": "PROCESSING"}
    queued = {"request_id": rid, "status": "QUEUED"}
    for body in (late, queued, pixazo.status_body(rid)):
        assert (await _post(hook, body)).status_code == 200
    job_now = (await relay.client.get(f"/v1/jobs/{job['id']}")).json()
    assert job_now["status"] == "succeeded"
    types = await _types(relay, job["id"])
    assert types.count("job.succeeded") == 1
    assert types.count("job.processing") == 1
    assert types.count("job.queued") == 1


async def test_tolerant_parsing_keeps_the_raw_body(relay: Running, pixazo: PixazoSim) -> None:
    job, hook = await held_job(relay, pixazo)
    for body in ([1, 2, 3], {"status": "SOMETHING_NEW", "extra": {"x": 1}}, "just a string"):
        assert (await _post(hook, body)).status_code == 200
    received = [e for e in await relay.events(job["id"]) if e["type"] == "callback.received"]
    assert len(received) == 3  # the applied PROCESSING one lives in job.processing
    assert json.loads(received[1]["data"]["body"])["extra"] == {"x": 1}
    applied = next(e for e in await relay.events(job["id"]) if e["type"] == "job.processing")
    assert json.loads(applied["data"]["callback"]["body"])["status"] == "PROCESSING"
    assert (await relay.client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "processing"


async def test_hooks_need_no_api_token(start_relay, pixazo: PixazoSim) -> None:
    relay = await start_relay(RELAY_API_TOKENS="t0ken")
    job = (await relay.submit(IMAGE_JOB)).json()
    assert (await relay.wait_status(job["id"], TERMINAL))["status"] == "succeeded"


async def test_one_job_s_callbacks_cannot_grow_the_log_without_bound(
    relay: Running, pixazo: PixazoSim
) -> None:
    job, hook = await held_job(relay, pixazo)
    before = await _types(relay, job["id"])
    async with httpx.AsyncClient() as client:
        for _ in range(3):  # replays of one invalid body: still 400, stored once
            assert (await client.post(hook, content=b"{broken")).status_code == 400
        for n in range(100):
            body = json.dumps({"status": "SOMETHING", "n": n, "pad": "x" * 64_000}).encode()
            answer = await client.post(hook, content=body)
            assert answer.status_code == 200, answer.text
    types = await _types(relay, job["id"])
    added = types[len(before) :]
    assert (
        added.count("callback.received") + added.count("callback.rejected")
        == ledger.CALLBACK_EVENTS
    )
    assert added.count("callback.rejected") == 1
    assert added.count("callback.dropped") == 1
    metrics = (await relay.client.get("/metrics")).text
    assert "relay_callbacks_dropped_total 51.0\n" in metrics  # 100 bodies, 49 of them stored


async def test_expired_token_replays_are_recorded_once(
    start_relay, pixazo: PixazoSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = await start_relay(RELAY_CALLBACK_MAX_AGE="60")
    job, _ = await held_job(relay, pixazo)
    signer = itsdangerous.timed.TimestampSigner
    real = signer.get_timestamp
    monkeypatch.setattr(signer, "get_timestamp", lambda self: real(self) - 3600)
    old = relay.relay.tokens.make(job["id"])
    monkeypatch.setattr(signer, "get_timestamp", real)
    for _ in range(5):
        answer = await _post(f"{relay.url}/hooks/pixazo/{old}", {"status": "COMPLETED"})
        assert answer.status_code == 403
    rejected = [e for e in await relay.events(job["id"]) if e["type"] == "callback.rejected"]
    assert [e["data"]["reason"] for e in rejected] == ["token_expired"]


async def test_callbacks_after_the_end_are_bounded(relay: Running, pixazo: PixazoSim) -> None:
    job = (await relay.submit(IMAGE_JOB)).json()
    done = await relay.wait_status(job["id"], TERMINAL)
    hook = pixazo.jobs[done["provider_job_id"]].webhook_url
    assert hook is not None
    before = await _types(relay, job["id"])
    for n in range(20):
        assert (
            await _post(hook, {"request_id": done["provider_job_id"], "n": n})
        ).status_code == 200
    added = (await _types(relay, job["id"]))[len(before) :]
    assert added.count("callback.received") == ledger.CALLBACK_EVENTS_LATE
    assert added.count("callback.dropped") == 1
