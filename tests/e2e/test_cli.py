"""The console script as a user runs it: demo, serve, and the token rule."""

from __future__ import annotations

import json
import os
import pty
import re
import resource
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.simrelay import (
    SimRelay,
    clean_env,
    free_port,
    sim_and_serve,
    stop,
    wait_for_banner,
    wait_ready,
)

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
    # the Slack messages are shown as Slack shows them: entities decoded
    slack = out.split("Slack channel received:", 1)[1]
    assert "Expires=" in slack and "&Key-Pair-Id=" in slack and "&amp;" not in slack


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


# -- the client commands against real `sim` and `serve` processes ----------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimRelay]:
    """sim, and a serve with the environment it printed (a token required)."""
    with sim_and_serve(tmp_path_factory.mktemp("live")) as running:
        yield running


def _api(live: SimRelay) -> httpx.Client:
    token = live.env["RELAY_TOKEN"]
    return httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_sim_prints_the_environment_for_serve(live: SimRelay) -> None:
    env = live.env
    assert env["PIXAZO_BASE_URL"] == f"{live.sim_url}/pixazo"
    assert env["SCENARIO_BASE_URL"] == f"{live.sim_url}/scenario"
    assert env["RELAY_ALLOW_PRIVATE_TARGETS"] == "1"
    assert env["RELAY_API_TOKENS"] == env["RELAY_TOKEN"] == env["TOKEN"]
    assert env["RELAY_URL"] == env["RELAY_PUBLIC_URL"] == live.url
    # the media the banner offers are really served
    assert httpx.get(env["IMAGE_URL"], timeout=5).headers["content-type"] == "image/png"
    assert httpx.get(env["VIDEO_URL"], timeout=5).headers["content-type"] == "video/mp4"
    with _api(live) as api:
        # the relay answers with the token sim printed, not without it
        assert api.get("/v1/jobs").status_code == 200
        assert httpx.get(f"{live.url}/v1/jobs", timeout=5).status_code == 401


def test_sim_refuses_a_host_other_than_loopback() -> None:
    done = subprocess.run(  # noqa: S603
        [EXE, "sim", "--host", "0.0.0.0"],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert done.returncode == 2
    assert "loopback only" in done.stderr


def test_sim_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "sim.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: S603
            [EXE, "sim", "--port", str(free_port())], stdout=sink, stderr=sink, env=clean_env()
        )
    try:
        wait_for_banner(out, proc)
    finally:
        code = stop(proc, signal.SIGINT)
    assert code == 0, out.read_text()
    assert "Traceback" not in out.read_text()


def test_submit_wait_exits_0_when_the_job_succeeds(live: SimRelay) -> None:
    done = live.run(
        "submit", "pixazo/seedvr-image", "image_url=https://example.com/a.jpg", "--wait"
    )
    assert done.returncode == 0, done.stderr
    job_id, status = done.stdout.split()[:2]
    assert job_id.startswith("job_") and status == "succeeded"
    assert f"{live.sim_url}/pixazo/outputs/" in done.stdout  # the output URL, whole
    # not a terminal: plain event lines instead of a bar
    lines = done.stderr.splitlines()
    assert any(" job.queued [api] " in line for line in lines), done.stderr
    assert any(" job.succeeded [callback] succeeded 100%" in line for line in lines)
    assert "━" not in done.stderr


def test_submit_wait_exits_1_when_the_job_fails(live: SimRelay) -> None:
    done = live.run("submit", "scenario/upscale-v3", "image=asset_sim_fail", "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed" in done.stdout.splitlines()[0]
    assert "provider_failure" in done.stdout
    assert "job.failed [poll]" in done.stderr


def test_submit_wait_exits_3_when_the_job_is_still_running(live: SimRelay) -> None:
    started = time.monotonic()
    done = live.run(
        "submit", "scenario/upscale-v3", "image=asset_sim_photo", "--wait", "--timeout", "0.5"
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert time.monotonic() - started < 15
    assert "still" in done.stderr and "upscale-relay jobs show job_" in done.stderr


def test_submit_exits_2_for_bad_usage_and_input_the_relay_refuses(live: SimRelay) -> None:
    malformed = live.run("submit", "pixazo/seedvr-image", "image_url")
    assert malformed.returncode == 2
    assert "expected key=value" in malformed.stderr
    refused = live.run("submit", "pixazo/seedvr-image", "image_url=3", "colour=red")
    assert refused.returncode == 2
    assert "422 invalid_request" in refused.stderr
    assert "input.colour: unknown parameter" in refused.stderr
    assert "Traceback" not in refused.stderr
    unknown = live.run("jobs", "--no-such-flag")
    assert unknown.returncode == 2


def test_url_without_a_scheme_is_a_usage_error(live: SimRelay) -> None:
    host = live.url.removeprefix("http://")
    done = live.run("jobs", "--url", host)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"upscale-relay: --url must be an http:// or https:// URL "
        f"(got {host!r}; did you mean http://{host}?)"
    )
    from_env = live.run("jobs", RELAY_URL=host)
    assert from_env.returncode == 2 and "RELAY_URL must be" in from_env.stderr


def test_cannot_reach_says_how_to_start_the_service() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(  # noqa: S603
        [EXE, "jobs", "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert done.returncode == 4
    assert f"cannot reach the relay at {url}" in done.stderr
    assert "`upscale-relay serve`" in done.stderr and "`upscale-relay sim`" in done.stderr
    assert "Traceback" not in done.stderr


def test_api_errors_show_the_envelope_not_a_traceback(live: SimRelay) -> None:
    missing = live.run("jobs", "show", "job_nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "upscale-relay: 404 job_not_found: no job 'job_nope'"
    no_token = live.run("jobs", RELAY_TOKEN="wrong")
    assert no_token.returncode == 1
    assert "401 unauthorized" in no_token.stderr and "RELAY_TOKEN" in no_token.stderr
    assert "wrong" not in no_token.stderr


def test_jobs_show_has_the_timeline_and_the_outputs(live: SimRelay) -> None:
    submitted = live.run(
        "submit", "scenario/upscale-v3", "image=asset_sim_photo", "--wait", "--json"
    )
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    done = live.run("jobs", "show", job["id"])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[0].split()[:3] == [job["id"], "scenario/upscale-v3", "succeeded"]
    for event in ("job.created", "job.queued", "job.processing", "job.succeeded"):
        assert event in out
    assert f"  image/png  {job['outputs'][0]['url']}" in out.splitlines()
    as_json = json.loads(live.run("jobs", "show", job["id"], "--json").stdout)
    assert as_json["job"]["id"] == job["id"]
    assert [e["type"] for e in as_json["events"]][-1] == "job.succeeded"


def test_empty_lists_say_so(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(RELAY_DATABASE=str(tmp_path / "relay.db"))
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603
            [EXE, "serve", "--port", str(port), "--log-level", "warning"],
            stdout=log,
            stderr=log,
            env=env,
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        for command, line in (
            (["jobs"], "no jobs yet"),
            (["jobs", "--status", "failed"], "no jobs match"),
            (["subscriptions"], "no subscriptions yet"),
            (["deliveries"], "no deliveries yet"),
        ):
            done = subprocess.run(  # noqa: S603
                [EXE, *command, "--url", url],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            assert (done.returncode, done.stdout) == (0, f"{line}\n"), done.stderr
    finally:
        stop(proc)


def test_subscriptions_add_pause_resume_test_remove(live: SimRelay) -> None:
    added = live.run(
        "subscriptions", "add", live.env["HOOK_URL"], "--events", "job.succeeded,job.failed",
        "--model", "scenario/upscale-v3",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    secret = re.search(r"^secret (whsec_\S+)$", added.stdout, re.M)
    assert secret, added.stdout
    sub_id = re.search(r"sub_\w+", added.stdout)
    assert sub_id
    sid = sub_id.group(0)
    with _api(live) as api:
        created = api.get(f"/v1/subscriptions/{sid}").json()
        assert created["events"] == ["job.succeeded", "job.failed"]
        assert created["filter"] == {"models": ["scenario/upscale-v3"]}
        assert api.get(f"/v1/subscriptions/{sid}/secret").json()["secret"] == secret.group(1)

        assert live.run("subscriptions", "pause", sid).stdout == f"{sid} paused\n"
        assert api.get(f"/v1/subscriptions/{sid}").json()["status"] == "paused"
        assert live.run("subscriptions", "resume", sid).stdout == f"{sid} active\n"
        assert api.get(f"/v1/subscriptions/{sid}").json()["status"] == "active"

        tested = live.run("subscriptions", "test", sid)
        assert tested.returncode == 0, tested.stderr
        msg = re.search(r"test delivery (msg_\S+)", tested.stdout)
        assert msg
        delivery = api.get(f"/v1/deliveries/{msg.group(1)}").json()
        assert delivery["subscription_id"] == sid and delivery["event_type"] == "job.test"

        removed = live.run("subscriptions", "remove", sid)
        assert (removed.returncode, removed.stdout) == (0, f"{sid} removed\n")
        assert api.get(f"/v1/subscriptions/{sid}").status_code == 404
    again = live.run("subscriptions", "pause", sid)
    assert again.returncode == 1 and "404 subscription_not_found" in again.stderr


def test_deliveries_retry_sends_a_failed_delivery_again(live: SimRelay) -> None:
    added = live.run("subscriptions", "add", live.env["FAILING_HOOK_URL"], "--json")
    sid = json.loads(added.stdout)["id"]
    with _api(live) as api:
        msg = api.post(f"/v1/subscriptions/{sid}/test").json()["id"]
        deadline = time.monotonic() + 20
        while (first := api.get(f"/v1/deliveries/{msg}").json())["attempts"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert first["last_status_code"] == 500  # the sim's failing receiver
        done = live.run("deliveries", "retry", msg)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{msg} pending")
        deadline = time.monotonic() + 20
        while api.get(f"/v1/deliveries/{msg}").json()["attempts"] <= first["attempts"]:
            assert time.monotonic() < deadline, "the retry was not attempted"
            time.sleep(0.1)
        api.delete(f"/v1/subscriptions/{sid}")
    listed = live.run("deliveries", "--subscription", sid, "--json")
    assert msg in [d["id"] for d in json.loads(listed.stdout)["data"]]


def test_tables_fit_an_80_column_terminal(live: SimRelay) -> None:
    for model, media in (
        ("scenario/magnific-video-creative", "video=asset_sim_clip"),
        ("pixazo/seedvr-video", "video_url=https://example.com/clip.mp4"),
    ):
        assert live.run("submit", model, media).returncode == 0
    hook = f"{live.env['HOOK_URL']}/a/rather/long/path/to/a/receiver"
    sid = json.loads(live.run("subscriptions", "add", hook, "--json").stdout)["id"]
    assert live.run("subscriptions", "test", sid).returncode == 0  # a delivery to list
    with _api(live) as api:
        ids = {
            path: [item["id"] for item in api.get(path).json()["data"]]
            for path in ("/v1/jobs", "/v1/subscriptions", "/v1/deliveries")
        }
    for command, path in (
        ("jobs", "/v1/jobs"),
        ("subscriptions", "/v1/subscriptions"),
        ("deliveries", "/v1/deliveries"),
    ):
        done = live.run(command, COLUMNS="80")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split()[:2] in (["ID", "STATUS"], ["ID", "KIND"]), done.stdout
        assert max(len(line) for line in lines) <= 80, done.stdout
        for item in ids[path][:20]:
            assert item in done.stdout  # every id whole, never folded
    first = live.run("jobs", "--limit", "1")
    more = re.search(r"^more: add --cursor (\d+)$", first.stdout, re.M)
    assert more, first.stdout
    second = live.run("jobs", "--limit", "1", "--cursor", more.group(1))
    assert ids["/v1/jobs"][0] in first.stdout and ids["/v1/jobs"][1] in second.stdout
    wide = live.run("deliveries", COLUMNS="160")
    assert "SUBSCRIPTION" in wide.stdout.splitlines()[0]


def test_submit_wait_draws_a_progress_bar_on_a_terminal(live: SimRelay) -> None:
    main, child = pty.openpty()
    proc = subprocess.Popen(  # noqa: S603
        [EXE, "submit", "scenario/upscale-v3", "image=asset_sim_photo", "--wait"],
        stdin=child,
        stdout=child,
        stderr=child,
        env=live.cli_env(COLUMNS="100", TERM="xterm-256color"),
        close_fds=True,
    )
    os.close(child)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    text = seen.decode(errors="replace")
    assert "━" in text and "100%" in text, text
    assert "scenario/upscale-v3 succeeded" in text


def test_sim_prints_what_its_receivers_get(live: SimRelay) -> None:
    added = live.run("subscriptions", "add", live.env["HOOK_URL"], "--json")
    sid = json.loads(added.stdout)["id"]
    msg = live.run("subscriptions", "test", sid).stdout.split()[3]
    deadline = time.monotonic() + 20
    while "[webhook] received job.test" not in live.sim_out.read_text():
        assert time.monotonic() < deadline, live.sim_out.read_text()
        time.sleep(0.1)
    delivered = live.run("deliveries", "--subscription", sid)
    assert msg in delivered.stdout and "succeeded" in delivered.stdout
    live.run("subscriptions", "remove", sid)


def test_ctrl_c_stops_following_and_leaves_the_job_running(live: SimRelay) -> None:
    proc = subprocess.Popen(  # noqa: S603
        [EXE, "submit", "scenario/upscale-v3", "image=asset_sim_photo", "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=live.cli_env(),
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if " job.queued " in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    job_id = re.search(r"stopped following (job_\w+), which goes on", err)
    assert job_id, err
    assert "Traceback" not in err
    with _api(live) as api:
        deadline = time.monotonic() + 20
        while api.get(f"/v1/jobs/{job_id.group(1)}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.2)
