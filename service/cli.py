"""Command line: serve | demo. Heavy imports happen inside the command that needs them."""

from __future__ import annotations

import argparse
import logging
import sys


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
    return parser


def _serve(host: str, port: int, log_level: str) -> int:
    import uvicorn

    from service import app, config

    try:
        settings = config.load()
        warning = config.check_bind(settings, host)
    except config.ConfigError as exc:
        print(f"upscale-relay: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if warning:
        logging.getLogger("service").warning(warning)
    uvicorn.run(
        app.create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.host, args.port, args.log_level)
    if args.command == "demo":
        import asyncio

        from service import demo

        return asyncio.run(demo.run(limit=args.timeout))
    return 2  # pragma: no cover - argparse refuses unknown commands
