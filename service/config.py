"""Settings from environment variables (and `.env`); the only reader of os.environ."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import Secret

from service import retry

DEFAULT_RETRY_SCHEDULE = "0,5,300,1800,7200,18000,36000,36000"


class ConfigError(ValueError):
    """The configuration is invalid."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service reads from its environment."""

    database: str = "./data/relay.db"
    # PostgreSQL: connections per process in the pool (one more listens for wake-ups)
    database_pool: int = 10
    public_url: str = "http://127.0.0.1:8000"
    secret: Secret | None = None
    api_tokens: tuple[Secret, ...] = ()
    pixazo_api_key: Secret | None = None
    pixazo_base_url: str = "https://gateway.pixazo.ai"
    scenario_api_key: Secret | None = None
    scenario_api_secret: Secret | None = None
    scenario_base_url: str = "https://api.cloud.scenario.com"
    scenario_project_id: str | None = None
    callback_grace: float = 120.0
    callback_max_age: int = 604800
    poll_min: float = 2.0
    poll_max: float = 30.0
    job_timeout: float = 86400.0
    retry_schedule: tuple[float, ...] = field(
        default_factory=lambda: retry.parse_schedule(DEFAULT_RETRY_SCHEDULE)
    )
    delivery_timeout: float = 10.0
    allow_private_targets: bool = False
    pause_after: float = 5 * 86400.0
    metrics_token: Secret | None = None
    # SIGTERM: how long in-flight polls and deliveries may take to finish before release
    shutdown_grace: float = 10.0
    # `serve`'s log lines: "text" (timestamped lines) or "json" (one object per line)
    log_format: str = "text"
    # days after a job ends before its events, deliveries and attempts are pruned; None: never
    retention_days: float | None = None
    # RELAY_ARCHIVE: None (outputs are not archived), file:///abs/folder or s3://bucket/prefix
    archive: str | None = None
    archive_endpoint: str | None = None
    archive_region: str | None = None
    # "before_notify": job.succeeded waits for the archive; "after_notify": job.archived later
    archive_mode: str = "before_notify"
    archive_url_ttl: int = 3600
    # days after a job ends before its archived files are deleted; None: never
    archive_retention_days: float | None = None
    # delays before each copy attempt; the copy is given up once they are spent
    archive_retry_schedule: tuple[float, ...] = (0.0, 5.0, 30.0, 120.0, 600.0)
    archive_max_image_bytes: int = 50 * 1024 * 1024
    archive_max_video_bytes: int = 2 * 1024 * 1024 * 1024
    # Not in the public table: tuning knobs with sensible defaults.
    poll_concurrency: int = 32
    max_in_flight: int = 10000
    provider_timeout: float = 30.0
    max_body_bytes: int = 1024 * 1024
    # HTTP server: a request's line and headers must arrive within this time and size
    header_timeout: float = 10.0
    max_header_bytes: int = 32 * 1024


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines of a .env file (comments, `export` and quotes allowed)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load(environ: Mapping[str, str] | None = None, env_file: str | None = ".env") -> Settings:
    """Build Settings from `environ` (default os.environ) over the values of `env_file`."""
    env: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        env.update(read_env_file(Path(env_file)))
    env.update(os.environ if environ is None else environ)
    problems: list[str] = []

    def text(name: str, default: str) -> str:
        return env.get(name, "").strip() or default

    def secret(name: str) -> Secret | None:
        value = env.get(name, "").strip()
        return Secret(value) if value else None

    def number(name: str, default: float, minimum: float = 0.0, maximum: float = math.inf) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.append(f"{name} must be a finite number, got {raw!r}")
            return default
        if value < minimum:
            problems.append(f"{name} must be >= {minimum:g}, got {raw}")
        elif value > maximum:
            problems.append(f"{name} must be <= {maximum:g}, got {raw}")
        return value

    def flag(name: str) -> bool:
        raw = env.get(name, "").strip().lower()
        if raw in ("", "0", "false", "no", "off"):
            return False
        if raw in ("1", "true", "yes", "on"):
            return True
        problems.append(f"{name} must be 0 or 1, got {raw!r}")
        return False

    tokens = tuple(
        Secret(t.strip()) for t in env.get("RELAY_API_TOKENS", "").split(",") if t.strip()
    )
    try:
        schedule = retry.parse_schedule(text("RELAY_RETRY_SCHEDULE", DEFAULT_RETRY_SCHEDULE))
    except ValueError as exc:
        problems.append(f"RELAY_RETRY_SCHEDULE: {exc}")
        schedule = retry.parse_schedule(DEFAULT_RETRY_SCHEDULE)
    public_url = text("RELAY_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
    if not public_url.startswith(("http://", "https://")):
        problems.append(f"RELAY_PUBLIC_URL must start with http:// or https://, got {public_url!r}")
    log_format = text("RELAY_LOG_FORMAT", "text").lower()
    if log_format not in ("text", "json"):
        problems.append(f"RELAY_LOG_FORMAT must be text or json, got {log_format!r}")
        log_format = "text"
    retention_raw = env.get("RELAY_RETENTION_DAYS", "").strip()
    known = len(problems)
    retention_days = number("RELAY_RETENTION_DAYS", 0.0) if retention_raw else None
    if retention_days is not None and retention_days <= 0 and len(problems) == known:
        problems.append(
            "RELAY_RETENTION_DAYS must be a number of days above 0 (leave it unset to keep"
            f" everything), got {retention_raw!r}"
        )
    archive = archive_setting(env.get("RELAY_ARCHIVE", "").strip(), problems)
    archive_mode = text("RELAY_ARCHIVE_MODE", "before_notify").lower()
    if archive_mode not in ("before_notify", "after_notify"):
        problems.append(
            f"RELAY_ARCHIVE_MODE must be before_notify or after_notify, got {archive_mode!r}"
        )
        archive_mode = "before_notify"
    archive_retention_raw = env.get("RELAY_ARCHIVE_RETENTION_DAYS", "").strip()
    known = len(problems)
    archive_retention = (
        number("RELAY_ARCHIVE_RETENTION_DAYS", 0.0) if archive_retention_raw else None
    )
    if archive_retention is not None and archive_retention <= 0 and len(problems) == known:
        problems.append(
            "RELAY_ARCHIVE_RETENTION_DAYS must be a number of days above 0 (leave it unset to"
            f" keep archived files), got {archive_retention_raw!r}"
        )
    archive_schedule = Settings().archive_retry_schedule
    archive_schedule_raw = env.get("RELAY_ARCHIVE_RETRY_SCHEDULE", "").strip()
    if archive_schedule_raw:
        try:
            archive_schedule = retry.parse_schedule(archive_schedule_raw)
        except ValueError as exc:
            problems.append(f"RELAY_ARCHIVE_RETRY_SCHEDULE: {exc}")
    d = Settings()
    settings = Settings(
        database=text("RELAY_DATABASE", d.database),
        database_pool=int(number("RELAY_DATABASE_POOL", d.database_pool, 1)),
        public_url=public_url,
        secret=secret("RELAY_SECRET"),
        api_tokens=tokens,
        pixazo_api_key=secret("PIXAZO_API_KEY"),
        pixazo_base_url=text("PIXAZO_BASE_URL", d.pixazo_base_url).rstrip("/"),
        scenario_api_key=secret("SCENARIO_API_KEY"),
        scenario_api_secret=secret("SCENARIO_API_SECRET"),
        scenario_base_url=text("SCENARIO_BASE_URL", d.scenario_base_url).rstrip("/"),
        scenario_project_id=env.get("SCENARIO_PROJECT_ID", "").strip() or None,
        callback_grace=number("RELAY_CALLBACK_GRACE", d.callback_grace),
        callback_max_age=int(number("RELAY_CALLBACK_MAX_AGE", d.callback_max_age, 1)),
        poll_min=number("RELAY_POLL_MIN", d.poll_min, 0.01),
        poll_max=number("RELAY_POLL_MAX", d.poll_max, 0.01),
        job_timeout=number("RELAY_JOB_TIMEOUT", d.job_timeout, 1),
        retry_schedule=schedule,
        delivery_timeout=number("RELAY_DELIVERY_TIMEOUT", d.delivery_timeout, 0.1),
        allow_private_targets=flag("RELAY_ALLOW_PRIVATE_TARGETS"),
        pause_after=number("RELAY_PAUSE_AFTER", d.pause_after, 1),
        poll_concurrency=int(number("RELAY_POLL_CONCURRENCY", d.poll_concurrency, 1)),
        max_in_flight=int(number("RELAY_MAX_IN_FLIGHT", d.max_in_flight, 1)),
        metrics_token=secret("RELAY_METRICS_TOKEN"),
        shutdown_grace=number("RELAY_SHUTDOWN_GRACE", d.shutdown_grace),
        log_format=log_format,
        retention_days=retention_days,
        archive=archive,
        archive_endpoint=env.get("RELAY_ARCHIVE_ENDPOINT", "").strip().rstrip("/") or None,
        archive_region=(
            env.get("RELAY_ARCHIVE_REGION", "").strip()
            or env.get("AWS_REGION", "").strip()
            or env.get("AWS_DEFAULT_REGION", "").strip()
            or None
        ),
        archive_mode=archive_mode,
        # S3 refuses presigned URLs valid for more than 7 days
        archive_url_ttl=int(number("RELAY_ARCHIVE_URL_TTL", d.archive_url_ttl, 1, 604800)),
        archive_retention_days=archive_retention,
        archive_retry_schedule=archive_schedule,
        archive_max_image_bytes=int(
            number("RELAY_ARCHIVE_MAX_IMAGE_BYTES", d.archive_max_image_bytes, 1)
        ),
        archive_max_video_bytes=int(
            number("RELAY_ARCHIVE_MAX_VIDEO_BYTES", d.archive_max_video_bytes, 1)
        ),
        header_timeout=number("RELAY_HEADER_TIMEOUT", d.header_timeout, 0.1),
        max_header_bytes=int(number("RELAY_MAX_HEADER_BYTES", d.max_header_bytes, 1024)),
    )
    if settings.poll_max < settings.poll_min:
        problems.append("RELAY_POLL_MAX must be >= RELAY_POLL_MIN")
    if problems:
        raise ConfigError("; ".join(problems))
    return settings


def archive_setting(raw: str, problems: list[str]) -> str | None:
    """RELAY_ARCHIVE checked: None, `file:///absolute/folder` or `s3://bucket[/prefix]`."""
    if not raw:
        return None
    if raw.startswith("file://"):
        path = raw[len("file://") :]
        if not path.startswith("/") or path.rstrip("/") == "":
            problems.append(
                "RELAY_ARCHIVE must name an absolute folder (file:///var/lib/upscale-relay/"
                f"outputs), got {raw!r}"
            )
            return None
        return "file://" + (path.rstrip("/") or "/")
    if raw.startswith("s3://"):
        bucket = raw[len("s3://") :].split("/", 1)[0]
        if not bucket:
            problems.append(f"RELAY_ARCHIVE must name a bucket (s3://bucket/prefix), got {raw!r}")
            return None
        return raw.rstrip("/")
    # the value may hold credentials (a URL with a user): never echoed back beyond its scheme
    scheme = raw.split(":", 1)[0][:16] if ":" in raw else "(none)"
    problems.append(
        f"RELAY_ARCHIVE must start with file:// or s3://, got a value with scheme {scheme!r}"
    )
    return None


def is_loopback_host(host: str) -> bool:
    """True when binding `host` exposes the service to this machine only."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> str | None:
    """The API-token rule: a warning to log, or raise ConfigError when the bind is unsafe."""
    if settings.api_tokens:
        return None
    if is_loopback_host(host):
        return (
            "RELAY_API_TOKENS is not set: the API is open to anyone on this machine "
            f"(bound to {host} only). Set RELAY_API_TOKENS before exposing it."
        )
    raise ConfigError(
        f"refusing to bind {host} without RELAY_API_TOKENS: the API would be open to the network"
    )
