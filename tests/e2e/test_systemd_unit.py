"""deploy/upscale-relay.service: hardened, its stop timeout above the drain, and its
ExecStart started for real as a plain process (systemd itself does not run in this sandbox)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "upscale-relay.service"
EXE = str(Path(sys.executable).with_name("upscale-relay"))
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "DynamicUser": "yes",
    "UMask": "0077",
    "CapabilityBoundingSet": "",
}


def _settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_the_unit_is_hardened_and_waits_for_the_drain() -> None:
    unit = _settings()
    for key, value in HARDENING.items():
        assert unit.get(key) == [value], key
    assert _seconds(unit["TimeoutStopSec"][0]) >= Settings().shutdown_grace + 5
    assert unit["KillSignal"] == ["SIGTERM"]
    # the database lives in the state folder systemd creates, private to the service
    assert unit["StateDirectory"] == ["upscale-relay"]
    assert "RELAY_DATABASE=/var/lib/upscale-relay/relay.db" in unit["Environment"]
    assert "--host 127.0.0.1" in unit["ExecStart"][0]


def _local_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script."""
    local = tmp_path / UNIT.name
    local.write_text(UNIT.read_text().replace("/opt/upscale-relay/bin/upscale-relay", EXE))
    return local


def test_systemd_accepts_the_unit_and_rates_its_exposure_low(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the unit is checked as text only")
    local = _local_unit(tmp_path)
    verified = subprocess.run(  # noqa: S603
        [analyze, "verify", str(local)], capture_output=True, text=True, check=False, timeout=60
    )
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    rated = subprocess.run(  # noqa: S603
        [analyze, "security", "--offline=yes", str(local)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if "--offline" in rated.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit offline")
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", rated.stdout)
    assert score, rated.stdout[-500:]
    assert float(score[1]) <= 2.5, rated.stdout[-2000:]  # systemd calls up to ~4.9 "OK"


def test_exec_start_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    unit = _settings()
    argv = shlex.split(unit["ExecStart"][0])
    assert argv[0] == "/opt/upscale-relay/bin/upscale-relay"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [EXE, *argv[1:]]
    argv[argv.index("--port") + 1] = str(port)
    state = tmp_path / "var-lib-upscale-relay"
    state.mkdir(mode=0o700)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "RELAY_DATABASE": str(state / "relay.db"),
        "RELAY_PUBLIC_URL": "https://relay.example.com",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: S603
            argv, cwd=state, env=env, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no /healthz answer within 15 s"
            time.sleep(0.1)
        assert (state / "relay.db").exists()
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=_seconds(unit["TimeoutStopSec"][0]))
        assert code == 0
        assert time.monotonic() - stopped < Settings().shutdown_grace + 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
