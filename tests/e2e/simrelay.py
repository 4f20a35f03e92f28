"""`upscale-relay sim` and an `upscale-relay serve` with the environment it prints, as processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

EXE = str(Path(sys.executable).with_name("upscale-relay"))


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the relay's variables, plus `extra`."""
    prefixes = ("RELAY_", "PIXAZO_", "SCENARIO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def exports(text: str) -> dict[str, str]:
    """The `export NAME=value` lines of sim's banner (values are shell-quoted only if needed)."""
    import shlex

    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            out[name] = shlex.split(value)[0] if value else ""
    return out


@dataclass
class SimRelay:
    """The two processes: the relay's URL and the environment sim printed."""

    url: str
    sim_url: str
    env: dict[str, str]
    sim: subprocess.Popen[bytes]
    serve: subprocess.Popen[bytes]
    sim_out: Path

    def cli_env(self, **extra: str) -> dict[str, str]:
        """The environment a user has after pasting sim's export lines."""
        return clean_env(**(self.env | extra))

    def run(
        self, *args: str, timeout: float = 30, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `upscale-relay ARGS` as a user would, with sim's environment."""
        return subprocess.run(  # noqa: S603
            [EXE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.cli_env(**extra),
            check=False,
        )


def wait_for_banner(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> str:
    """sim's banner, once it printed the last line of it."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if "# Webhook receivers" in text:
            return text
        assert proc.poll() is None, f"sim exited with {proc.returncode}: {text}"
        assert time.monotonic() < deadline, f"sim printed no banner: {text!r}"
        time.sleep(0.05)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait for /readyz to answer 200."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        assert time.monotonic() < deadline, "serve did not become ready"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal a process and wait for its exit code (killed after 20 s)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        raise


@contextlib.contextmanager
def sim_and_serve(
    tmp: Path, *, process_seconds: float = 1.5, token: str | None = None
) -> Iterator[SimRelay]:
    """Start sim, then serve with the environment sim printed; stop both (sim must exit 0)."""
    sim_port, relay_port = free_port(), free_port()
    relay_url = f"http://127.0.0.1:{relay_port}"
    sim_out = tmp / "sim.out"
    args = ["sim", "--port", str(sim_port), "--relay-url", relay_url]
    args += ["--queue-seconds", "0.2", "--process-seconds", str(process_seconds)]
    if token:
        args += ["--token", token]
    with sim_out.open("wb") as out:
        sim = subprocess.Popen([EXE, *args], stdout=out, stderr=out, env=clean_env())  # noqa: S603
    serve: subprocess.Popen[bytes] | None = None
    try:
        env = exports(wait_for_banner(sim_out, sim))
        serve_env = clean_env(**env, RELAY_DATABASE=str(tmp / "relay.db"))
        with (tmp / "serve.log").open("wb") as log:
            serve = subprocess.Popen(  # noqa: S603
                [EXE, "serve", "--port", str(relay_port), "--log-level", "warning"],
                stdout=log,
                stderr=log,
                env=serve_env,
                cwd=tmp,
            )
        wait_ready(relay_url, serve)
        yield SimRelay(relay_url, f"http://127.0.0.1:{sim_port}", env, sim, serve, sim_out)
    finally:
        codes = [stop(p) for p in (serve, sim) if p is not None]
    assert codes == [0] * len(codes), (codes, sim_out.read_text())
