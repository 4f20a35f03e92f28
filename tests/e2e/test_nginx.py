"""deploy/nginx.conf for real: nginx terminates TLS in front of relay processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.config import Settings
from service.http import jobs as job_routes
from service.http import stream
from service.sim.pixazo import PixazoSim
from service.sim.server import serve
from tests.e2e.harness import TERMINAL, _free_port, service
from tests.e2e.test_takeover import PIXAZO_JOB

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx.conf"
TOKEN = "tok-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _nginx() -> str:
    """The nginx binary; skip by hand, but fail under `make test` or CI (which install it)."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is not None:
        return found
    reason = "nginx is not installed here (Debian: apt-get install nginx)"
    if os.environ.get("CI") or os.environ.get("RELAY_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed here")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(  # noqa: S603 (the openssl found on PATH, fixed arguments)
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def _replace(text: str, pattern: str, new: str, count: int) -> str:
    """re.subn that insists on `count` matches: the test notices when the site changes shape."""
    out, found = re.subn(pattern, new, text, flags=re.M)
    assert found == count, f"{pattern!r} matched {found} times in {SITE.name}, not {count}"
    return out


def render_site(
    folder: Path, https: int, http: int, upstreams: list[str], *, private: bool = False
) -> Path:
    """deploy/nginx.conf with only its ports, certificate, log path and upstreams replaced
    (and, if `private`, its allow and deny lines uncommented as the file says)."""
    cert, key = _certificate(folder)
    text = SITE.read_text()
    if private:
        text = _replace(text, r"^(\s*)# ((?:allow|deny) [^;\n]*;)$", r"\1\2", 3)
    servers = "".join(f"    server {u} max_fails=1 fail_timeout=10s;\n" for u in upstreams)
    text = _replace(text, r"^    server 127\.0\.0\.1:\d+ [^\n]*\n", "", 2)
    text = _replace(
        text, r"^(upstream upscale_relay \{\n(?:    #[^\n]*\n)*)", rf"\g<1>{servers}", 1
    )
    text = _replace(text, r"^    listen \[::\]:\d+[^\n]*\n", "", 2)
    text = _replace(text, r"^    listen 80;", f"    listen 127.0.0.1:{http};", 1)
    text = _replace(text, r"^    listen 443 ", f"    listen 127.0.0.1:{https} ", 1)
    text = _replace(text, r"ssl_certificate +\S+;", f"ssl_certificate {cert};", 1)
    text = _replace(text, r"ssl_certificate_key +\S+;", f"ssl_certificate_key {key};", 1)
    text = _replace(text, r"access_log /var/log/nginx/\S+ ", f"access_log {folder}/access.log ", 1)
    site = folder / "site.conf"
    site.write_text(text)
    main = folder / "nginx.conf"
    temp = " ".join(
        f"{kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    # as root nginx would run its workers as nobody, who cannot enter the test's folder
    user = "user root;\n" if os.geteuid() == 0 else ""
    main.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log info;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n  {temp}\n  uwsgi_temp_path {folder}/uwsgi;\n  scgi_temp_path {folder}/scgi;\n"
        f"  include {site};\n}}\n"
    )
    return main


def _args(main: Path) -> list[str]:
    folder = main.parent
    return [_nginx(), "-p", f"{folder}/", "-c", str(main), "-e", f"{folder}/error.log"]


def client_tls(folder: Path) -> ssl.SSLContext:
    """A client context that trusts only the test's self-signed certificate."""
    return ssl.create_default_context(cafile=str(folder / "cert.pem"))


# -- the configuration as nginx reads it ---------------------------------------------------


def _blocks(text: str) -> dict[str, str]:
    """The `server { }` block listening with ssl, and its SSE location, from `nginx -T`."""
    tls = re.search(r"server \{(?:(?!\nserver \{).)*?listen [^;]* ssl[^;]*;.*?\n\}", text, re.S)
    assert tls, "a server block that listens with ssl"
    sse = re.search(r"location = /v1/events/stream \{(.*?)\}", tls.group(0), re.S)
    assert sse, "a location for the event stream"
    server = tls.group(0).replace(sse.group(0), "")
    return {"server": server, "sse": sse.group(1)}


def _directive(block: str, name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"^\s*{name}\s+([^;]*);", block, re.M)]


def _secs(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert m, value
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m[2]]


def test_nginx_reads_the_site_with_timeouts_for_long_polls_and_the_stream(
    tmp_path: Path,
) -> None:
    main = render_site(tmp_path, _free_port(), _free_port(), ["127.0.0.1:9", "127.0.0.1:10"])
    done = subprocess.run([*_args(main), "-T"], capture_output=True, text=True, check=False)  # noqa: S603
    assert done.returncode == 0, done.stderr
    blocks = _blocks(done.stdout)
    server, sse = blocks["server"], blocks["sse"]
    longest_wait = job_routes.WAIT.maximum
    assert _secs(_directive(server, "proxy_read_timeout")[0]) > longest_wait
    assert _secs(_directive(server, "proxy_send_timeout")[0]) > longest_wait
    # the stream: unbuffered, and its read timeout above the longest keep-alive interval
    assert _directive(sse, "proxy_buffering") == ["off"]
    heartbeat = stream.HEARTBEAT.maximum
    assert _secs((_directive(sse, "proxy_read_timeout") or ["60"])[0]) > heartbeat
    # exactly the relay's own body limit
    (limit,) = _directive(server, "client_max_body_size")
    assert limit == "1m" and 1024 * 1024 == Settings().max_body_bytes
    headers = dict(h.split(None, 1) for h in _directive(server, "proxy_set_header"))
    assert headers["X-Forwarded-For"] == "$remote_addr"  # a client's own XFF is not kept
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["Host"] == "$host"
    upstream = re.search(r"upstream upscale_relay \{(.*?)\}", SITE.read_text(), re.S)
    assert upstream and len(_directive(upstream.group(1), "server")) >= 2


# -- nginx in front of the relays, for real ------------------------------------------------


async def _sse_until(client: httpx.AsyncClient, job_id: str, got: asyncio.Event) -> dict[str, Any]:
    """Read the stream through nginx until the job's job.succeeded frame arrives."""
    params = {"type": "job.succeeded", "heartbeat": 1}
    async with client.stream("GET", "/v1/events/stream", params=params) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        got.set()
        frame: dict[str, str] = {}
        async for line in answer.aiter_lines():
            if line:
                key, _, value = line.partition(": ")
                frame[key] = value
                continue
            if "data" in frame:
                data = json.loads(frame["data"])
                if data["job_id"] == job_id:
                    return {"id": frame["id"], "event": frame["event"], "data": data}
            frame = {}
    raise AssertionError("the stream ended")


@pytest.mark.e2e
async def test_nginx_carries_jobs_callbacks_and_the_event_stream_over_https(
    tmp_path: Path, pg_url: str, pixazo: PixazoSim
) -> None:
    pixazo.lose_callbacks = True  # the test posts the callback itself, trusting the test's CA
    https = _free_port()
    proxy = f"https://127.0.0.1:{https}"
    env = {
        "RELAY_DATABASE": pg_url,
        "RELAY_API_TOKENS": TOKEN,
        "RELAY_PUBLIC_URL": proxy,
        "RELAY_CALLBACK_GRACE": "30",  # the job ends by the callback, not by a poll
        "PIXAZO_API_KEY": pixazo.api_key,
        "PIXAZO_BASE_URL": pixazo.base_url,
    }
    async with (
        service(tmp_path / "a", **env) as one,
        service(tmp_path / "b", **env) as two,
    ):
        await asyncio.gather(one.start(), two.start())
        upstreams = [one.url.removeprefix("http://"), two.url.removeprefix("http://")]
        folder = tmp_path / "nginx"
        folder.mkdir()
        async with contextlib.AsyncExitStack() as stack:
            main = render_site(folder, https, _free_port(), upstreams)
            url, plain = await stack.enter_async_context(_run(main, https))
            assert url == proxy
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, headers=AUTH, timeout=20, verify=client_tls(folder))
            )
            redirected = await client.get(f"{plain}/healthz")
            assert redirected.status_code == 301
            assert redirected.headers["location"] == "https://127.0.0.1/healthz"
            assert (await client.get("/healthz")).status_code == 200
            for private in ("/metrics", "/readyz"):
                assert (await client.get(private)).status_code == 404

            answer = await client.post("/v1/jobs", json=PIXAZO_JOB)
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["id"]
            listening = asyncio.Event()
            reader = asyncio.create_task(_sse_until(client, job_id, listening))
            await asyncio.wait_for(listening.wait(), 10)

            [sim_job] = pixazo.jobs.values()
            hook = sim_job.webhook_url
            assert hook is not None and hook.startswith(f"{proxy}/hooks/pixazo/")
            deadline = time.monotonic() + 10
            while sim_job.status != "COMPLETED":
                assert time.monotonic() < deadline, sim_job.status
                await asyncio.sleep(0.02)
            body = pixazo.status_body(sim_job.request_id)
            callback = await client.post(hook, json=body, headers={"Authorization": ""})
            assert callback.status_code == 200, callback.text

            frame = await asyncio.wait_for(reader, 15)
            assert frame["event"] == "job.succeeded"
            assert int(frame["id"]) == frame["data"]["id"]
            events = (await client.get(f"/v1/jobs/{job_id}/events")).json()["data"]
            [done] = [e for e in events if e["type"] == "job.succeeded"]
            assert done["source"] == "callback"
            status = (await client.get(f"/v1/jobs/{job_id}")).json()["status"]
            assert status == "succeeded" and status in TERMINAL

            # a long poll passes through (briefly: the timeouts are checked from `nginx -T`)
            cursor = (await client.get("/v1/events", params={"after": 0})).json()["next_cursor"]
            started = time.monotonic()
            page = await client.get("/v1/events", params={"after": cursor, "wait": 1})
            assert page.status_code == 200 and page.json()["data"] == []
            assert time.monotonic() - started >= 0.9

            # exactly 1 MiB reaches the relay; one byte more gets the relay's envelope from nginx
            limit = Settings().max_body_bytes
            padded = json.dumps({"model": "x", "pad": ""}).encode()
            fits = padded.replace(b'""', b'"' + b"a" * (limit - len(padded)) + b'"')
            assert len(fits) == limit
            refused = await client.post("/v1/jobs", content=fits)
            assert refused.status_code == 422, refused.text
            for path in ("/v1/jobs", hook):
                over = await client.post(path, content=fits + b" ")
                assert over.status_code == 413
                assert over.json()["error"]["code"] == "payload_too_large"

        access = (folder / "access.log").read_text()
        token = hook.rsplit("/", 1)[1]
        assert '"POST /hooks/pixazo/-" 200' in access
        assert token not in access


@contextlib.asynccontextmanager
async def _run(main: Path, https: int) -> AsyncIterator[tuple[str, str]]:
    """nginx on an already rendered configuration (its ports chosen by the caller)."""
    proc = await asyncio.create_subprocess_exec(
        *_args(main), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    folder = main.parent
    http = re.search(r"listen 127\.0\.0\.1:(\d+);", (folder / "site.conf").read_text())
    assert http
    url = f"https://127.0.0.1:{https}"
    try:
        async with httpx.AsyncClient(verify=client_tls(folder)) as client:
            deadline = time.monotonic() + 15
            while True:
                assert proc.returncode is None, (folder / "error.log").read_text()[-2000:]
                with contextlib.suppress(httpx.TransportError):
                    await client.get(f"{url}/nginx-started")
                    break
                assert time.monotonic() < deadline, "nginx did not answer"
                await asyncio.sleep(0.05)
        yield url, f"http://127.0.0.1:{http.group(1)}"
    finally:
        if proc.returncode is None:
            proc.terminate()  # the master stops its workers before it exits
            await asyncio.wait_for(proc.wait(), 15)


async def test_nginx_passes_the_proxy_headers_and_drops_a_forged_address(
    tmp_path: Path,
) -> None:
    seen: list[dict[str, str]] = []

    async def echo(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])
    async with serve(app) as upstream:
        https = _free_port()
        main = render_site(tmp_path, https, _free_port(), [upstream.removeprefix("http://")] * 2)
        async with (
            _run(main, https) as (url, _),
            httpx.AsyncClient(base_url=url, verify=client_tls(tmp_path)) as client,
        ):
            answer = await client.get("/v1/jobs", headers={"X-Forwarded-For": "203.0.113.9"})
            assert answer.status_code == 200
    headers = seen[-1]  # the first request was the start-up probe
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "127.0.0.1"
    assert headers["host"] == "127.0.0.1"


async def test_the_commented_allow_lines_keep_all_but_the_callbacks_private(
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    async def echo(request: Request) -> JSONResponse:
        seen.append(request.url.path)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])
    async with serve(app) as upstream:
        https = _free_port()
        upstreams = [upstream.removeprefix("http://")] * 2
        main = render_site(tmp_path, https, _free_port(), upstreams, private=True)
        async with (
            _run(main, https) as (url, _),
            httpx.AsyncClient(base_url=url, verify=client_tls(tmp_path)) as client,
        ):
            # this client is 127.0.0.1, outside the allowed 10.0.0.0/8
            for path in ("/v1/jobs", "/v1/events/stream", "/ui", "/healthz", "/openapi.json"):
                assert (await client.get(path)).status_code == 403, path
            hook = await client.post("/hooks/pixazo/a-token", json={"status": "COMPLETED"})
            assert hook.status_code == 200
    assert seen == ["/hooks/pixazo/a-token"]
