"""deploy/Dockerfile without Docker: its ENV, CMD and HEALTHCHECK run as plain processes."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import httpx
import pytest

from service.config import Settings
from tests.e2e.harness import EXE, _free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PORT = "8000"


@dataclass
class Image:
    """The instructions of the Dockerfile that say how the container runs."""

    env: dict[str, str] = field(default_factory=dict)
    user: str = "root"
    workdir: str = "/"
    volumes: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    health_options: dict[str, str] = field(default_factory=dict)
    stopsignal: str = "SIGTERM"
    run: list[str] = field(default_factory=list)


def _exec_form(text: str) -> list[str]:
    """An instruction's JSON (exec) form: the shell form would hide signals from the relay."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def parse(path: Path = DOCKERFILE) -> Image:
    """The runtime instructions of a Dockerfile (continuation lines joined, comments dropped)."""
    image = Image()
    logical = re.sub(
        r"\\\n",
        " ",
        "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        ),
    )
    for line in logical.splitlines():
        if not line.strip():
            continue
        word, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        match word.upper():
            case "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    image.env[key] = value
            case "USER":
                image.user = rest
            case "WORKDIR":
                image.workdir = str(PurePosixPath(image.workdir) / rest)
            case "VOLUME":
                image.volumes += _exec_form(rest) if rest.startswith("[") else rest.split()
            case "ENTRYPOINT":
                image.entrypoint = _exec_form(rest)
            case "CMD":
                image.cmd = _exec_form(rest)
            case "STOPSIGNAL":
                image.stopsignal = rest
            case "RUN":
                image.run.append(rest)
            case "HEALTHCHECK":
                options, _, command = rest.partition("CMD ")
                image.health_options = dict(
                    o.removeprefix("--").split("=", 1) for o in options.split()
                )
                image.healthcheck = _exec_form(command)
    return image


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", value)
    assert m, value
    return float(m[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m[2]]


def test_the_image_runs_unprivileged_with_its_database_on_a_volume() -> None:
    image = parse()
    assert image.user not in ("root", "0", "")
    database = PurePosixPath(image.env["RELAY_DATABASE"])
    assert str(database.parent) in image.volumes, "the database folder is a volume"
    # the folder exists in the image, owned by the user (a new volume copies it), 0700
    build = " ".join(image.run)
    assert f"mkdir -p {database.parent}" in build
    assert f"chown {image.user} {database.parent}" in build
    assert f"chmod 0700 {database.parent}" in build
    assert signal.Signals[image.stopsignal] is signal.SIGTERM


def test_the_healthcheck_uses_python_within_its_timeout() -> None:
    image = parse()
    assert image.healthcheck[:2] == ["python", "-c"], "no curl in the slim image"
    assert "/healthz" in image.healthcheck[2]
    m = re.search(r"timeout=(\d+(?:\.\d+)?)", image.healthcheck[2])
    assert m, "the request has a timeout of its own"
    assert float(m[1]) < _seconds(image.health_options["timeout"])
    # Docker checks only after start-period: the relay starts (and migrates) within it
    assert _seconds(image.health_options["start-period"]) >= 10


def _command(image: Image, port: int) -> tuple[list[str], list[str]]:
    """The container's command and health check, run here: this virtualenv's executables,
    loopback instead of 0.0.0.0 (tests bind 127.0.0.1 only) and a free port for 8000."""
    command = image.entrypoint + image.cmd
    assert command[0] == "upscale-relay"
    assert command[command.index("--port") + 1] == PORT
    assert f"127.0.0.1:{PORT}/healthz" in image.healthcheck[2], "checks the port it serves"
    command = [EXE, *command[1:]]
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    check = [sys.executable, *image.healthcheck[1:]]
    check[-1] = check[-1].replace(f"127.0.0.1:{PORT}", f"127.0.0.1:{port}")
    return command, check


def _environment(image: Image, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The image's ENV, its volume mapped into `tmp_path` (and no RELAY_ setting from here)."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "PIXAZO_", "SCENARIO_"))
    }
    env = {**base, **image.env, **extra}
    [volume] = image.volumes
    env["RELAY_DATABASE"] = env["RELAY_DATABASE"].replace(volume, str(tmp_path / "data"), 1)
    return env


def _health(check: list[str], image: Image, env: dict[str, str]) -> int:
    limit = _seconds(image.health_options["timeout"])
    done = subprocess.run(check, env=env, capture_output=True, timeout=limit + 5, check=False)  # noqa: S603
    return done.returncode


@pytest.mark.e2e
def test_the_entry_command_serves_and_the_healthcheck_follows_it(tmp_path: Path) -> None:
    image = parse()
    port = _free_port()
    command, check = _command(image, port)
    env = _environment(image, tmp_path, RELAY_API_TOKENS="tok-test")
    workdir = tmp_path / "app"
    workdir.mkdir()
    assert _health(check, image, env) == 1, "nothing serves yet"
    log = tmp_path / "relay.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=out, stderr=out)  # noqa: S603
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the image's command did not start"
            time.sleep(0.05)
        assert _health(check, image, env) == 0
        assert (tmp_path / "data" / "relay.db").exists(), "the database is on the volume"
        proc.send_signal(signal.Signals[image.stopsignal])
        assert proc.wait(Settings().shutdown_grace + 5) == 0
        assert _health(check, image, env) == 1, "down: unhealthy"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_without_api_tokens_the_image_refuses_to_start(tmp_path: Path) -> None:
    """The image binds 0.0.0.0: without RELAY_API_TOKENS it exits before binding anything."""
    image = parse()
    command = [EXE, *(image.entrypoint + image.cmd)[1:]]
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    env = _environment(image, tmp_path)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    assert done.returncode == 2
    assert "RELAY_API_TOKENS" in done.stderr
    assert not (tmp_path / "data").exists()
