"""Logging set-up: a timestamp on every line, and no callback token in the access log."""

from __future__ import annotations

import logging

from service.http import callbacks

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "…"


class CallbackTokens(logging.Filter):
    """Show `/hooks/pixazo/…` in uvicorn's access log: the token is the callback's credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn.access records carry (client, method, path, http version, status) as args.
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3:
            path = args[2]
            if isinstance(path, str) and path.startswith(callbacks.PREFIX):
                record.args = (*args[:2], callbacks.PREFIX + REDACTED, *args[3:])
        return True


def configure(level: str) -> None:
    """Root logging for `serve`: timestamped lines at `level`."""
    logging.basicConfig(level=level.upper(), format=FORMAT)


def redact_access_log() -> None:
    """Install the token filter on uvicorn's access logger (once; after uvicorn's own set-up)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, CallbackTokens) for f in access.filters):
        access.addFilter(CallbackTokens())
