"""DNS rebinding: a name checked as public but answering loopback at connect time is refused."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from service import app, config
from service.sim.media import MediaSim
from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.server import bind, serve, url_of
from tests.conftest import IMAGE_JOB, Running
from tests.integration.helpers import FAST, ServeSubscriber, run_job, settled, subscribe

PUBLIC = "93.184.216.34"
HINT = "RELAY_ALLOW_PRIVATE_TARGETS=1"


class Rebinding:
    """A DNS that answers a public address to a name's first lookup and loopback afterwards."""

    def __init__(self) -> None:
        self.lookups: collections.Counter[str] = collections.Counter()

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups[host] += 1
        return [PUBLIC] if self.lookups[host] == 1 else ["127.0.0.1"]


@pytest.fixture
async def guarded(
    tmp_path: Path, pixazo: PixazoSim, scenario: ScenarioSim
) -> AsyncIterator[Callable[[Rebinding], contextlib.AbstractAsyncContextManager[Running]]]:
    """Factory: a relay that refuses private targets, its lookups answered by a Rebinding."""

    @contextlib.asynccontextmanager
    async def start(resolver: Rebinding) -> AsyncIterator[Running]:
        sock = bind()
        url = url_of(sock)
        values = {
            **FAST,
            "RELAY_ALLOW_PRIVATE_TARGETS": "0",
            "RELAY_DATABASE": str(tmp_path / "relay.db"),
            "RELAY_PUBLIC_URL": url,
            "RELAY_CALLBACK_GRACE": "30",
            "RELAY_POLL_MIN": "0.05",
            "RELAY_POLL_MAX": "0.2",
            "PIXAZO_API_KEY": pixazo.api_key,
            "PIXAZO_BASE_URL": pixazo.base_url,
            "SCENARIO_API_KEY": scenario.api_key,
            "SCENARIO_API_SECRET": scenario.api_secret,
            "SCENARIO_BASE_URL": scenario.base_url,
        }
        settings = config.load(values, env_file=None)
        application = app.create_app(settings, resolve=resolver)
        async with (
            serve(application, lifespan="on", sock=sock),
            httpx.AsyncClient(base_url=url, timeout=20) as client,
        ):
            yield Running(url, client, settings, application)

    yield start


def localhost(url: str) -> str:
    """The same URL reached through the name `localhost` (the system DNS says loopback)."""
    return url.replace("127.0.0.1", "localhost")


def assert_refused(error: str, path: str) -> None:
    assert "'localhost' refused: resolves to loopback address 127.0.0.1" in error, error
    assert HINT in error
    assert path not in error  # never the path or query of a user's URL


async def test_a_subscription_rebinding_to_loopback_is_refused(
    guarded, serve_subscriber: ServeSubscriber
) -> None:
    resolver = Rebinding()
    subscriber, url = await serve_subscriber()
    async with guarded(resolver) as relay:
        sub = await subscribe(relay, localhost(f"{url}/hooks/T0123/B0456/secretpath"))
        assert resolver.lookups["localhost"] == 1  # the check at creation saw a public address
        await run_job(relay)
        [delivery] = await settled(relay, 1, subscription_id=sub["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 1  # a refusal is final, not retried
    assert_refused(delivery["last_error"], "secretpath")
    assert subscriber.attempts == []
    assert resolver.lookups["localhost"] == 2


async def test_a_per_job_webhook_rebinding_to_loopback_is_refused(
    guarded, serve_subscriber: ServeSubscriber
) -> None:
    resolver = Rebinding()
    subscriber, url = await serve_subscriber()
    webhook = localhost(f"{url}/job-hook?token=secret-token")
    async with guarded(resolver) as relay:
        answer = await relay.submit({**IMAGE_JOB, "webhook": webhook})
        assert answer.status_code == 202, answer.text
        # A check at submit, where there is one, has had the public answer: from now on
        # the name answers loopback, as a rebinding name does to the connection.
        resolver.lookups["localhost"] = max(resolver.lookups["localhost"], 1)
        await relay.wait_status(answer.json()["id"], {"succeeded"})
        [delivery] = await settled(relay, 1, job_id=answer.json()["id"])
    assert delivery["status"] == "failed"
    assert_refused(delivery["last_error"], "secret-token")
    assert subscriber.attempts == []


async def test_a_media_url_rebinding_to_loopback_is_never_fetched(
    guarded, scenario: ScenarioSim
) -> None:
    resolver = Rebinding()
    media = MediaSim()
    async with serve(media.app) as media_url, guarded(resolver) as relay:
        url = localhost(f"{media_url}/media/photo.png?X-Amz-Signature=abc")
        answer = await relay.submit({"model": "scenario/upscale-v3", "input": {"image": url}})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "media_refused"
    assert_refused(error["message"], "X-Amz-Signature")
    assert media.requests == []  # never fetched, so never uploaded as an asset
    assert scenario.request_count["generate"] == 0
    assert resolver.lookups["localhost"] == 2
    assert urlsplit(url).hostname == "localhost"
