"""Command line: serve | demo | migrate-store | sim | submit | jobs | subscriptions | deliveries."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import socket
import sys
from types import FrameType

from service import maintenance


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upscale-relay",
        description="Submit AI upscaling jobs, receive signed callbacks, poll, record every "
        "event and forward signed notifications.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (configured from the environment)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    demo = sub.add_parser("demo", help="run everything on loopback with simulated providers")
    demo.add_argument("--timeout", type=float, default=30.0, help="give up after this many s")
    migrate = sub.add_parser(
        "migrate-store",
        help="copy a stopped relay's SQLite database into an empty PostgreSQL database",
        description="Copy jobs, events (with their ids), idempotency keys, subscriptions with "
        "their secrets, deliveries and attempts from a SQLite file into an empty PostgreSQL "
        "database, in one transaction. Stop the relay first.",
    )
    migrate.add_argument(
        "--from",
        dest="source",
        required=True,
        type=_sqlite_source,
        metavar="SQLITE",
        help="sqlite:///abs/path/relay.db, sqlite://relative/relay.db or a path",
    )
    migrate.add_argument(
        "--to",
        dest="target",
        required=True,
        type=_postgres_target,
        metavar="POSTGRESQL_URL",
        help="postgresql://user:password@host:5432/db (must hold no relay data)",
    )
    maintenance.add_parsers(sub)
    from service import cli_client

    # submit, jobs, subscriptions, deliveries and sim live in their own modules
    cli_client.add_parsers(sub)
    return parser


def _sqlite_source(value: str) -> str:
    from service.store.transfer import sqlite_path

    if sqlite_path(value) is None:
        raise argparse.ArgumentTypeError("expected sqlite:///path/relay.db or a file path")
    return value


def _postgres_target(value: str) -> str:
    from service.store.transfer import is_postgres

    if not is_postgres(value):
        # the value itself is left out: it may hold a password
        raise argparse.ArgumentTypeError("expected a postgresql://user:password@host/db URL")
    return value


def _migrate_store(source: str, target: str) -> int:
    from service.store.transfer import TransferError, migrate

    try:
        report = migrate(source, target)
    except TransferError as exc:
        print(f"upscale-relay: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0


def _check_database(path: str) -> str | None:
    """Why the database cannot be opened and written, or None when it can."""
    import asyncio

    from service.errors import StorageUnavailable
    from service.store import check_store

    try:
        asyncio.run(check_store(path))
    except StorageUnavailable as exc:
        return exc.reason
    return None


def _stopped(sig: int, frame: FrameType | None) -> None:
    """The signal was handled already (a drain, then a clean exit)."""


def _serve(host: str, port: int, log_level: str) -> int:
    import uvicorn

    from service import app, config, httpserver, logs
    from service.store import redacted

    try:
        settings = config.load()
        warning = config.check_bind(settings, host)
    except config.ConfigError as exc:
        print(f"upscale-relay: {exc}", file=sys.stderr)
        return 2
    from service.archive import unavailable

    archive_problem = unavailable(settings)
    if archive_problem is not None:
        print(f"upscale-relay: {archive_problem}", file=sys.stderr)
        return 2
    # Checked before uvicorn starts: a failed lifespan would print a traceback, not a reason.
    reason = _check_database(settings.database)
    if reason is not None:
        where = redacted(settings.database)
        print(f"upscale-relay: cannot use the database {where}: {reason}", file=sys.stderr)
        return 1
    logs.configure(log_level, settings.log_format)
    log = logging.getLogger("service")
    log.info(logs.startup_line(settings, redacted(settings.database), host, port))
    if warning:
        log.warning(warning)
    application = app.create_app(settings)

    class Server(uvicorn.Server):
        """uvicorn's server, beginning the app's drain the moment a signal arrives."""

        app_loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self.app_loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if self.app_loop is not None:
                app.drain_soon(application, self.app_loop)

    server = Server(
        uvicorn.Config(
            application,
            host=host,
            port=port,
            log_level=log_level,
            log_config=None,  # uvicorn's loggers propagate to ours: one format, timestamps
            proxy_headers=True,
            # Requests under way get the grace too; the workers' drain began with the signal
            # and ends by the same deadline in the lifespan (which uvicorn never times out).
            timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace)),
            http=httpserver.protocol(settings.header_timeout, settings.max_header_bytes),
        )
    )
    # SIGTERM and SIGINT end in a drain and exit 0: uvicorn re-raises the signal it caught
    # once it is done, so that signal's handler before uvicorn's must be a quiet one.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    except KeyboardInterrupt:  # a second Ctrl+C: uvicorn forced the exit
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        return 3  # uvicorn's own code for a failed start-up
    return 0


def _client_command(args: argparse.Namespace) -> int:
    # each of these subcommands set its handler (service/cli_client.py, service/sim/run.py)
    result: int = args.run(args)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.host, args.port, args.log_level)
    if args.command == "demo":
        import asyncio

        from service import demo

        return asyncio.run(demo.run(limit=args.timeout))
    if args.command == "migrate-store":
        return _migrate_store(args.source, args.target)
    if args.command in maintenance.COMMANDS:
        return maintenance.run(args)
    return _client_command(args)
