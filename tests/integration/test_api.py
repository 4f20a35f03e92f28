"""The /v1 API over real HTTP: validation, provider errors, idempotency, reading, auth."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from service import ledger
from service.errors import ApiError
from service.sim.pixazo import PixazoSim
from tests.conftest import IMAGE_JOB, VIDEO_JOB, Running

TERMINAL = {"succeeded", "failed", "canceled"}


def _generates(pixazo: PixazoSim) -> int:
    return sum(r.path.endswith("/generate") for r in pixazo.requests)


async def test_models_list_parameters_from_the_docs(relay: Running) -> None:
    models = {m["id"]: m for m in (await relay.client.get("/v1/models")).json()["data"]}
    assert {"pixazo/seedvr-image", "pixazo/seedvr-video"} <= set(models)
    params = {p["name"]: p for p in models["pixazo/seedvr-image"]["parameters"]}
    assert params["image_url"]["required"] is True
    assert params["upscale_factor"]["range"] == [1, 8]
    assert params["target_resolution"]["enum"] == ["720p", "1080p", "1440p", "2160p"]
    assert "sync_mode" not in params
    video = {p["name"]: p for p in models["pixazo/seedvr-video"]["parameters"]}
    assert video["upscale_factor"]["range"] == [1, 4]
    assert video["output_quality"]["default"] == "high"


async def test_invalid_input_names_every_problem_and_calls_no_provider(
    relay: Running, pixazo: PixazoSim
) -> None:
    body = {
        "model": "pixazo/seedvr-image",
        "input": {
            "upscale_factor": 9,
            "output_format": "gif",
            "noise_scale": "high",
            "sync_mode": True,
            "colour": "red",
        },
        "extra": 1,
    }
    answer = await relay.submit(body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    fields = {d["field"] for d in error["details"]}
    assert fields == {
        "extra",
        "input.image_url",
        "input.upscale_factor",
        "input.output_format",
        "input.noise_scale",
        "input.sync_mode",
        "input.colour",
    }
    assert _generates(pixazo) == 0
    assert (await relay.client.get("/v1/jobs")).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "nope/model", "input": {}}, "model"),
        ({"input": {"image_url": "https://x.example/a.png"}}, "model"),
        ({"model": "pixazo/seedvr-video"}, "input"),
        (
            {"model": "pixazo/seedvr-video", "input": {"video_url": "ftp://x/a.mp4"}},
            "input.video_url",
        ),
        (
            {"model": "pixazo/seedvr-video", "input": {"video_url": "https://x/a", "seed": 1.5}},
            "input.seed",
        ),
        ({"model": "pixazo/seedvr-image", "input": []}, "input"),
        ({**IMAGE_JOB, "metadata": {"a": {"nested": 1}}}, "metadata.a"),
        ({**IMAGE_JOB, "webhook": "not a url"}, "webhook"),
        ([1, 2], "body"),
    ],
)
async def test_each_bad_request_gets_422(
    relay: Running, pixazo: PixazoSim, body: object, field: str
) -> None:
    answer = await relay.client.post("/v1/jobs", json=body)
    assert answer.status_code == 422, answer.text
    assert field in {d["field"] for d in answer.json()["error"]["details"]}
    assert _generates(pixazo) == 0


async def test_malformed_json_and_huge_bodies(relay: Running) -> None:
    answer = await relay.client.post(
        "/v1/jobs", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_json"
    big = b'{"model": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    answer = await relay.client.post("/v1/jobs", content=big)
    assert answer.status_code == 413


@pytest.mark.parametrize(
    ("status", "expect", "code"),
    [
        (400, 400, "provider_bad_request"),
        (401, 502, "provider_unauthorized"),
        (402, 402, "provider_insufficient_balance"),
        (403, 502, "provider_forbidden"),
    ],
)
async def test_provider_refusals_reach_the_caller(
    relay: Running, pixazo: PixazoSim, status: int, expect: int, code: str
) -> None:
    pixazo.fail_next(status)
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == expect
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["details"]["provider_status"] == status
    if status == 402:
        assert "balance" in error["message"].lower()
    assert _generates(pixazo) == 1  # refusals are not retried
    job = (await relay.client.get(f"/v1/jobs/{error['details']['job_id']}")).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == code


async def test_429_and_5xx_are_retried_with_backoff_first(
    relay: Running, pixazo: PixazoSim
) -> None:
    pixazo.fail_next(429, retry_after=0.2)
    pixazo.fail_next(500)
    started = time.monotonic()
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 202
    assert time.monotonic() - started >= 0.2  # Retry-After honored
    assert _generates(pixazo) == 3
    await relay.wait_status(answer.json()["id"], TERMINAL)


async def test_persistent_5xx_and_429_give_up_with_clear_errors(
    relay: Running, pixazo: PixazoSim
) -> None:
    pixazo.fail_next(503, count=3)
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "provider_unavailable"
    pixazo.fail_next(429, count=3)
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "provider_rate_limited"
    assert _generates(pixazo) == 6


async def test_unreachable_provider_is_a_502(start_relay) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    relay = await start_relay(PIXAZO_BASE_URL=dead)
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["code"] == "provider_unreachable"
    job = (await relay.client.get(f"/v1/jobs/{error['details']['job_id']}")).json()
    assert job["status"] == "failed"


async def test_unconfigured_provider_is_a_503(start_relay) -> None:
    relay = await start_relay(PIXAZO_API_KEY="")
    answer = await relay.submit(IMAGE_JOB)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "provider_not_configured"


async def test_idempotency_key_repeats_the_first_answer(relay: Running, pixazo: PixazoSim) -> None:
    headers = {"Idempotency-Key": "order-1"}
    first = await relay.submit(IMAGE_JOB, headers=headers)
    second = await relay.submit(IMAGE_JOB, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert _generates(pixazo) == 1
    other = await relay.submit(VIDEO_JOB, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"


async def test_idempotency_key_race_submits_once(relay: Running, pixazo: PixazoSim) -> None:
    pixazo.fail_next(500)  # slow the first submission down with one retry
    headers = {"Idempotency-Key": "race"}
    answers = await asyncio.gather(*(relay.submit(VIDEO_JOB, headers=headers) for _ in range(8)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert _generates(pixazo) == 2  # one submission, retried once
    jobs = (await relay.client.get("/v1/jobs")).json()["data"]
    assert len(jobs) == 1


async def test_idempotent_error_is_repeated_too(relay: Running, pixazo: PixazoSim) -> None:
    pixazo.fail_next(402)
    headers = {"Idempotency-Key": "broke"}
    first = await relay.submit(IMAGE_JOB, headers=headers)
    second = await relay.submit(IMAGE_JOB, headers=headers)
    assert first.status_code == second.status_code == 402
    assert first.json() == second.json()
    assert _generates(pixazo) == 1


async def test_list_filters_and_cursor_pagination(relay: Running) -> None:
    ids = []
    for i in range(5):
        body = IMAGE_JOB if i % 2 == 0 else VIDEO_JOB
        ids.append((await relay.submit(body)).json()["id"])
    for job_id in ids:
        await relay.wait_status(job_id, TERMINAL)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await relay.client.get("/v1/jobs", params=params)).json()
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]  # newest first, every job once
    videos = (await relay.client.get("/v1/jobs", params={"model": "pixazo/seedvr-video"})).json()
    assert [j["id"] for j in videos["data"]] == [ids[3], ids[1]]
    done = (await relay.client.get("/v1/jobs", params={"status": "succeeded"})).json()["data"]
    assert len(done) == 5
    none = (await relay.client.get("/v1/jobs", params={"status": "queued"})).json()["data"]
    assert none == []
    bad = await relay.client.get("/v1/jobs", params={"status": "bogus"})
    assert bad.status_code == 400
    bad = await relay.client.get("/v1/jobs", params={"limit": "lots"})
    assert bad.status_code == 400


async def test_global_event_log_is_a_cursor(relay: Running) -> None:
    job = (await relay.submit(IMAGE_JOB)).json()
    await relay.wait_status(job["id"], TERMINAL)
    first = (await relay.client.get("/v1/events", params={"limit": 2})).json()
    assert [e["id"] for e in first["data"]] == [1, 2]
    rest = (await relay.client.get("/v1/events", params={"after": first["next_cursor"]})).json()
    assert rest["data"][0]["id"] == 3
    ids = [e["id"] for e in first["data"] + rest["data"]]
    assert ids == sorted(ids)
    all_for_job = await relay.events(job["id"])
    assert [e["id"] for e in all_for_job] == ids
    assert {e["source"] for e in all_for_job} <= {"api", "callback", "poll", "system"}
    # long poll: answers as soon as a new event is committed
    waiting = asyncio.create_task(
        relay.client.get("/v1/events", params={"after": ids[-1], "wait": 10})
    )
    await asyncio.sleep(0.1)
    await relay.submit(VIDEO_JOB)
    page = (await waiting).json()
    assert page["data"][0]["type"] == "job.created"


async def test_unknown_job_is_404(relay: Running) -> None:
    for path in ("/v1/jobs/job_nope", "/v1/jobs/job_nope/events"):
        answer = await relay.client.get(path)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "job_not_found"
    answer = await relay.client.get("/v1/nothing-here")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


async def test_bearer_tokens_guard_v1_only(start_relay) -> None:
    relay = await start_relay(RELAY_API_TOKENS="alpha, beta")
    async with httpx.AsyncClient(base_url=relay.url) as anon:
        assert (await anon.get("/v1/jobs")).status_code == 401
        wrong = await anon.get("/v1/jobs", headers={"Authorization": "Bearer gamma"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthorized"
        basic = await anon.get("/v1/jobs", headers={"Authorization": "Basic YWxwaGE="})
        assert basic.status_code == 401
        for token in ("alpha", "beta"):
            ok = await anon.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
        assert (await anon.get("/healthz")).json() == {"status": "ok"}
        assert (await anon.get("/readyz")).json() == {"status": "ready"}


async def test_interrupted_submission_is_reconciled_on_start(start_relay, tmp_path) -> None:
    # A process committed the job as submitting and died before the provider answered.
    relay = await start_relay(workers=False)
    store = relay.relay.store
    new = ledger.NewJob(
        "job_interrupted",
        "pixazo/seedvr-image",
        "pixazo",
        {"image_url": "https://x.example/a.png"},
        {},
        None,
        None,
    )
    past = time.time() - 600
    await store.write(lambda tx: ledger.create_job(tx, new, past, None, past + 100))
    database = relay.settings.database
    again = await start_relay(RELAY_DATABASE=database)
    job = await again.wait_status("job_interrupted", TERMINAL)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "submit_interrupted"
    events = await again.events("job_interrupted")
    assert events[-1]["source"] == "system"


async def test_metrics_count_jobs_and_events(relay: Running) -> None:
    job = (await relay.submit(IMAGE_JOB)).json()
    await relay.wait_status(job["id"], TERMINAL)
    async with httpx.AsyncClient(base_url=relay.url) as anon:
        text = (await anon.get("/metrics")).text
    assert 'relay_jobs{provider="pixazo",status="succeeded"} 1.0\n' in text
    assert "relay_events_total " in text


async def test_generated_secret_is_kept_across_restarts(start_relay) -> None:
    first = await start_relay(workers=False)
    token = first.relay.tokens.make("job_kept")
    again = await start_relay(RELAY_DATABASE=first.settings.database, workers=False)
    assert first.settings.secret is None  # generated, not configured
    assert again.relay.tokens.read(token) == "job_kept"
    other = await start_relay(workers=False)  # another database: another secret
    with pytest.raises(ApiError):
        other.relay.tokens.read(token)


# -- bad input never gets a 5xx (issue 9) ---------------------------------------------------

HOSTILE_BODIES = {
    "lone surrogate in metadata": rb'{"model": "pixazo/seedvr-image", "input": {"image_url":'
    rb' "https://x.example/a.png"}, "metadata": {"t": "\ud800"}}',
    "lone surrogate in a key": rb'{"model": "pixazo/seedvr-image", "input": {}, "metadata":'
    rb' {"\udc00": 1}}',
    "lone surrogate in a URL": rb'{"model": "pixazo/seedvr-image", "input": {"image_url":'
    rb' "https://x.example/\ud83d.png"}}',
    "NaN": b'{"model": "pixazo/seedvr-image", "input": {"image_url": "https://x.example/a.png",'
    b' "noise_scale": NaN}}',
    "Infinity": b'{"model": "pixazo/seedvr-image", "input": {}, "metadata": {"n": Infinity}}',
    "-Infinity": b'{"model": "pixazo/seedvr-image", "input": {}, "metadata": {"n": -Infinity}}',
    "overflowing float": b'{"model": "pixazo/seedvr-image", "input": {}, "metadata": {"n": 1e999}}',
    "65 levels": b'{"model": "pixazo/seedvr-image", "input": {}, "metadata": {"n": '
    + b"[" * 63
    + b"]" * 63
    + b"}}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
async def test_hostile_json_is_a_400_on_every_json_route(
    relay: Running, pixazo: PixazoSim, name: str
) -> None:
    raw = HOSTILE_BODIES[name]
    for method, path in (
        ("POST", "/v1/jobs"),
        ("POST", "/v1/subscriptions"),
        ("PATCH", "/v1/subscriptions/sub_nope"),
    ):
        answer = await relay.client.request(
            method, path, content=raw, headers={"content-type": "application/json"}
        )
        if path.endswith("sub_nope"):
            assert answer.status_code == 404, (path, answer.text)  # looked up first
            continue
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"]["code"] == "invalid_json"
    assert _generates(pixazo) == 0
    assert (await relay.client.get("/v1/jobs")).json()["data"] == []
    assert (await relay.client.get("/v1/subscriptions")).json()["data"] == []
    # and on PATCH of a subscription that exists
    sub = await relay.client.post("/v1/subscriptions", json={"url": "https://1.1.1.1/hook"})
    assert sub.status_code == 201, sub.text
    answer = await relay.client.patch(
        f"/v1/subscriptions/{sub.json()['id']}",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400
    shown = sub.json()
    shown.pop("secret")
    assert (await relay.client.get(f"/v1/subscriptions/{shown['id']}")).json() == shown


async def test_64_levels_of_nesting_are_still_json(relay: Running) -> None:
    deep = b'{"model": "pixazo/seedvr-image", "input": {}, "metadata": {"n": ' + b"[" * 62
    answer = await relay.client.post("/v1/jobs", content=deep + b"]" * 62 + b"}}")
    assert answer.status_code == 422  # parsed: 64 levels, then validated (metadata is flat)
    assert answer.json()["error"]["details"][-1]["field"] == "metadata.n"


@pytest.mark.parametrize(
    "raw",
    [
        rb'{"request_id": "\ud800", "status": "COMPLETED"}',
        b'{"status": "COMPLETED", "progress": NaN}',
        b'{"status": "COMPLETED", "output": ' + b"[" * 70 + b"]" * 70 + b"}",
    ],
)
async def test_hostile_callbacks_are_400_and_recorded(
    relay: Running, pixazo: PixazoSim, raw: bytes
) -> None:
    pixazo.lose_callbacks = True
    job = (await relay.submit(IMAGE_JOB)).json()
    hook = pixazo.jobs[job["provider_job_id"]].webhook_url
    assert hook is not None
    async with httpx.AsyncClient() as client:
        answer = await client.post(hook, content=raw)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_json"
    events = await relay.events(job["id"])
    rejected = [e for e in events if e["type"] == "callback.rejected"]
    assert rejected and rejected[0]["data"]["reason"] == "invalid_json"
    assert rejected[0]["data"]["body"] == raw.decode()
    assert (await relay.client.get(f"/v1/jobs/{job['id']}")).json()["status"] != "succeeded"


BAD_INTEGERS = ["٣", "1_0", "+1", " 1", "1 ", "-1", "0x10", "1e3", "1.0", str(2**63), "9" * 400]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/events", "after"),
        ("/v1/events", "limit"),
        ("/v1/events", "wait"),
        ("/v1/jobs", "cursor"),
        ("/v1/jobs", "limit"),
        ("/v1/jobs/job_x/events", "after"),
        ("/v1/subscriptions", "cursor"),
        ("/v1/deliveries", "cursor"),
        ("/v1/deliveries", "limit"),
    ],
)
async def test_query_integers_are_plain_ascii_digits_within_64_bits(
    relay: Running, path: str, name: str
) -> None:
    for raw in BAD_INTEGERS:
        answer = await relay.client.get(path, params={name: raw})
        assert answer.status_code == 400, (raw, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_query"
        assert error["details"] == {"parameter": name}


async def test_cursors_take_the_largest_64_bit_integer(relay: Running) -> None:
    top = str(2**63 - 1)
    assert (await relay.client.get("/v1/events", params={"after": top})).json()["data"] == []
    assert (await relay.client.get("/v1/jobs", params={"cursor": top})).status_code == 200
    assert (await relay.client.get("/v1/deliveries", params={"cursor": top})).status_code == 200
    assert (await relay.client.get("/v1/events", params={"after": "007"})).status_code == 200
    for name, low, high in (("limit", 1, 500), ("wait", 0, 60)):
        for value, status in ((low, 200), (high, 200), (low - 1, 400), (high + 1, 400)):
            if name == "wait" and value == high:
                continue  # a real minute of waiting
            got = await relay.client.get("/v1/events", params={name: str(value), "after": top})
            assert got.status_code == status, (name, value, got.text)


async def test_dry_run_is_a_declared_boolean(relay: Running, pixazo: PixazoSim) -> None:
    for word in ("1", "true", "YES"):
        answer = await relay.client.post("/v1/jobs", params={"dry_run": word}, json=IMAGE_JOB)
        assert answer.status_code == 200, answer.text
        assert answer.json()["dry_run"] is True
    answer = await relay.client.post("/v1/jobs", params={"dry_run": "maybe"}, json=IMAGE_JOB)
    assert answer.status_code == 400  # once silently a real submission
    assert _generates(pixazo) == 0


# -- limits at their edges -------------------------------------------------------------------


def _url(length: int, base: str = "https://x.example/") -> str:
    return base + "a" * (length - len(base))


@pytest.mark.parametrize(
    ("model", "param"),
    [
        ("pixazo/seedvr-image", "image_url"),
        ("pixazo/seedvr-video", "video_url"),
        ("scenario/seedvr2-video", "video"),
        ("scenario/upscale-v3", "image"),
    ],
)
async def test_media_urls_are_at_most_2048_characters(
    relay: Running, model: str, param: str
) -> None:
    answer = await relay.client.post(
        "/v1/jobs", json={"model": model, "input": {param: _url(2049)}}
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["details"] == [
        {"field": f"input.{param}", "message": "is longer than 2048 characters"}
    ]
    if model.startswith("pixazo/"):  # Scenario's dry run would fetch the media
        body = {"model": model, "input": {param: _url(2048)}}
        answer = await relay.client.post("/v1/jobs", params={"dry_run": "1"}, json=body)
        assert answer.status_code == 200, answer.text


async def test_per_job_webhook_limits(start_relay) -> None:
    relay = await start_relay(RELAY_ALLOW_PRIVATE_TARGETS="1")
    base = "http://127.0.0.1:9/"
    dry = {"dry_run": "1"}
    for length, status in ((2048, 200), (2049, 422)):
        body = {**IMAGE_JOB, "webhook": _url(length, base)}
        answer = await relay.client.post("/v1/jobs", params=dry, json=body)
        assert answer.status_code == status, (length, answer.text)
    for count, status in ((16, 200), (17, 422)):
        body = {**IMAGE_JOB, "webhook": base, "webhook_events_filter": ["completed"] * count}
        answer = await relay.client.post("/v1/jobs", params=dry, json=body)
        assert answer.status_code == status, (count, answer.text)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://10.1.2.3/x", "http://[::1]/x"],
)
async def test_per_job_webhook_to_a_private_address_is_refused_at_submit(
    relay: Running, pixazo: PixazoSim, url: str
) -> None:
    answer = await relay.submit({**IMAGE_JOB, "webhook": url})
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["error"]["details"]
    assert problem["field"] == "webhook"
    assert "RELAY_ALLOW_PRIVATE_TARGETS" in problem["message"]
    assert "/hook" not in problem["message"]  # the host is named, never the path
    assert _generates(pixazo) == 0
    assert (await relay.client.get("/v1/jobs")).json()["data"] == []


async def test_an_error_answer_lists_at_most_20_problems(relay: Running) -> None:
    body = {**IMAGE_JOB, **{f"k{i}": 0 for i in range(80_000)}}  # under 1 MiB
    answer = await relay.submit(body)
    assert answer.status_code == 422
    assert len(answer.content) < 4096
    error = answer.json()["error"]
    assert len(error["details"]) == 21
    assert error["details"][-1] == {"field": "*", "message": "79980 more problems not listed"}
    assert "(and 79995 more)" in error["message"]


async def test_echoed_values_are_clipped(relay: Running) -> None:
    answer = await relay.submit({"model": "m" * 100_000, "input": {}, "k" * 100_000: 1})
    assert answer.status_code == 422
    assert len(answer.content) < 4096
