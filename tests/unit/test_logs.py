"""The log formats: JSON lines with their fields, and the start-up line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from service import config, logs
from service.store import redacted


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the JSON formatter into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    logger = logging.getLogger("relay.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_its_fields(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info("delivered %s in %d ms", "d_1", 12)
    logger.warning("two\nlines", extra={"job_id": "j_1", "latency_ms": 3.5, "status": 502})
    first, second = _lines(stream)
    assert first["message"] == "delivered d_1 in 12 ms"
    assert first["level"] == "INFO"
    assert first["logger"] == "relay.test.logs"
    ts = str(first["ts"])
    # ISO 8601 UTC with milliseconds: 2026-01-31T12:34:56.789Z
    assert len(ts) == 24 and ts[10] == "T" and ts[19] == "." and ts.endswith("Z"), ts
    assert set(first) == {"ts", "level", "logger", "message"}
    assert second["message"] == "two\nlines"
    assert (second["job_id"], second["latency_ms"], second["status"]) == ("j_1", 3.5, 502)


def test_an_exception_is_one_exc_field_of_the_same_line(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    try:
        raise RuntimeError("the provider went away")
    except RuntimeError:
        logger.exception("polling failed")
    (entry,) = _lines(stream)
    assert entry["level"] == "ERROR"
    assert entry["message"] == "polling failed"
    exc = str(entry["exc"])
    assert exc.startswith("Traceback") and "RuntimeError: the provider went away" in exc


def test_non_ascii_and_unserialisable_extras_survive(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info("café ☕ %s", "日本", extra={"provider": object.__name__, "where": {1, 2}})
    (entry,) = _lines(stream)
    assert entry["message"] == "café ☕ 日本"
    assert entry["provider"] == "object"
    assert isinstance(entry["where"], str)  # shown as text, the line not lost


def test_uvicorn_access_records_get_fields_and_no_callback_token(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    _, stream = capture
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/hooks/pixazo/tokenSECRET", "1.1", 200),
        None,
    )
    logs.CallbackTokens().filter(record)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    handler.handle(record)
    (entry,) = _lines(stream)
    assert "tokenSECRET" not in stream.getvalue()
    assert entry["logger"] == "uvicorn.access"
    assert (entry["method"], entry["path"], entry["status"]) == (
        "POST",
        "/hooks/pixazo/…",
        200,
    )


def test_text_stays_the_default_format() -> None:
    record = logging.LogRecord("service", logging.INFO, __file__, 1, "hello", None, None)
    line = logs.formatter("text").format(record)
    assert line.endswith(" INFO service: hello") and line[:4].isdigit()
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert config.load({}, env_file=None).log_format == "text"


def test_log_format_is_text_or_json_else_a_config_error_naming_it() -> None:
    assert config.load({"RELAY_LOG_FORMAT": "JSON"}, env_file=None).log_format == "json"
    with pytest.raises(config.ConfigError, match="RELAY_LOG_FORMAT") as caught:
        config.load({"RELAY_LOG_FORMAT": "xml"}, env_file=None)
    assert "'xml'" in str(caught.value)


def test_startup_line_names_database_public_url_providers_and_bind() -> None:
    url = "postgresql://relay:pa55word@db.internal:5432/relay"
    settings = config.load(
        {
            "RELAY_DATABASE": url,
            "RELAY_PUBLIC_URL": "https://relay.example.com",
            "PIXAZO_API_KEY": "k",
        },
        env_file=None,
    )
    line = logs.startup_line(settings, redacted(settings.database), "::1", 8000)
    assert "pa55word" not in line
    assert "postgresql://relay:***@db.internal:5432/relay" in line
    assert "https://relay.example.com" in line
    assert "providers pixazo," in line
    assert "http://[::1]:8000" in line
    bare = config.load({}, env_file=None)
    assert "providers none" in logs.startup_line(bare, bare.database, "127.0.0.1", 1)
