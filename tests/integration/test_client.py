"""The client commands against a running relay: submit --wait, jobs, subscriptions."""

from __future__ import annotations

import asyncio

import pytest

from service import cli
from tests.conftest import Running


async def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_submit_wait_follows_the_job_to_its_end(
    relay: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await _run(
        capsys,
        "submit",
        "pixazo/seedvr-image",
        "image_url=https://example.com/a.png",
        "upscale_factor=2",
        "--meta",
        "tenant=acme",
        "--wait",
        "--json",
        "--url",
        relay.url,
    )
    assert code == 0, err
    assert '"status": "succeeded"' in out
    assert '"tenant": "acme"' in out
    assert "job.succeeded" in err
    code, out, _ = await _run(capsys, "jobs", "--url", relay.url, "--status", "succeeded")
    assert code == 0
    assert "pixazo/seedvr-image" in out


async def test_client_errors_are_clear(relay: Running, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await _run(
        capsys, "submit", "pixazo/seedvr-image", "upscale_factor=99", "--url", relay.url
    )
    assert (code, out) == (2, "")  # refused as given: nothing was created
    assert err.startswith("upscale-relay: 422 invalid_request: ")
    code, _, err = await _run(capsys, "submit", "pixazo/seedvr-image", "oops", "--url", relay.url)
    assert code == 2
    assert "key=value" in err
    code, out, _ = await _run(capsys, "subscriptions", "--url", relay.url)
    assert code == 0 and out == "no subscriptions yet\n"
    code, out, _ = await _run(capsys, "deliveries", "--url", relay.url, "--status", "failed")
    assert code == 0
