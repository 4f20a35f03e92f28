"""Logging set-up: a timestamp on every line, text or JSON, and no callback token logged."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from service.config import Settings
from service.http import callbacks

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
REDACTED = "…"

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
    "taskName",
}


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


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the record's extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access":
            entry.update(_access_fields(record.args))
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot hold is still shown, never a lost line
        return orjson.dumps(entry, default=str).decode()


def _access_fields(args: Any) -> dict[str, Any]:
    """uvicorn's access-log arguments (already token-redacted) as fields."""
    if not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, _version, status = args
    return {"client": client, "method": method, "path": path, "status": status}


def formatter(fmt: str) -> logging.Formatter:
    """The formatter for RELAY_LOG_FORMAT `fmt` (text or json)."""
    if fmt == "json":
        return JsonFormatter()
    return logging.Formatter(FORMAT)


def configure(level: str, fmt: str = "text") -> None:
    """Root logging for `serve`: timestamped lines at `level`, as text or one JSON object each."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def redact_access_log() -> None:
    """Install the token filter on uvicorn's access logger (once; after uvicorn's own set-up)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, CallbackTokens) for f in access.filters):
        access.addFilter(CallbackTokens())


def providers(settings: Settings) -> list[str]:
    """The providers whose credentials are configured (as service.providers.build decides)."""
    names = []
    if settings.pixazo_api_key is not None:
        names.append("pixazo")
    if settings.scenario_api_key is not None and settings.scenario_api_secret is not None:
        names.append("scenario")
    return names


def startup_line(settings: Settings, database: str, host: str, port: int) -> str:
    """What `serve` says first: the database (already redacted), public URL, providers, bind."""
    shown = f"[{host}]" if ":" in host else host
    names = ", ".join(providers(settings)) or "none"
    return (
        f"upscale-relay starting: database {database}, public URL {settings.public_url}, "
        f"providers {names}, listening on http://{shown}:{port}"
    )
