"""A throwaway PostgreSQL server for tests and benchmarks: initdb in a temporary folder."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

ROOT_LIB = Path("/usr/lib/postgresql")  # Debian's layout: /usr/lib/postgresql/<major>/bin
USER = "relay"  # the role initdb creates (a superuser) and the name of the first database
SERVICE_USER = "postgres"  # Debian's account: the server refuses to run as root
BINDIR_ENV = "RELAY_TEST_PG_BINDIR"  # another layout (a source build, Homebrew): its bin folder


class PgServerError(RuntimeError):
    """PostgreSQL could not be found or started; the message says why."""


def find_bindir(root: Path = ROOT_LIB) -> Path:
    """$RELAY_TEST_PG_BINDIR, else the bin folder of the highest major version installed."""
    if os.environ.get(BINDIR_ENV):
        return Path(os.environ[BINDIR_ENV])
    found = [p.parent for p in root.glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    if not found:
        raise PgServerError(
            f"no PostgreSQL server under {root}/*/bin (run scripts/ensure-test-packages as root, "
            "or apt-get install postgresql)"
        )
    return max(found, key=lambda p: int(p.parent.name))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quote_ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain database name: {name!r}")
    return f'"{name}"'


class PgServer:
    """initdb + postgres on 127.0.0.1 and a free port; as root, run as the `postgres` user."""

    def __init__(self, bindir: Path | None = None, max_connections: int = 200) -> None:
        self.bindir = bindir or find_bindir()
        self.max_connections = max_connections
        # a random password: a test can check that it never shows up in a log line
        self.password = secrets.token_hex(16)
        self.port = 0
        self.folder: Path | None = None
        self._as: pwd.struct_passwd | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths and URLs --------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self.folder is not None, "server not started"
        return self.folder / "data"

    def url(self, database: str = USER) -> str:
        """postgresql://relay:…@127.0.0.1:PORT/<database>."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def postmaster_pid(self) -> int:
        """The server's main process id, from its postmaster.pid file."""
        return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])

    # -- running its programs --------------------------------------------------------------

    def _as_user(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Environment and Popen arguments: as the `postgres` user when we are root."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kw: dict[str, Any] = {}
        if self._as is not None:
            kw = {"user": self._as.pw_uid, "group": self._as.pw_gid, "extra_groups": []}
            env.update(HOME=self._as.pw_dir, USER=SERVICE_USER, LOGNAME=SERVICE_USER)
        return env, kw

    def _run(self, *args: str, timeout: float = 60) -> str:
        """Run one of the server's programs to its end."""
        env, kw = self._as_user()
        done = subprocess.run(  # noqa: S603 (our fixed binaries, no shell)
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.folder,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kw,
        )
        if done.returncode != 0:
            raise PgServerError(
                f"{args[0]} exited with {done.returncode}: {(done.stderr or done.stdout)[-2000:]}"
            )
        return done.stdout

    def _popen(self, *args: str) -> subprocess.Popen[bytes]:
        """Start the server as our child (so we reap it), its output to server.log."""
        assert self.folder is not None
        env, kw = self._as_user()
        with (self.folder / "server.log").open("ab") as log:
            return subprocess.Popen(  # noqa: S603
                [str(self.bindir / args[0]), *args[1:]],
                cwd=self.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop it
                **kw,
            )

    def _log_tail(self) -> str:
        if self.folder is None:
            return ""
        with contextlib.suppress(OSError):
            text = (self.folder / "server.log").read_text(errors="replace")
            return f"\nserver.log:\n{text[-2000:]}"
        return ""

    def _make_folder(self) -> Path:
        parent = Path(tempfile.gettempdir())
        if os.geteuid() == 0:
            try:
                self._as = pwd.getpwnam(SERVICE_USER)
            except KeyError:
                raise PgServerError(
                    "running as root, and PostgreSQL refuses root: no `postgres` user to run "
                    "it as (Debian's postgresql package creates it)"
                ) from None
            if not parent.stat().st_mode & 0o001:  # the postgres user must reach the folder
                parent = Path("/tmp")  # noqa: S108 (mkdtemp: a private 0700 folder)
        folder = Path(tempfile.mkdtemp(prefix="relay-pg-", dir=parent))
        if self._as is not None:
            os.chown(folder, self._as.pw_uid, self._as.pw_gid)
        return folder

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """initdb, configure, start and wait until it accepts connections."""
        if not (self.bindir / "initdb").is_file():
            raise PgServerError(f"no initdb in {self.bindir}")
        self.folder = self._make_folder()
        atexit.register(self.stop)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        assert self.folder is not None
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as is not None:
            os.chown(pwfile, self._as.pw_uid, self._as.pw_gid)
        pwfile.chmod(0o600)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            # TCP on loopback needs the password; the Unix socket sits in our 0700 folder
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # the throwaway cluster's files: the server itself keeps fsync on
        )
        pwfile.unlink()
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# tests/pgserver.py\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\n"
                f"max_connections = {self.max_connections}\n"
            )
        for attempt in range(3):  # a free port can be taken between our probe and its bind
            self.port = _free_port()
            self._proc = self._popen("postgres", "-D", str(self.data_dir), "-p", str(self.port))
            if self._wait_ready(timeout):
                break
            if attempt == 2 or "could not bind" not in self._log_tail():
                raise PgServerError(
                    f"postgres exited with {self._proc.returncode}{self._log_tail()}"
                )
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {_quote_ident(USER)}")

    def _wait_ready(self, timeout: float) -> bool:
        """True once it accepts connections, False if it exited; raises after `timeout`."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return True
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PgServerError(
                        f"server did not accept connections: {exc}{self._log_tail()}"
                    ) from exc
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop the server (fast shutdown: rolls back open transactions), remove its folder."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGQUIT)  # "immediate"
                    proc.wait(10)
        finally:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = None

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------

    @contextlib.contextmanager
    def admin(self) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit connection to the `postgres` database, for CREATE/DROP DATABASE."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            yield conn

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (from template0); returns its URL."""
        name = name or f"t_{secrets.token_hex(6)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {_quote_ident(name)} TEMPLATE template0")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any connection a test left open on it."""
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh empty database for the block, dropped after it; yields its URL."""
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url.rsplit("/", 1)[1])
