"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against
`upscale-relay serve` and the simulators on loopback. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.server import serve
from service.sim.subscriber import Subscriber
from tests.e2e.harness import Service, service

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "ui-browser-test-token-0123456789"
WIDTHS = {"narrow": 375, "wide": 1440}
# `UI_DOCS_SCREENSHOTS=1 pytest tests/e2e/test_ui_browser.py` also refreshes the README's
# pictures under docs/ (committed; the artifacts are not)
DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_SHOTS = {  # name: (file, what the picture starts at)
    "jobs": ("dashboard-jobs.png", "body"),
    "job": ("dashboard-job.png", "#media"),
    "deliveries": ("dashboard-deliveries.png", "body"),
}
MODEL = "pixazo/seedvr-image"


def png(width: int, height: int) -> bytes:
    """A real RGB PNG (rings over a gradient), so a browser decodes it to its natural size and
    the input's coarser pixels show beside the output's."""

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        u, v = x / width, y / height
        ring = int(((u - 0.5) ** 2 + (v - 0.5) ** 2) ** 0.5 * 24) % 2
        return int(255 * u), int(200 * v) if ring else 40, 160 if ring else 230

    rows = b"".join(
        b"\0" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


IMAGES = {"before.png": png(64, 48), "after.png": png(256, 192)}


async def _image(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in IMAGES:
        return Response(status_code=404)
    return Response(IMAGES[name], media_type="image/png")


@dataclass
class World:
    relay: Service
    pixazo: PixazoSim
    subscriber: Subscriber
    subscriber_url: str
    media_url: str
    browser: Browser
    context: BrowserContext  # signed in by test_sign_in
    api: httpx.AsyncClient
    job_id: str = ""


def shot(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"ui-{name}.png"


UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button')].filter(
    (e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
        && !(e.tagName === "BUTTON" && e.textContent.trim())).map((e) => e.outerHTML)"""


async def screenshots(page: Page, name: str) -> None:
    """The page at 375 px and at 1,440 px, each checked for a horizontal scroll bar; every
    field labelled, every button named."""
    assert await page.evaluate(UNLABELLED) == [], f"{name} has unlabelled controls"
    for label, width in WIDTHS.items():
        await page.set_viewport_size({"width": width, "height": 900})
        await page.screenshot(path=shot(f"{name}-{label}"), full_page=True)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} scrolls sideways at {width} px"
    if os.environ.get("UI_DOCS_SCREENSHOTS") == "1" and name in DOC_SHOTS:
        file, start = DOC_SHOTS[name]
        await page.set_viewport_size({"width": 1024, "height": 640})
        await page.evaluate("(start) => document.querySelector(start).scrollIntoView()", start)
        await page.screenshot(path=DOCS / file)
    await page.set_viewport_size({"width": WIDTHS["wide"], "height": 900})


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    assert os.access(CHROMIUM, os.X_OK), "no Debian chromium: run scripts/ensure-test-packages"
    tmp = tmp_path_factory.mktemp("ui")
    # Jobs stay queued until a test completes them with outputs it chooses (real PNGs).
    pixazo = PixazoSim(queue_seconds=120, process_seconds=120)
    scenario = ScenarioSim(queue_seconds=0.05, process_seconds=0.25)
    subscriber = Subscriber()
    media = Starlette(routes=[Route("/media/{name}", _image, methods=["GET"])])
    async with contextlib.AsyncExitStack() as stack:
        pixazo.base_url = await stack.enter_async_context(serve(pixazo.app))
        stack.push_async_callback(pixazo.aclose)
        scenario.base_url = await stack.enter_async_context(serve(scenario.app))
        subscriber_url = await stack.enter_async_context(serve(subscriber.app))
        media_url = await stack.enter_async_context(serve(media))
        relay = await stack.enter_async_context(
            service(
                tmp,
                RELAY_API_TOKENS=f"another-token-abcdefghijkl,{TOKEN}",
                PIXAZO_API_KEY=pixazo.api_key,
                PIXAZO_BASE_URL=pixazo.base_url,
                SCENARIO_API_KEY=scenario.api_key,
                SCENARIO_API_SECRET=scenario.api_secret,
                SCENARIO_BASE_URL=scenario.base_url,
                RELAY_RETRY_SCHEDULE="0,0.05",
            )
        )
        await relay.start()
        api = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=relay.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            )
        )
        playwright = await stack.enter_async_context(async_playwright())
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        stack.push_async_callback(browser.close)
        context = await browser.new_context(
            base_url=relay.url, viewport={"width": WIDTHS["wide"], "height": 900}
        )
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=relay.url)
        yield World(relay, pixazo, subscriber, subscriber_url, media_url, browser, context, api)


async def test_without_a_session_ui_redirects_to_sign_in_and_v1_stays_bearer_only(
    world: World,
) -> None:
    async with httpx.AsyncClient(base_url=world.relay.url) as anon:
        form = await anon.get("/ui/signin")
        assert form.status_code == 200 and 'name="token"' in form.text
        cookie = form.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui;" in cookie
        anon.cookies.clear()
        for path in ("/ui/jobs", "/ui/deliveries", "/ui/jobs/anything", "/ui/events/stream"):
            answer = await anon.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/ui/signin"), path
        assert (await anon.get("/ui/", follow_redirects=True)).url.path == "/ui/signin"
        form = await anon.get("/ui/signin")
        # a signed-in session cookie is worth nothing to the API: it stays bearer-only
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed = await anon.post("/ui/signin", data={"csrf": csrf[1], "token": TOKEN})
        assert signed.status_code == 303
        assert (await anon.get("/ui/jobs")).status_code == 200
        # sent to /v1 by hand (its path keeps a browser from sending it there at all)
        session_cookie = f"relay_ui={anon.cookies['relay_ui']}"
        v1 = await anon.get("/v1/jobs", headers={"Cookie": session_cookie})
        assert v1.status_code == 401


async def test_sign_in(world: World) -> None:
    page = await world.context.new_page()
    await page.goto("/ui/jobs")
    await expect(page).to_have_url(re.compile(r"/ui/signin\?next=%2Fui%2Fjobs$"))
    await screenshots(page, "signin")
    await expect(page.get_by_label("API token")).to_be_focused()  # typing can start at once
    await page.get_by_label("API token").fill("not-the-token")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    await page.get_by_label("API token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/ui/jobs$"))
    await expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    # by keyboard: the first Tab reaches "Skip to content", which moves past the navigation
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#main")).to_be_focused()
    await page.close()


async def _complete(world: World, job_id: str) -> None:
    """The provider finishes the job with a real upscaled PNG and calls back."""
    job = (await world.api.get(f"/v1/jobs/{job_id}")).json()
    deadline = time.monotonic() + 10
    while not job["provider_job_id"]:
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
        job = (await world.api.get(f"/v1/jobs/{job_id}")).json()
    output = {"media_url": [f"{world.media_url}/media/after.png"], "media_type": "image/png"}
    world.pixazo.set_status(job["provider_job_id"], "COMPLETED", output=output)
    await world.pixazo.send_callback(job["provider_job_id"])


async def test_a_job_reaches_succeeded_on_the_jobs_page_without_reloading(world: World) -> None:
    page = await world.context.new_page()
    await page.goto("/ui/jobs")
    await expect(page.locator("#jobs[data-live=yes]")).to_have_count(1)  # the stream is open
    await page.evaluate("window.loadedOnce = true")
    body: dict[str, Any] = {
        "model": MODEL,
        "input": {"image_url": f"{world.media_url}/media/before.png"},
        "metadata": {"customer": "ui-test"},
    }
    created = await world.api.post("/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    world.job_id = job_id = created.json()["id"]
    row = page.locator(f"#job-{job_id}")
    await expect(row.locator("[data-field=status]")).to_have_text(re.compile("queued|submitting"))
    await _complete(world, job_id)
    await expect(row.locator("[data-field=status]")).to_have_text("succeeded", timeout=15_000)
    assert await page.evaluate("window.loadedOnce") is True  # the same page: never reloaded
    await expect(page.locator('[data-count="succeeded"]')).to_have_text("1")
    await screenshots(page, "jobs")
    # filters: a bad value is a 400 page, a good one narrows the list
    bad = await page.goto("/ui/jobs?status=bogus")
    assert bad is not None and bad.status == 400
    await page.goto("/ui/jobs?provider=scenario")
    await expect(page.locator(f"#job-{job_id}")).to_have_count(0)
    await page.goto("/ui/jobs?metadata=customer%3Dui-test&model=pixazo%2Fseedvr-image")
    await expect(page.locator(f"#job-{job_id}")).to_have_count(1)
    await page.close()


async def test_the_job_page_shows_before_and_after_timeline_and_curl(world: World) -> None:
    assert world.job_id, "runs after the job test"
    page = await world.context.new_page()
    await page.goto(f"/ui/jobs/{world.job_id}")
    await expect(page.locator("#status")).to_have_text("succeeded")
    sizes = await page.evaluate(
        """async () => Promise.all(["before", "after"].map(async (id) => {
            const img = document.getElementById(id);
            await img.decode();
            return [img.naturalWidth, img.naturalHeight];
        }))"""
    )
    assert sizes == [[64, 48], [256, 192]]
    # the slider works from the keyboard and moves the clip between the two images
    slider = page.get_by_label("Slide to compare (left: before, right: after)")
    await slider.focus()
    await page.keyboard.press("ArrowRight")
    clip = await page.locator("#after").evaluate("e => e.style.clipPath")
    assert clip == "inset(0px 0px 0px 51%)"
    timeline = page.locator("#timeline li")
    assert await timeline.count() >= 3
    await expect(page.locator("#timeline")).to_contain_text("callback")
    await expect(page.locator("#timeline")).to_contain_text("job.succeeded")
    await page.get_by_role("button", name="Copy as curl").click()
    await expect(page.locator("#copied")).to_have_text("Copied.")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith(f"curl -sS -X POST {world.relay.url}/v1/jobs")
    assert MODEL in copied and "$RELAY_API_TOKEN" in copied and TOKEN not in copied
    await screenshots(page, "job")
    missing = await page.goto("/ui/jobs/no-such-job")
    assert missing is not None and missing.status == 404
    await page.close()


async def test_a_failed_delivery_is_retried_from_the_page(world: World) -> None:
    sub = await world.api.post(
        "/v1/subscriptions",
        json={"url": f"{world.subscriber_url}/hook", "events": ["job.failed"]},
    )
    assert sub.status_code == 201, sub.text
    world.subscriber.secrets = [sub.json()["secret"]]
    world.subscriber.fail_next(500, count=2)  # both attempts of RELAY_RETRY_SCHEDULE="0,0.05"
    test = await world.api.post(f"/v1/subscriptions/{sub.json()['id']}/test")
    delivery_id = test.json()["id"]
    deadline = time.monotonic() + 10
    while (await world.api.get(f"/v1/deliveries/{delivery_id}")).json()["status"] != "failed":
        assert time.monotonic() < deadline, "the delivery did not fail"
        await asyncio.sleep(0.05)
    page = await world.context.new_page()
    await page.goto("/ui/deliveries")
    row = page.locator(f"#delivery-{delivery_id}")
    await expect(row.locator("[data-field=status]")).to_have_text("failed")
    assert await page.locator("#deliveries tbody tr").first.get_attribute("id") == (
        f"delivery-{delivery_id}"
    ), "failed deliveries come first"
    await expect(row).to_contain_text("500")
    await screenshots(page, "deliveries")
    await row.get_by_role("button", name=f"Retry delivery {delivery_id}").click()
    await expect(page.get_by_role("status").first).to_contain_text("is being retried")
    deadline = time.monotonic() + 10
    while (await world.api.get(f"/v1/deliveries/{delivery_id}")).json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the retried delivery did not succeed"
        await asyncio.sleep(0.05)
    # no reload: the page follows its deliveries
    await expect(row.locator("[data-field=status]")).to_have_text("succeeded")
    assert world.subscriber.received[-1].verified is True
    # bulk: every failed delivery of the subscription, retried from the subscriptions page
    sub_id = sub.json()["id"]
    world.subscriber.fail_next(500, count=4)
    tests = [(await world.api.post(f"/v1/subscriptions/{sub_id}/test")).json()["id"] for _ in "ab"]
    await wait_statuses(world, tests, "failed")
    await page.goto("/ui/subscriptions")
    await page.get_by_role("button", name=f"Retry the failed deliveries of {sub_id}").click()
    await expect(page.get_by_role("status").first).to_contain_text("2 failed deliveries")
    await wait_statuses(world, tests, "succeeded")
    # live: a new delivery and its attempts appear, a retried one changes in place, unreloaded
    await page.goto("/ui/deliveries")
    await expect(page.locator("#deliveries")).to_have_attribute("data-live", "yes")
    await page.evaluate("() => { window.stayed = true; }")
    world.subscriber.fail_next(500, count=2)
    fresh = (await world.api.post(f"/v1/subscriptions/{sub_id}/test")).json()["id"]
    fresh_row = page.locator(f"#delivery-{fresh}")
    await expect(fresh_row.locator("[data-field=status]")).to_have_text("failed")
    await expect(fresh_row.locator("ol.attempts > li")).to_have_count(2)
    await expect(fresh_row).to_contain_text("500")
    retry = fresh_row.get_by_role("button", name=f"Retry delivery {fresh}")
    await retry.focus()
    assert (await world.api.post(f"/v1/deliveries/{fresh}/retry")).status_code == 202
    await expect(fresh_row.locator("[data-field=status]")).to_have_text("succeeded")
    await expect(fresh_row.locator("ol.attempts > li")).to_have_count(3)
    await expect(retry).to_be_focused()  # the row was replaced, the keyboard user's place kept
    assert await page.evaluate("() => window.stayed === true"), "the page was reloaded"
    await page.close()


async def wait_statuses(world: World, delivery_ids: list[str], status: str) -> None:
    deadline = time.monotonic() + 10
    for delivery_id in delivery_ids:
        while (await world.api.get(f"/v1/deliveries/{delivery_id}")).json()["status"] != status:
            assert time.monotonic() < deadline, f"{delivery_id} is not {status}"
            await asyncio.sleep(0.05)


async def test_a_form_post_without_the_csrf_token_is_refused(world: World) -> None:
    page = await world.context.new_page()
    await page.goto("/ui/deliveries")
    token = await page.locator('input[name="csrf"]').first.get_attribute("value")
    assert token
    # the session cookie goes along (the context's own request client), the token does not
    forged = await world.context.request.post(
        "/ui/deliveries/any-delivery/retry", form={"back": "/ui/jobs"}, max_redirects=0
    )
    assert forged.status == 403
    wrong = await world.context.request.post(
        "/ui/deliveries/any-delivery/retry", form={"csrf": token[:-2] + "xx"}, max_redirects=0
    )
    assert wrong.status == 403
    signout = await world.context.request.post("/ui/signout", form={}, max_redirects=0)
    assert signout.status == 403
    # with the session's token the same post gets through the check (to a 404: no such one)
    allowed = await world.context.request.post(
        "/ui/deliveries/any-delivery/retry", form={"csrf": token}, max_redirects=0
    )
    assert allowed.status == 404
    await page.close()


async def test_subscriptions_are_created_paused_resumed_tested_and_deleted_from_the_page(
    world: World,
) -> None:
    page = await world.context.new_page()
    await page.goto("/ui/subscriptions")
    # the template previews live, rendered by the relay as a delivery would be
    template = page.get_by_label("Message template (chat kinds only)")
    await page.get_by_label("Kind", exact=True).select_option("slack")
    look = page.locator("#preview-look")
    await template.fill("{status_emoji} {data.model} done for *{data.metadata.customer}*")
    # drawn as Slack shows it: the header block, the text with its bold, the fields
    await expect(look.locator(".slack .sl-header")).to_have_text("✅ Upscale succeeded")
    await expect(look.locator(".slack .sl-text").first).to_contain_text(
        "pixazo/seedvr-image done for acme"
    )
    await expect(look.locator(".slack .sl-text strong")).to_have_text("acme")
    await expect(page.locator("#preview-body")).to_contain_text('"blocks"')
    await template.press_sequentially(" <b>now</b>", delay=5)
    await expect(look.locator(".slack .sl-text").first).to_contain_text("acme bnow/b")
    await page.get_by_label("Kind", exact=True).select_option("discord")
    await expect(look.locator(".discord .dc-embed.c-green .dc-title")).to_contain_text(
        "Upscale succeeded: pixazo/seedvr-image"
    )
    await expect(look.locator(".discord .dc-content")).to_contain_text("<b>now</b>")
    await page.get_by_label("Kind", exact=True).select_option("teams")
    await expect(look.locator(".teams .tm-facts")).to_contain_text("customer")
    await page.get_by_label("Kind", exact=True).select_option("google_chat")
    await expect(look.locator(".gchat .gc-title")).to_have_text("✅ Upscale succeeded")
    await screenshots(page, "subscription-preview")
    await template.fill("{data.model")
    await expect(look).to_contain_text("Problems:")
    await expect(look.locator(".chat")).to_have_count(0)
    await page.get_by_label("Kind", exact=True).select_option("webhook")
    # a webhook takes no template: refused with the problem named, the form kept
    await page.get_by_label("URL").fill(f"{world.subscriber_url}/from-the-page")
    await template.fill("{data.model} done")
    await page.get_by_role("button", name="Create subscription").click()
    await expect(page.locator("#problems")).to_contain_text("template: webhook bodies are fixed")
    await expect(page.get_by_label("URL")).to_have_value(f"{world.subscriber_url}/from-the-page")
    await page.get_by_label("Message template (chat kinds only)").fill("")
    await page.get_by_label("Description").fill("made in the dashboard")
    await page.get_by_label(re.compile("^Only jobs with this metadata")).fill('{"team": "ui"}')
    await page.get_by_role("button", name="Create subscription").click()
    secret = await page.locator("#new-secret").inner_text()
    assert secret.startswith("whsec_")
    sub_id = await page.locator("#created .mono").inner_text()
    made = (await world.api.get(f"/v1/subscriptions/{sub_id}")).json()
    assert made["filter"] == {"metadata": {"team": "ui"}}
    assert made["description"] == "made in the dashboard"
    world.subscriber.secrets.append(secret)
    await screenshots(page, "subscriptions")
    # edited from its own page, by keyboard, through the PATCH checks
    await page.get_by_role("link", name=f"Edit {sub_id}").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Description")).to_have_value("made in the dashboard")
    await screenshots(page, "subscription-edit")
    await page.get_by_label(re.compile("^New URL")).fill("ftp://files.example/x")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator("#problems")).to_contain_text("url: must be an http(s) URL")
    await page.get_by_label(re.compile("^New URL")).fill("")
    await page.get_by_label(re.compile("^At most this many deliveries")).fill("4")
    await page.get_by_label("Description").fill("edited in the dashboard")
    await page.get_by_label("job.failed").check()
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("status").first).to_contain_text(f"{sub_id} is updated")
    edited = (await world.api.get(f"/v1/subscriptions/{sub_id}")).json()
    assert (edited["description"], edited["max_in_flight"]) == ("edited in the dashboard", 4)
    assert "job.failed" in edited["events"] and edited["filter"] == {"metadata": {"team": "ui"}}
    row = page.locator(f"#sub-{sub_id}")
    await row.get_by_role("button", name=f"Pause {sub_id}").click()
    await expect(row.locator("[data-field=status]")).to_have_text("paused")
    await expect(page.locator("#new-secret")).to_have_count(0)  # shown once, never again
    await row.get_by_role("button", name=f"Resume {sub_id}").click()
    await expect(row.locator("[data-field=status]")).to_have_text("active")
    before = len(world.subscriber.received)
    await row.get_by_role("button", name=f"Send a test to {sub_id}").click()
    await expect(page.get_by_role("status").first).to_contain_text("Test delivery")
    deadline = time.monotonic() + 10
    while not any(r.path == "/from-the-page" for r in world.subscriber.received[before:]):
        assert time.monotonic() < deadline, "the test delivery did not arrive"
        await asyncio.sleep(0.05)
    arrived = [r for r in world.subscriber.received[before:] if r.path == "/from-the-page"]
    assert arrived[0].verified is True and arrived[0].json["type"] == "job.test"
    # a new secret, shown once: the next delivery verifies with it alone
    await row.get_by_role("button", name=f"Rotate the secret of {sub_id}").click()
    rotated = await page.locator("#new-secret").inner_text()
    assert rotated.startswith("whsec_") and rotated != secret
    world.subscriber.secrets.remove(secret)
    world.subscriber.secrets.append(rotated)
    before = len(world.subscriber.received)
    await row.get_by_role("button", name=f"Send a test to {sub_id}").click()
    deadline = time.monotonic() + 10
    while not any(r.path == "/from-the-page" for r in world.subscriber.received[before:]):
        assert time.monotonic() < deadline, "the test delivery did not arrive"
        await asyncio.sleep(0.05)
    signed = [r for r in world.subscriber.received[before:] if r.path == "/from-the-page"]
    assert signed[0].verified is True
    await row.get_by_role("button", name=f"Delete {sub_id}").click()
    await expect(page.get_by_role("status").first).to_contain_text("is deleted")
    await expect(row).to_have_count(0)
    assert (await world.api.get(f"/v1/subscriptions/{sub_id}")).status_code == 404
    await page.close()


async def test_a_job_submitted_from_the_form_succeeds_on_its_page_without_reloading(
    world: World,
) -> None:
    page = await world.context.new_page()
    await page.goto("/ui/submit")
    await page.get_by_label("Model", exact=True).select_option(MODEL)
    await page.get_by_role("button", name="Choose").click()
    field = page.get_by_label(re.compile(r"^image_url \(required\)"))
    await field.fill(f"{world.media_url}/media/before.png")
    await page.get_by_label("Metadata (a JSON object, optional)").fill('{"from": "form"}')
    await page.get_by_role("button", name="Dry run").click()
    await expect(page.locator("#dry-run")).to_contain_text("Dry run: valid")
    newest = (await world.api.get("/v1/jobs", params={"limit": 1})).json()["data"][0]
    assert newest["metadata"] != {"from": "form"}, "a dry run creates no job"
    await screenshots(page, "submit")
    # a bad value is named and the form kept
    await page.get_by_label("Metadata (a JSON object, optional)").fill("[1, 2]")
    await page.get_by_role("button", name="Submit", exact=True).click()
    await expect(page.locator("#problems")).to_contain_text("metadata")
    await expect(field).to_have_value(f"{world.media_url}/media/before.png")
    await page.get_by_label("Metadata (a JSON object, optional)").fill('{"from": "form"}')
    await page.get_by_role("button", name="Submit", exact=True).click()
    await expect(page).to_have_url(re.compile(r"/ui/jobs/job_"))
    job_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator("#status")).to_have_text(re.compile("submitting|queued"))
    await page.evaluate("window.loadedOnce = true")
    await _complete(world, job_id)
    await expect(page.locator("#status")).to_have_text("succeeded", timeout=15_000)
    await expect(page.locator("#after")).to_have_count(1)
    widths = await page.evaluate(
        """async () => Promise.all(["before", "after"].map(async (id) => {
            const img = document.getElementById(id);
            await img.decode();
            return img.naturalWidth;
        }))"""
    )
    assert widths == [64, 256]
    assert await page.evaluate("window.loadedOnce") is True
    job = (await world.api.get(f"/v1/jobs/{job_id}")).json()
    assert job["metadata"] == {"from": "form"} and job["status"] == "succeeded"
    await page.close()


async def test_a_scenario_dry_run_shows_the_cost_first(world: World) -> None:
    page = await world.context.new_page()
    await page.goto("/ui/submit?model=scenario%2Fupscale-v3")
    await page.get_by_label(re.compile(r"^image \(required\)")).fill(
        f"{world.media_url}/media/before.png"
    )
    await page.get_by_role("button", name="Dry run (shows the cost)").click()
    await expect(page.locator("#dry-run")).to_contain_text("Dry run: valid")
    cost = await page.locator("#dry-run-cost").inner_text()
    assert float(cost) > 0
    listed = (await world.api.get("/v1/jobs", params={"model": "scenario/upscale-v3"})).json()
    assert listed["data"] == [], "a dry run creates no job"
    await page.close()
