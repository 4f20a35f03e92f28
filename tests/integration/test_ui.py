"""The dashboard over real HTTP without a browser: sessions, CSRF, bad input (4xx, never 5xx)."""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import httpx

from service import ledger, outbox
from service.http.subscriptions import check_fields
from service.store.base import Tx
from service.ui import session
from tests.conftest import StartRelay

TOKEN = "dashboard-token-0123456789abcdef"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found is not None, page[:500]
    return found[1]


async def signed_in(client: httpx.AsyncClient) -> str:
    """Sign `client` in; the session's CSRF token."""
    form = await client.get("/ui/signin")
    answer = await client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": TOKEN})
    assert answer.status_code == 303, answer.text
    return csrf_of((await client.get("/ui/jobs")).text)


async def test_bad_input_to_the_dashboard_gets_4xx_pages(start_relay: StartRelay) -> None:
    running = await start_relay(RELAY_API_TOKENS=TOKEN)
    async with httpx.AsyncClient(base_url=running.url) as client:
        csrf = await signed_in(client)
        gets = [
            "/ui/jobs?status=bogus",
            "/ui/jobs?model=%00",
            "/ui/jobs?provider=nope",
            "/ui/jobs?before=-1",
            "/ui/jobs?before=99999999999999999999999",
            "/ui/jobs?before=%D9%A3",
            "/ui/jobs?metadata=" + "k" * 201,
            "/ui/jobs/" + "x" * 300,
            "/ui/jobs/%FF%FE",
            "/ui/deliveries?status=lost",
            "/ui/deliveries?before=x",
            "/ui/deliveries?subscription_id=" + "s" * 200,
            "/ui/deliveries/rows?status=lost",
            "/ui/deliveries/rows?before=x",
            "/ui/jobs?metadata=a%22b",
            "/ui/jobs?metadata=%3Dvalue",
            "/ui/jobs?metadata=a%00b",
            "/ui/events/stream?after=x",
            "/ui/events/stream?type=%3Cscript%3E",
            "/ui/subscriptions/preview?kind=bogus",
            "/ui/subscriptions/preview?template=" + "x" * 5000,
            "/ui/submit?model=nope",
        ]
        for path in gets:
            answer = await client.get(path)
            assert 400 <= answer.status_code < 500, (path, answer.status_code)
        retry = "/ui/deliveries/nope/retry"
        posts: list[tuple[dict[str, str], bytes]] = [
            ({"Content-Type": "application/json"}, b'{"csrf": "%s"}' % csrf.encode()),
            ({"Content-Type": "application/x-www-form-urlencoded"}, b"csrf=\xff\xfe"),
            ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=" * 40_000),
            ({"Content-Type": "application/x-www-form-urlencoded"}, b"&".join([b"a=1"] * 200)),
            ({"Content-Type": "application/x-www-form-urlencoded"}, b"csrf=" + csrf.encode()),
        ]
        for headers, body in posts:
            answer = await client.post(retry, content=body, headers=headers)
            assert 400 <= answer.status_code < 500, (body[:40], answer.status_code)
        # the page of a refusal is HTML with the reason, not the API's JSON envelope
        page = await client.get("/ui/jobs?status=bogus")
        assert page.status_code == 400
        assert page.headers["content-type"].startswith("text/html")
        assert "unknown value" in page.text


async def test_sessions_end_when_their_token_is_removed_and_signout_clears_them(
    start_relay: StartRelay,
) -> None:
    running = await start_relay(RELAY_API_TOKENS=TOKEN, RELAY_SECRET="shared-relay-secret")
    async with httpx.AsyncClient(base_url=running.url) as client:
        csrf = await signed_in(client)
        assert (await client.get("/ui/jobs")).status_code == 200
        kept = client.cookies[session.COOKIE]
        # a session signed with another key is refused like none
        forged = httpx.AsyncClient(base_url=running.url, cookies={session.COOKIE: "e30=.x.y"})
        async with forged:
            assert (await forged.get("/ui/jobs")).status_code == 303
        out = await client.post("/ui/signout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/ui/signin"
        assert (await client.get("/ui/jobs")).status_code == 303
    # the same cookie, validly signed, once its token has left RELAY_API_TOKENS: refused
    for tokens, status in ((TOKEN, 200), ("a-new-token-0123456789abcdef", 303)):
        other = await start_relay(RELAY_API_TOKENS=tokens, RELAY_SECRET="shared-relay-secret")
        async with httpx.AsyncClient(base_url=other.url, cookies={session.COOKIE: kept}) as again:
            assert (await again.get("/ui/jobs")).status_code == status, tokens


def test_the_session_key_is_derived_not_the_secret_itself() -> None:
    key = session.session_key("relay-secret")
    assert key != "relay-secret" and len(key) == 64
    assert key != session.session_key("relay-secret2")


async def test_without_tokens_the_dashboard_is_open(start_relay: StartRelay) -> None:
    running = await start_relay()
    async with httpx.AsyncClient(base_url=running.url) as client:
        answer = await client.get("/ui/jobs")
        assert answer.status_code == 200 and "Sign out" not in answer.text
        assert (await client.get("/ui/signin")).headers["location"] == "/ui/jobs"
        # CSRF still guards every form, signed in or not
        no_token = await client.post("/ui/deliveries/x/retry", data={"back": "/ui/jobs"})
        assert no_token.status_code == 403
        csrf = csrf_of(answer.text)
        assert (await client.post("/ui/deliveries/x/retry", data={"csrf": csrf})).status_code == 404


async def test_deliveries_page_on_past_the_first_hundred(start_relay: StartRelay) -> None:
    # nothing delivers: they all stay pending
    running = await start_relay(workers=False, RELAY_ALLOW_PRIVATE_TARGETS="1")
    sub = await running.client.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/x"})
    assert sub.status_code == 201, sub.text
    ids = [
        (await running.client.post(f"/v1/subscriptions/{sub.json()['id']}/test")).json()["id"]
        for _ in range(103)
    ]
    async with httpx.AsyncClient(base_url=running.url) as client:
        first = (await client.get("/ui/deliveries?status=pending")).text
        shown = re.findall(r'id="delivery-([^"]+)"', first)
        assert shown == ids[::-1][:100]
        older = re.search(r'href="(/ui/deliveries\?[^"]+)">Older deliveries', first)
        assert older is not None
        second = (await client.get(older[1].replace("&amp;", "&"))).text
        assert re.findall(r'id="delivery-([^"]+)"', second) == ids[::-1][100:]
        assert "Older deliveries" not in second


async def test_the_jobs_page_pages_and_filters_by_provider_and_metadata(
    start_relay: StartRelay,
) -> None:
    running = await start_relay(workers=False)
    ids = []
    for n in range(55):
        body = {
            "model": "pixazo/seedvr-image",
            "input": {"image_url": f"https://img.example.com/{n}.png"},
            "metadata": {"n": n, "batch": "even" if n % 2 == 0 else "odd"},
        }
        answer = await running.submit(body)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    newest = ids[::-1]

    async def rows(path: str) -> tuple[list[str], str | None]:
        async with httpx.AsyncClient(base_url=running.url) as client:
            page = await client.get(path)
        assert page.status_code == 200, page.text
        older = re.search(r'href="(/ui/jobs\?[^"]*)">Older jobs', page.text)
        return re.findall(r'<tr id="job-([^"]+)"', page.text), (
            older[1].replace("&amp;", "&") if older else None
        )

    first, older = await rows("/ui/jobs")
    assert first == newest[:50] and older is not None
    assert await rows(older) == (newest[50:], None)
    assert (await rows("/ui/jobs?provider=pixazo"))[0] == newest[:50]
    assert await rows("/ui/jobs?provider=scenario") == ([], None)
    assert await rows("/ui/jobs?metadata=n%3D7") == ([ids[7]], None)
    even, older = await rows("/ui/jobs?metadata=batch%3Deven&provider=pixazo")
    assert even == [i for i in newest if ids.index(i) % 2 == 0] and older is None
    assert (await rows("/ui/jobs?metadata=missing"))[0] == []


async def test_a_video_job_page_has_a_player_for_the_input_and_each_output(
    start_relay: StartRelay,
) -> None:
    running = await start_relay()
    body = {"model": "pixazo/seedvr-video", "input": {"video_url": "https://v.example.com/a.mp4"}}
    job = (await running.submit(body)).json()
    done = await running.wait_status(job["id"], {"succeeded"})
    async with httpx.AsyncClient(base_url=running.url) as client:
        page = (await client.get(f"/ui/jobs/{job['id']}")).text
    players = re.findall(r'<video controls preload="metadata" src="([^"]+)"', page)
    assert players == ["https://v.example.com/a.mp4", done["outputs"][0]["url"]]
    assert 'id="reveal"' not in page  # the slider is for images
    assert 'id="before"' not in page


async def test_the_subscriptions_page_never_shows_a_chat_webhook_path_or_a_query(
    start_relay: StartRelay,
) -> None:
    running = await start_relay(workers=False, RELAY_ALLOW_PRIVATE_TARGETS="1")
    for body in (
        {"url": "http://127.0.0.1:9/services/T0/B0/sekrit-path", "kind": "slack"},
        {"url": "http://127.0.0.1:9/hook?token=sekrit-query", "kind": "webhook"},
    ):
        made = await running.client.post("/v1/subscriptions", json=body)
        assert made.status_code == 201, made.text
    async with httpx.AsyncClient(base_url=running.url) as client:
        page = (await client.get("/ui/subscriptions")).text
    assert "http://127.0.0.1:9/…" in page and "http://127.0.0.1:9/hook" in page
    assert "sekrit" not in page


async def test_the_session_cookie_is_secure_behind_an_https_public_url(
    start_relay: StartRelay,
) -> None:
    for public, secure in (("https://relay.example", True), ("http://127.0.0.1:8000", False)):
        running = await start_relay(RELAY_API_TOKENS=TOKEN, RELAY_PUBLIC_URL=public)
        async with httpx.AsyncClient(base_url=running.url) as client:
            cookie = (await client.get("/ui/signin")).headers["set-cookie"].lower()
        assert ("; secure" in cookie) is secure, (public, cookie)
        assert "httponly" in cookie and "samesite=strict" in cookie


async def test_jobs_filters_and_24_hour_counts_reach_past_the_newest_two_thousand(
    start_relay: StartRelay,
) -> None:
    running = await start_relay(workers=False)
    now = time.time()

    async def unit(tx: Tx) -> None:
        # the first job is the only "old" one, under 2,100 newer ones; one more is two days old
        for n in range(2_101):
            new = ledger.NewJob(
                f"job_f{n:05d}",
                "pixazo/seedvr-image",
                "pixazo",
                {"image_url": "https://img.example.com/a.png"},
                {"batch": "old" if n == 0 else "new"},
                None,
                None,
            )
            created = now - 172_800 if n == 1 else now - 3_600 + n * 0.1
            await ledger.create_job(tx, new, created, None, now + 3_600)

    await running.relay.store.write(unit)
    async with httpx.AsyncClient(base_url=running.url) as client:
        page = (await client.get("/ui/jobs?metadata=batch%3Dold")).text
        everything = (await client.get("/ui/jobs")).text
        bad = await client.get("/ui/jobs?metadata=" + quote('a"b=1'))
    assert re.findall(r'<tr id="job-([^"]+)"', page) == ["job_f00000"]
    assert '<span class="n" data-count="submitting">2100</span>' in everything
    assert bad.status_code == 400 and "metadata key" in bad.text


async def test_the_template_preview_draws_each_chat_tools_message_escaped(
    start_relay: StartRelay,
) -> None:
    running = await start_relay(workers=False)
    template = "{status_emoji} **{data.model}** *{data.id}* <script>x</script> `{data.status}`"
    looks = {
        "slack": ('class="chat slack"', 'class="sl-header"', "<code>succeeded</code>"),
        "discord": ('class="dc-embed c-green"', "<strong>pixazo/seedvr-image</strong>"),
        "teams": ('class="tm-facts"', '<a class="chat-button" href="https://cdn.example.com/'),
        "google_chat": ('class="gc-card"', "<strong>job_preview</strong>"),
        "webhook": ('<pre class="code">',),
    }
    async with httpx.AsyncClient(base_url=running.url) as client:
        for kind, wanted in looks.items():
            query = {"kind": kind, "template": "" if kind == "webhook" else template}
            answer = await client.get("/ui/subscriptions/preview", params=query)
            assert answer.status_code == 200, answer.text
            shown = answer.json()["html"]
            for part in wanted:
                assert part in shown, (kind, part, shown)
            assert "<script" not in shown, kind
        # the sample job's output URL becomes a link; a template's problem draws nothing
        bad = await client.get("/ui/subscriptions/preview", params={"template": "{data.model"})
        assert bad.json()["html"] == "" and bad.json()["problems"]


async def test_the_submit_form_takes_a_webhook_validated_as_the_api_does(
    start_relay: StartRelay,
) -> None:
    form = {
        "model": "pixazo/seedvr-image",
        "p:image_url": "https://img.example.com/a.png",
        "action": "submit",
        "webhook": "http://127.0.0.1:9/hook",
        "wev:completed": "on",
    }
    strict = await start_relay(workers=False)
    async with httpx.AsyncClient(base_url=strict.url) as client:
        csrf = csrf_of((await client.get("/ui/submit")).text)
        refused = await client.post("/ui/submit", data={**form, "csrf": csrf})
        assert refused.status_code == 422, refused.text
        assert re.search(r"<li>webhook: [^<]*private", refused.text), refused.text
        # the form is kept as it was typed
        assert 'value="http://127.0.0.1:9/hook"' in refused.text
        assert 'name="wev:completed" checked' in refused.text
        forged = await client.post("/ui/submit", data={**form, "csrf": csrf, "wev:bogus": "on"})
        assert forged.status_code == 422 and "webhook_events_filter" in forged.text
    allowing = await start_relay(workers=False, RELAY_ALLOW_PRIVATE_TARGETS="1")
    async with httpx.AsyncClient(base_url=allowing.url) as client:
        csrf = csrf_of((await client.get("/ui/submit")).text)
        made = await client.post("/ui/submit", data={**form, "csrf": csrf, "wev:start": "on"})
        assert made.status_code == 303, made.text
        job_id = made.headers["location"].rsplit("/", 1)[1]
    job = (await allowing.client.get(f"/v1/jobs/{job_id}")).json()
    assert job["webhook"] == "http://127.0.0.1:9/hook"
    assert sorted(job["webhook_events_filter"]) == ["completed", "start"]


async def test_a_subscription_is_edited_from_its_page_through_the_patch_checks(
    start_relay: StartRelay,
) -> None:
    # made while private targets were allowed: this relay refuses them (no DNS here to name
    # a public host)
    running = await start_relay(workers=False)
    body = {"url": "http://127.0.0.1:9/services/T0/B0/sekrit-path", "kind": "slack"}
    fields, problems = await check_fields(body, creating=True, kind="slack", allow_private=True)
    assert problems == []
    made = await running.relay.store.write(
        lambda tx: outbox.create_subscription(tx, fields, time.time())
    )
    sub_id = made.id
    edit = f"/ui/subscriptions/{sub_id}/edit"
    async with httpx.AsyncClient(base_url=running.url) as client:
        page = (await client.get(edit)).text
        assert "sekrit" not in page and 'name="event:job.succeeded" checked' in page
        csrf = csrf_of(page)
        form = {
            "csrf": csrf,
            "event:job.failed": "on",
            "model:pixazo/seedvr-image": "on",
            "metadata": '{"team": "ui"}',
            "template": "{status_emoji} {data.model}",
            "description": "edited",
            "max_in_flight": "3",
            "rate_per_second": "2.5",
        }
        bad = [
            ({"max_in_flight": "0"}, "max_in_flight"),
            ({"max_in_flight": "many"}, "max_in_flight"),
            ({"rate_per_second": "-1"}, "rate_per_second"),
            ({"rate_per_second": "nan"}, "rate_per_second"),
            ({"url": "http://127.0.0.1:9/x"}, "url"),
            ({"url": "ftp://x"}, "url"),
            ({"template": "{data.model"}, "template"),
            ({"event:job.failed": "", "event:job.bogus": "on"}, "events"),
            ({"model:nope/nope": "on"}, "filter"),
        ]
        for change, field in bad:
            answer = await client.post(edit, data={**form, **change})
            assert answer.status_code == 422, (change, answer.status_code)
            assert f"<li>{field}" in answer.text, (change, answer.status_code)
        none_ticked = {k: v for k, v in form.items() if not k.startswith("event:")}
        answer = await client.post(edit, data=none_ticked)
        assert answer.status_code == 422 and "<li>events: " in answer.text
        forged = await client.post(edit, data={k: v for k, v in form.items() if k != "csrf"})
        assert forged.status_code == 403
        unknown = await client.post(f"/ui/subscriptions/{'x' * 200}/edit", data=form)
        assert unknown.status_code == 404
        assert (await client.get("/ui/subscriptions/nope/edit")).status_code == 404
        answer = await client.post(edit, data=form)
        assert answer.status_code == 303, answer.text
    sub = (await running.client.get(f"/v1/subscriptions/{sub_id}")).json()
    assert sub["events"] == ["job.failed"]
    assert sub["filter"] == {"models": ["pixazo/seedvr-image"], "metadata": {"team": "ui"}}
    assert (sub["template"], sub["description"]) == ("{status_emoji} {data.model}", "edited")
    assert (sub["max_in_flight"], sub["rate_per_second"]) == (3, 2.5)
    assert sub["url"].endswith("sekrit-path")  # kept: the URL field was left empty


async def test_get_ui_leads_to_the_jobs_page_or_to_sign_in(start_relay: StartRelay) -> None:
    """SPEC: `GET /ui` is the dashboard (sign in with an API token)."""
    running = await start_relay(RELAY_API_TOKENS=TOKEN)
    async with httpx.AsyncClient(base_url=running.url) as client:
        for path in ("/ui", "/ui/"):
            page = await client.get(path, follow_redirects=True)
            assert page.status_code == 200, path
            assert page.url.path == "/ui/signin", path
        await signed_in(client)
        for path in ("/ui", "/ui/"):
            page = await client.get(path, follow_redirects=True)
            assert page.status_code == 200, path
            assert "<title>Jobs" in page.text, path
