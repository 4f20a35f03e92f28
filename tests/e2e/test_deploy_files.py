"""deploy/: compose.yaml, the Caddyfile and the image, checked as files and run where possible."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import shutil
import socket
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.config import Settings
from service.sim.pixazo import PixazoSim
from tests.e2e.harness import TERMINAL, service
from tests.e2e.test_takeover import PIXAZO_JOB

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RELAYS = ("relay-1", "relay-2")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def relay_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the relay: those given a RELAY_DATABASE."""
    return {
        name: svc
        for name, svc in doc["services"].items()
        if "RELAY_DATABASE" in (svc.get("environment") or {})
    }


def seconds(duration: str) -> float:
    """A compose duration (15s, 1m30s, 500ms) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_two_relay_replicas_share_secret_tokens_and_public_url() -> None:
    relays = relay_services(compose())
    assert sorted(relays) == list(RELAYS)
    env = [relays[name]["environment"] for name in RELAYS]
    for key in ("RELAY_SECRET", "RELAY_API_TOKENS", "RELAY_PUBLIC_URL", "RELAY_DATABASE"):
        assert env[0][key] == env[1][key], key
    assert env[0]["RELAY_SECRET"].startswith("${RELAY_SECRET")
    # binding 0.0.0.0 without tokens is refused: compose must not start without them
    assert env[0]["RELAY_API_TOKENS"].startswith("${RELAY_API_TOKENS:?")
    assert env[0]["RELAY_PUBLIC_URL"].startswith("${RELAY_PUBLIC_URL:?")


def test_database_url_points_at_the_postgres_service() -> None:
    doc = compose()
    url = relay_services(doc)[RELAYS[0]]["environment"]["RELAY_DATABASE"]
    m = re.fullmatch(r"postgresql://(\w+):(\$\{POSTGRES_PASSWORD[^}]*\})@(\w+):5432/(\w+)", url)
    assert m, url
    user, _, host, database = m.groups()
    db = doc["services"][host]
    assert db["image"] == "postgres:16"
    assert db["environment"]["POSTGRES_USER"] == user
    assert db["environment"]["POSTGRES_DB"] == database
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    volume = db["volumes"][0].split(":")[0]
    assert volume in doc["volumes"], "the database lives on a named volume"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    for name in RELAYS:
        svc = doc["services"][name]
        assert svc["depends_on"][host]["condition"] == "service_healthy"


def test_relays_have_health_checks_and_outlast_their_drain() -> None:
    for name, svc in relay_services(compose()).items():
        assert "/healthz" in " ".join(svc["healthcheck"]["test"]), name
        raw = svc["environment"].get("RELAY_SHUTDOWN_GRACE")
        grace = float(raw) if raw else Settings().shutdown_grace
        assert seconds(svc["stop_grace_period"]) >= grace + 5, name


def test_image_is_built_from_the_repository_and_runs_unprivileged() -> None:
    build = relay_services(compose())[RELAYS[0]]["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    dockerfile = (ROOT / build["dockerfile"]).read_text()
    assert "pip install ." in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert '"serve", "--host", "0.0.0.0", "--port", "8000"' in dockerfile


def test_proxy_balances_over_both_replicas() -> None:
    doc = compose()
    proxy = doc["services"]["proxy"]
    assert any(v.startswith("./Caddyfile:") for v in proxy["volumes"])
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    m = re.search(r"reverse_proxy \{\$RELAY_UPSTREAMS:([^}]*)\}", caddyfile)
    assert m, "reverse_proxy with RELAY_UPSTREAMS defaulting to the replicas"
    assert m.group(1).split() == [f"{name}:8000" for name in RELAYS]
    assert "health_uri /healthz" in caddyfile
    timeout = re.search(r"response_header_timeout (\S+)", caddyfile)
    assert timeout and seconds(timeout.group(1)) > 60, "GET /v1/events?wait= may take 60 s"
    assert not re.search(r"^\s*log\b", caddyfile, re.M), "an access log keeps callback tokens"


def test_every_variable_of_compose_is_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*(\w+)=", example, re.M))
    assert used - documented == set()


def test_every_migration_is_packaged() -> None:
    """`pip install .` (the image's install) must carry both engines' migrations."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["service"]
    sql = [p.relative_to(ROOT / "service").as_posix() for p in (ROOT / "service").rglob("*.sql")]
    assert {p.split("/")[1] for p in sql} >= {"sqlite", "postgres"}
    missing = [p for p in sql if not any(fnmatch.fnmatch(p, g) for g in globs)]
    assert missing == []


def _env_file(tmp_path: Path) -> Path:
    text = (DEPLOY / ".env.example").read_text()
    filled = {"POSTGRES_PASSWORD": "pw-test", "RELAY_API_TOKENS": "tok-test"}
    for key, value in filled.items():
        text = re.sub(rf"^{key}=$", f"{key}={value}", text, flags=re.M)
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def _compose_cli() -> list[str] | None:
    """`docker compose` (v2) when it is installed; it validates without a daemon."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)  # noqa: S603
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("docker compose (v2) is not installed here: the file is checked as YAML only")
    env_file = str(_env_file(tmp_path))
    done = subprocess.run(  # noqa: S603 (the docker found on PATH, fixed arguments)
        [
            *cli,
            "-f",
            str(DEPLOY / "compose.yaml"),
            "--env-file",
            env_file,
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    url = resolved["services"]["relay-2"]["environment"]["RELAY_DATABASE"]
    assert url == "postgresql://relay:pw-test@db:5432/relay"
    # without the required secrets compose refuses to start
    bare = tmp_path / "empty.env"
    bare.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD",)}
    refused = subprocess.run(  # noqa: S603
        [*cli, "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(bare), "config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD" in refused.stderr or "RELAY_" in refused.stderr


def _missing_caddy() -> None:
    """Skip by hand; under `make test` or CI (which install caddy) fail: never skip there."""
    reason = "caddy is not installed here (Debian: apt-get install caddy)"
    if os.environ.get("CI") or os.environ.get("RELAY_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def test_caddy_accepts_the_caddyfile(tmp_path: Path) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        _missing_caddy()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run(  # noqa: S603
        [caddy, "adapt", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert '"dial":"relay-1:8000"' in done.stdout.replace(" ", "")


# -- the Caddyfile for real: Caddy in front of two relay processes on one PostgreSQL ---------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def caddy_in_front(tmp_path: Path, port: int, upstreams: list[str]) -> AsyncIterator[str]:
    """deploy/Caddyfile, imported after global options that keep it on 127.0.0.1."""
    caddy = shutil.which("caddy")
    if caddy is None:
        _missing_caddy()
    config = tmp_path / "Caddyfile"
    config.write_text(
        f"{{\n\tadmin off\n\tdefault_bind 127.0.0.1\n}}\nimport {DEPLOY / 'Caddyfile'}\n"
    )
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
        "RELAY_SITE_ADDRESS": f"http://127.0.0.1:{port}",
        "RELAY_UPSTREAMS": " ".join(upstreams),
    }
    log = (tmp_path / "caddy.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        caddy,
        "run",
        "--adapter",
        "caddyfile",
        "--config",
        str(config),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 15
            while True:
                assert proc.returncode is None, (tmp_path / "caddy.log").read_text()[-2000:]
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{url}/healthz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "caddy did not answer"
                await asyncio.sleep(0.05)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        log.close()


@pytest.mark.e2e
async def test_caddy_spreads_requests_and_callbacks_over_two_processes(
    tmp_path: Path, pg_url: str, pixazo: PixazoSim
) -> None:
    port = _free_port()
    proxy = f"http://127.0.0.1:{port}"
    env = {
        "RELAY_DATABASE": pg_url,
        "RELAY_API_TOKENS": "tok-test",
        "RELAY_PUBLIC_URL": proxy,  # Pixazo calls back through the proxy
        "RELAY_CALLBACK_GRACE": "30",  # so the jobs end by callback, not by poll
        "PIXAZO_API_KEY": pixazo.api_key,
        "PIXAZO_BASE_URL": pixazo.base_url,
    }
    auth = {"Authorization": "Bearer tok-test"}
    async with (
        service(tmp_path / "a", **env) as one,
        service(tmp_path / "b", **env) as two,
    ):
        await asyncio.gather(one.start(), two.start())
        upstreams = [one.url.removeprefix("http://"), two.url.removeprefix("http://")]
        async with (
            caddy_in_front(tmp_path, port, upstreams),
            httpx.AsyncClient(base_url=proxy, headers=auth, timeout=20) as client,
        ):
            for private in ("/metrics", "/readyz"):
                assert (await client.get(private)).status_code == 404
                assert (await client.get(one.url + private)).status_code == 200
            jobs = []
            for _ in range(4):  # round robin: two submissions to each process
                answer = await client.post("/v1/jobs", json=PIXAZO_JOB)
                assert answer.status_code == 202, answer.text
                jobs.append(answer.json()["id"])
            await _all_succeed(client, jobs)
            assert len(pixazo.callbacks_sent) >= 8
            assert all(c.http_status == 200 for c in pixazo.callbacks_sent)
            code, _ = await one.terminate()
            assert code == 0
            # the stopped process refuses connections: the proxy sends everything to the other
            for _ in range(6):
                assert (await client.get("/healthz")).status_code == 200
            answer = await client.post("/v1/jobs", json=PIXAZO_JOB)
            assert answer.status_code == 202, answer.text
            await _all_succeed(client, [answer.json()["id"]])


async def _all_succeed(client: httpx.AsyncClient, jobs: list[str]) -> None:
    deadline = time.monotonic() + 20
    for job_id in jobs:
        while (status := (await client.get(f"/v1/jobs/{job_id}")).json()["status"]) != "succeeded":
            assert status not in TERMINAL, status
            assert time.monotonic() < deadline, f"{job_id} still {status}"
            await asyncio.sleep(0.05)
