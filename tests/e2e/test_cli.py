"""The console script as a user runs it: demo, serve, and the token rule."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
EXE = str(Path(sys.executable).with_name("upscale-relay"))


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "PIXAZO_"))}
    env.update({"RELAY_DATABASE": str(tmp_path / "relay.db"), **extra})
    return env


def test_demo_runs_one_job_per_model_to_success_in_under_30_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603
        [EXE, "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 30
    out = done.stdout
    for model in (
        "pixazo/seedvr-image",
        "pixazo/seedvr-video",
        "scenario/seedvr2-video",
        "scenario/magnific-video-creative",
        "scenario/upscale-v3",
    ):
        assert f"{model} status=succeeded" in out, out
    assert out.count("signature verified") == 5
    assert "5 jobs finished, 5 signed notifications verified" in out


def test_help_lists_the_commands() -> None:
    done = subprocess.run([EXE, "--help"], capture_output=True, text=True, timeout=30)  # noqa: S603
    assert done.returncode == 0
    assert "serve" in done.stdout and "demo" in done.stdout


def test_serve_refuses_a_public_bind_without_tokens(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603
        [EXE, "serve", "--host", "0.0.0.0", "--port", "0"],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "RELAY_API_TOKENS" in done.stderr


def test_serve_on_loopback_warns_and_answers(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(  # noqa: S603
        [EXE, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.05)
        assert answer.json() == {"status": "ok"}
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
        assert models.status_code == 200
        # the secret was generated and kept in the database
        assert (tmp_path / "relay.db").exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "RELAY_API_TOKENS is not set" in out


def _unusable_database(tmp_path: Path, case: str) -> Path:
    """A database path that cannot be opened or written, even by root."""
    if case == "inside_a_file":
        (tmp_path / "plain").write_text("x")
        return tmp_path / "plain" / "relay.db"
    if case == "a_directory":
        (tmp_path / "relay.db").mkdir()
        return tmp_path / "relay.db"
    if case == "not_a_database":
        (tmp_path / "relay.db").write_bytes(b"no SQLite here " * 500)
        return tmp_path / "relay.db"
    path = tmp_path / "relay.db"  # immutable: chattr +i refuses writes to root too
    sqlite3.connect(path).close()
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)  # noqa: S603, S607
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {done.stderr!r}")
    return path


REASONS = {
    "inside_a_file": "Not a directory",
    "a_directory": "unable to open database file",
    "not_a_database": "file is not a database",
    "immutable": "attempt to write a readonly database",
}


@pytest.mark.parametrize("case", list(REASONS))
def test_serve_exits_at_once_naming_a_database_it_cannot_use(tmp_path: Path, case: str) -> None:
    path = _unusable_database(tmp_path, case)
    started = time.monotonic()
    try:
        done = subprocess.run(  # noqa: S603
            [EXE, "serve", "--port", "0"],
            capture_output=True,
            text=True,
            timeout=5,
            env=_env(tmp_path, RELAY_DATABASE=str(path)),
            cwd=tmp_path,
        )
    finally:
        if case == "immutable":
            subprocess.run(["chattr", "-i", str(path)], check=True)  # noqa: S603, S607
    assert time.monotonic() - started < 5
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines == [f"upscale-relay: cannot use the database {path}: {REASONS[case]}"], done.stderr


def test_serve_names_an_unreachable_postgresql_database_without_its_password(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    url = f"postgresql://relay:hunter2-secret@127.0.0.1:{port}/relay"
    done = subprocess.run(  # noqa: S603
        [EXE, "serve", "--port", "0", "--log-level", "warning"],
        capture_output=True,
        text=True,
        env=_env(tmp_path, RELAY_DATABASE=url),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "hunter2-secret" not in done.stderr + done.stdout
    assert f"postgresql://relay:***@127.0.0.1:{port}/relay" in done.stderr


def test_serve_creates_a_private_database(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "state" / "relay.db"
    proc = subprocess.Popen(  # noqa: S603
        [EXE, "serve", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(tmp_path, RELAY_DATABASE=str(path)),
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.05)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_serve_on_a_full_disk_answers_503_and_recovers_without_loss(tmp_path: Path) -> None:
    """A file-size limit on the real process: SQLite's writes fail as on a full disk."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limit = 1024 * 1024  # the -wal file cannot grow past this
    proc = subprocess.Popen(  # noqa: S603
        ["prlimit", f"--fsize={limit}:", EXE, "serve", "--port", str(port)],  # noqa: S607
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path, RELAY_ALLOW_PRIVATE_TARGETS="1"),
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.05)
        created: list[str] = []
        with httpx.Client(base_url=url, timeout=10) as client:
            for n in range(5000):
                body = {"url": f"http://127.0.0.1:9/{n}", "description": "d" * 500}
                answer = client.post("/v1/subscriptions", json=body)
                if answer.status_code != 201:
                    break
                created.append(answer.json()["id"])
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"]["code"] == "storage_unavailable"
            assert client.get("/readyz").status_code == 503
            assert len(created) > 10, "the disk filled before anything was stored"
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            assert client.get("/readyz").status_code == 200
            assert client.post("/v1/subscriptions", json={"url": f"{url}/x"}).status_code == 201
            listed: set[str] = set()
            cursor = None
            while True:
                params = {"limit": 500} | ({"cursor": cursor} if cursor else {})
                page = client.get("/v1/subscriptions", params=params).json()
                listed |= {s["id"] for s in page["data"]}
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            assert set(created) <= listed  # every acknowledged subscription is there
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "refuses writes" in err
