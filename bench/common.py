"""Shared pieces of the benchmarks: the relay in a subprocess, seeding, loopback servers,
a lean HTTP client, /proc readings, result rows and the machine description."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
HOST = "127.0.0.1"
SECRET = "bench-relay-secret-0123456789abcdef"  # RELAY_SECRET: lets the bench mint tokens
MAX_AGE = 604800

# Two cores: the server under test gets core 0, the load generator and the bench's own
# simulators core 1 (why: the ingest note in RESULTS.md). On one core nothing is pinned.
SERVER_CPU = "0"
CLIENT_CPU = 1
PINNING = {"on": True}  # `python -m bench --unpinned` turns it off


def log(message: str) -> None:
    """Progress goes to stderr; the table alone goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def can_pin() -> bool:
    return PINNING["on"] and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


@contextlib.contextmanager
def client_core(cpu: int = CLIENT_CPU) -> Iterator[None]:
    """Run the bench process (its load generator and simulators) on the client core.

    `cpu=int(SERVER_CPU)` puts the load beside the relay, on the relay's own core.
    """
    if not can_pin():
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- results -------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One line of the results table."""

    bench: str
    metric: str
    value: str
    baseline: str = "—"
    ratio: str = "—"
    goal: str = "—"
    result: str = ""

    @staticmethod
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"


@dataclasses.dataclass
class Outcome:
    """What one benchmark module returns: rows for the table, notes for below it."""

    rows: list[Row]
    notes: list[str] = dataclasses.field(default_factory=list)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def fmt_ms(seconds: float) -> str:
    if seconds != seconds:
        return "n/a"
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


# -- machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    out = {}
    for name in ("starlette", "uvicorn", "httpx", "aiohttp", "uvloop", "httptools"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str:
    """`git rev-parse --short HEAD`, plus -dirty when the tree has changes (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if status.strip() else "")


def machine_lines() -> list[str]:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    pkgs = ", ".join(f"{k} {v}" for k, v in versions().items())
    return [
        f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- Machine: {nproc} CPUs (`nproc`), {cpu_model()}, {mem_total_gib():.1f} GiB RAM, "
        f"Linux {platform.release()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; {pkgs}",
        f"- Commit: {git_revision()}",
    ]


def mem_total_gib() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


# -- /proc ---------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds from an asyncio task."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, KeyError):
                self.peak_kib = max(self.peak_kib, memory_kib(self.pid)["VmRSS"])
                self.samples += 1
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- ports and processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "PIXAZO_", "SCENARIO_"))
    }
    env.update(extra)
    return env


def pinned(cmd: list[str], cpu: str | None) -> list[str]:
    if cpu is None or not can_pin():
        return cmd
    return ["taskset", "-c", cpu, *cmd]


class Server:
    """A server under test in its own process (the relay or the bare baseline)."""

    def __init__(
        self,
        cmd: list[str],
        port: int,
        env: dict[str, str],
        cwd: Path,
        cpu: str | None = SERVER_CPU,
        name: str = "server",
    ) -> None:
        self.cmd = pinned(cmd, cpu)
        self.port = port
        self.env = env
        self.cwd = cwd
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.stop_seconds = 0.0
        self._stderr = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
        )

    def output(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-4000:]

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode} while starting:\n{self.output()}"
            )

    def wait_ready_sync(self, timeout: float = 20.0) -> float:
        """Block until GET /healthz answers 200; returns seconds since start()."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if healthz_sync(self.port):
                return time.perf_counter() - self.started_at
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not answer /healthz:\n{self.output()}")
            time.sleep(0.005)

    async def wait_ready(self, timeout: float = 20.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if await healthz(self.port):
                return time.perf_counter() - self.started_at
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not answer /healthz:\n{self.output()}")
            await asyncio.sleep(0.005)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a graceful shutdown finishes queued writes), then SIGKILL."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            started = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop_seconds = float("inf")
                log(f"{self.name} ignored SIGTERM for {timeout:g} s: killing it")
                log(f"{self.name} output: {self.output()[-1500:]}")
                self.proc.kill()
                self.proc.wait()
            else:
                self.stop_seconds = time.monotonic() - started
                if self.stop_seconds > 3:
                    log(f"{self.name} took {self.stop_seconds:.1f} s to stop after SIGTERM")
        self._stderr.close()
        return self.proc.returncode

    async def astop(self, timeout: float = 15.0) -> int | None:
        return await asyncio.to_thread(self.stop, timeout)


def healthz_sync(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


async def healthz(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 1)
        return line.startswith(b"HTTP/1.1 200")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


def relay_server(
    db: Path | str, workdir: Path, cpu: str | None = SERVER_CPU, console: bool = False, **env: str
) -> Server:
    """`python -m service serve` (or the console script) on a free port, configured by env."""
    port = free_port()
    environ = clean_env(
        RELAY_DATABASE=str(db),
        RELAY_SECRET=SECRET,
        RELAY_PUBLIC_URL=f"http://{HOST}:{port}",
        **env,
    )
    head = [str(VENV_BIN / "upscale-relay")] if console else [PYTHON, "-m", "service"]
    cmd = [*head, "serve", "--host", HOST, "--port", str(port), "--log-level", "warning"]
    return Server(cmd, port, environ, workdir, cpu, name="relay")


def bare_server(workdir: Path, cpu: str | None = SERVER_CPU) -> Server:
    port = free_port()
    environ = clean_env(PYTHONPATH=str(ROOT))
    cmd = [
        PYTHON,
        "-m",
        "uvicorn",
        "bench.bare:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    return Server(cmd, port, environ, workdir, cpu, name="bare")


# -- database ------------------------------------------------------------------------------


async def migrate(path: Path) -> None:
    """Create the schema with the service's own migrations."""
    from service.store.sqlite.store import SqliteStore as Store

    store = await Store.open(str(path))
    await store.close()


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def job_id(i: int, salt: str = "") -> str:
    """A job id shaped like the relay's (job_ + 20 hex), deterministic and spread out."""
    return "job_" + hashlib.blake2b(f"{salt}{i}".encode(), digest_size=10).hexdigest()


def request_id(i: int, salt: str = "") -> str:
    """A provider request id shaped like Pixazo's (a UUID)."""
    h = hashlib.blake2b(f"req{salt}{i}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


JOB_COLUMNS = (
    "id, model, provider, status, progress, input, metadata, provider_job_id,"
    " created_at, updated_at, next_poll_at, poll_attempt"
)


def insert_jobs(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
    )
    conn.execute("COMMIT")


def pixazo_job(
    i: int, status: str, now: float, next_poll_at: float | None, salt: str = ""
) -> tuple:
    return (
        job_id(i, salt),
        "pixazo/seedvr-image",
        "pixazo",
        status,
        0.0,
        json.dumps({"image_url": f"https://cdn.example.com/in/{i}.png", "upscale_factor": 2}),
        json.dumps({"tenant": "bench"}),
        request_id(i, salt),
        now,
        now,
        next_poll_at,
        0,
    )


# -- a lean HTTP/1.1 client ----------------------------------------------------------------


class RawClient:
    """Keep-alive HTTP/1.1 over asyncio streams: the send time is taken right before the
    bytes are written, with none of a client library's work after it."""

    IDLE = 1.0  # uvicorn closes idle keep-alive connections after 5 s: reuse well before

    def __init__(self, port: int, host: str = HOST) -> None:
        self.host = host
        self.port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < self.IDLE and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._all.append(writer)
        return reader, writer, False

    async def request(
        self, method: str, path: str, body: bytes = b"", on_send: Callable[[], None] | None = None
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        while True:
            reader, writer, reused = await self._connection()
            if on_send is not None:
                on_send()
            try:
                writer.write(head + body)
                header = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                writer.close()
                # a kept-alive connection the server had closed: nothing was read, send again
                if reused and not getattr(exc, "partial", b""):
                    continue
                raise
            break
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await reader.readexactly(length) if length else b""
        if close:
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return status, data

    async def aclose(self) -> None:
        for writer in self._all:
            writer.close()
        self._all.clear()
        self._idle.clear()


# -- loopback servers in the bench process -------------------------------------------------

Handler = Callable[[str, str, list[tuple[bytes, bytes]], bytes], Awaitable[tuple[int, bytes]]]


def asgi(handler: Handler) -> Callable[..., Awaitable[None]]:
    """A bare ASGI app (no framework work) around `handler(method, path, headers, body)`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        status, body = await handler(
            scope["method"], scope["path"], scope["headers"], b"".join(chunks)
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """Serve `handler` on 127.0.0.1 in this process (uvicorn: httptools and uvloop if there)."""
    from service.sim.server import serve

    async with serve(asgi(handler)) as url:
        yield url


def tmpdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"relay-bench-{prefix}-")
