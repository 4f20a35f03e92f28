"""Prometheus metrics: per-process counters and histograms, the database's gauges at scrape time.

Each app has a registry of its own (tests run several apps in one interpreter). Counters and
histograms count what this process did and carry a `process` label (host:pid): each process
is scraped on its own address, and `sum without (process)` adds them up. Gauges that describe
the database (jobs, deliveries, subscriptions, the outbox) are read from it by the scrape,
carry no `process` label, and are the same whichever process answers.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from service import catalog
from service.outbound import Observe
from service.outbox import Attempt
from service.store import Job, Tx
from service.store.records import Counts

# No `_created` series: in the text format each is one more gauge per labelled series, and
# `rate()` does not need them (the relay is this interpreter's only user of the library).
disable_created_metrics()  # type: ignore[no-untyped-call]  # (unannotated upstream)

KEY = "metrics"  # the key of this app's Metrics in the store's memo (ledger units find it)

PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0)
# A job lasts seconds (an image) to hours (a long video, a provider's queue): up to the timeout.
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 86400)
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From the event to the subscriber's 2xx: milliseconds when all is well, hours through retries.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000)

# A provider call's endpoint as a bounded label: ids in paths become {id}, the catalog's
# generate paths are kept as they are, anything else is "other" (never a raw path).
_MODEL_PATHS = tuple(sorted({m.path for m in catalog.MODELS.values()}, key=len, reverse=True))
_TEMPLATES = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (r"/v2/requests/status/[^/]+$", "/v2/requests/status/{id}"),
        (r"/v1/jobs/[^/]+$", "/v1/jobs/{id}"),
        (r"/v1/assets$", "/v1/assets"),
        (r"/v1/assets/[^/]+$", "/v1/assets/{id}"),
        (r"/v1/uploads$", "/v1/uploads"),
        (r"/v1/uploads/[^/]+/action$", "/v1/uploads/{id}/action"),
        (r"/v1/uploads/[^/]+$", "/v1/uploads/{id}"),
    )
)


def endpoint(method: str, url: str) -> str:
    """`METHOD /path/{id}` of a provider call, from a small fixed set."""
    if method == "PUT":
        return "PUT {upload part}"  # a pre-signed part URL: its path is the credential
    path = urlsplit(url).path
    for known in _MODEL_PATHS:
        if path.endswith(known):
            return f"{method} {known}"
    for pattern, name in _TEMPLATES:
        if pattern.search(path):
            return f"{method} {name}"
    return f"{method} other"


def process_label() -> str:
    """This process among the others writing to the same database: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


M = TypeVar("M", Counter, Gauge, Histogram)


class _Children(Generic[M]):
    """A metric's children by label values, each made once: `labels()` takes a lock and
    checks its arguments on every call; a dict lookup is what the hot paths can afford."""

    __slots__ = ("_made", "_metric", "_process")

    def __init__(self, metric: M, process: str) -> None:
        self._metric: M = metric
        self._process = process
        self._made: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._made.get(values)
        if child is None:
            child = self._made[values] = self._metric.labels(self._process, *values)
        return child


class _Database:
    """The gauges read from the database: the scrape sets `counts` and collects at once."""

    def __init__(self, providers: Iterable[str]) -> None:
        self.providers = tuple(providers)
        self.counts: Counts | None = None
        self.now = 0.0

    def describe(self) -> Iterator[Metric]:
        """The families (names only: the registry checks them against the others)."""
        saved, self.counts = self.counts, Counts({}, {}, {}, 0, 0)
        try:
            yield from self.collect()
        finally:
            self.counts = saved

    def collect(self) -> Iterator[Metric]:
        """The families of the last read."""
        c = self.counts
        if c is None:
            return
        jobs = GaugeMetricFamily(
            "relay_jobs", "Jobs by provider and status.", labels=["provider", "status"]
        )
        for (provider, status), n in sorted(c.jobs.items()):
            jobs.add_metric([provider, status], n)
        deliveries = GaugeMetricFamily(
            "relay_deliveries", "Deliveries by status.", labels=["status"]
        )
        for status, n in sorted(c.deliveries.items()):
            deliveries.add_metric([status], n)
        subscriptions = GaugeMetricFamily(
            "relay_subscriptions", "Subscriptions by status.", labels=["status"]
        )
        for status, n in sorted(c.subscriptions.items()):
            subscriptions.add_metric([status], n)
        yield from (jobs, deliveries, subscriptions)
        yield CounterMetricFamily(
            "relay_callbacks_dropped",
            "Callbacks counted but not stored (per-job cap).",
            value=c.callbacks_dropped,
        )
        yield CounterMetricFamily(
            "relay_events", "Events recorded (the last cursor).", value=c.last_event_id
        )
        in_flight = GaugeMetricFamily(
            "relay_jobs_in_flight",
            "Jobs queued, processing or being submitted, by provider (what RELAY_MAX_IN_FLIGHT"
            " caps).",
            labels=["provider"],
        )
        deferred = GaugeMetricFamily(
            "relay_jobs_deferred",
            "Jobs held back by RELAY_MAX_IN_FLIGHT, waiting to be submitted, by provider.",
            labels=["provider"],
        )
        for family, counted in ((in_flight, c.in_flight), (deferred, c.deferred)):
            for provider in sorted({*self.providers, *counted}):
                family.add_metric([provider], counted.get(provider, 0))
            yield family
        yield GaugeMetricFamily(
            "relay_outbox_depth",
            "Deliveries pending (waiting for their first attempt or a retry).",
            value=c.deliveries.get("pending", 0),
        )
        oldest = 0.0 if c.oldest_pending is None else max(0.0, self.now - c.oldest_pending)
        yield GaugeMetricFamily(
            "relay_outbox_oldest_pending_age_seconds",
            "How long ago the oldest pending delivery was created (0 when none is pending).",
            value=oldest,
        )
        yield GaugeMetricFamily(
            "relay_subscriptions_paused",
            "Subscriptions paused (by hand, or after failing for RELAY_PAUSE_AFTER).",
            value=c.subscriptions.get("paused", 0),
        )


class Metrics:
    """One app's metrics: what this process counts, and the database's gauges per scrape."""

    def __init__(
        self,
        providers: Iterable[str] = (),
        *,
        streams: Callable[[], int] | None = None,
        process: str | None = None,
    ) -> None:
        self.process = process or process_label()
        self.registry = registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        self._database = _Database(providers)
        registry.register(self._database)
        p = self.process

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ("process", *labels), registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(name, doc, ("process", *labels), registry=registry, buckets=buckets)

        self._received = _Children(
            counter(
                "relay_callbacks_received",
                "Provider callbacks answered 200, by what came of them.",
                "outcome",
            ),
            p,
        )
        self._rejected = _Children(
            counter(
                "relay_callbacks_rejected",
                "Provider callbacks refused, by reason (the error code answered).",
                "reason",
            ),
            p,
        )
        self._calls = _Children(
            counter(
                "relay_provider_calls",
                "HTTP requests to providers by provider, endpoint and status (the HTTP status,"
                " or the error when no answer came).",
                "provider",
                "endpoint",
                "status",
            ),
            p,
        )
        self._call_seconds = _Children(
            histogram(
                "relay_provider_call_duration_seconds",
                "Time to a provider's answer (its head), by provider and endpoint.",
                PROVIDER_BUCKETS,
                "provider",
                "endpoint",
            ),
            p,
        )
        self._polls = _Children(
            counter(
                "relay_polls",
                "Status polls of provider jobs, by provider and outcome (answered, error).",
                "provider",
                "outcome",
            ),
            p,
        )
        self._lateness = _Children(
            histogram(
                "relay_poll_lateness_seconds",
                "How long after its due time a poll started, by provider.",
                LATENESS_BUCKETS,
                "provider",
            ),
            p,
        )
        self._worst = Gauge(
            "relay_poll_lateness_max_seconds",
            "The latest a poll of this process has started after its due time.",
            ("process",),
            registry=registry,
        ).labels(p)
        self._worst_seen = 0.0
        self._jobs = _Children(
            histogram(
                "relay_job_duration_seconds",
                "From a job's creation to its end, by model and outcome (its final status),"
                " observed by the process that recorded the end.",
                JOB_BUCKETS,
                "model",
                "outcome",
            ),
            p,
        )
        self._attempts = _Children(
            counter(
                "relay_delivery_attempts",
                "Delivery attempts by kind and outcome (delivered, retrying, throttled, failed:"
                " the schedule is spent or the answer is final).",
                "kind",
                "outcome",
            ),
            p,
        )
        self._attempt_seconds = _Children(
            histogram(
                "relay_delivery_attempt_duration_seconds",
                "How long one delivery attempt took, by kind.",
                ATTEMPT_BUCKETS,
                "kind",
            ),
            p,
        )
        self._latency = _Children(
            histogram(
                "relay_delivery_latency_seconds",
                "From an event to its delivery's success (retries included), by kind.",
                LATENCY_BUCKETS,
                "kind",
            ),
            p,
        )
        if streams is not None:
            Gauge(
                "relay_event_streams",
                "Open GET /v1/events/stream connections in this process.",
                ("process",),
                registry=registry,
            ).labels(p).set_function(streams)

    def set_providers(self, names: Iterable[str]) -> None:
        """The configured providers: their in-flight and deferred gauges show 0, not nothing."""
        self._database.providers = tuple(names)

    # -- what this process does ------------------------------------------------------------

    def callback(self, status: int, answer: Any) -> None:
        """Count a callback by its answer: 200 by outcome, anything else by error code."""
        if status == 200:
            self._received(answer.get("outcome") or "unknown").inc()
            return
        error = answer.get("error") if isinstance(answer, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        self._rejected(code if isinstance(code, str) else str(status)).inc()

    def provider_calls(self, provider: str) -> Observe:
        """What a provider's HTTP client calls with each request's outcome."""

        def observe(
            method: str, url: str, status: int | None, error: str | None, seconds: float
        ) -> None:
            name = endpoint(method, url)
            outcome = str(status) if status is not None else error or "error"
            self._calls(provider, name, outcome).inc()
            self._call_seconds(provider, name).observe(seconds)

        return observe

    def poll(self, provider: str, answered: bool) -> None:
        """Count a status poll: answered, or failed (network, HTTP error, a bad answer)."""
        self._polls(provider, "answered" if answered else "error").inc()

    def poll_late(self, provider: str, seconds: float) -> None:
        """A poll started `seconds` after it was due."""
        seconds = max(0.0, seconds)
        self._lateness(provider).observe(seconds)
        if seconds > self._worst_seen:
            self._worst_seen = seconds
            self._worst.set(seconds)

    def job_ended(self, job: Job, now: float) -> None:
        """A job reached its final status at `now`."""
        self._jobs(job.model, str(job.status)).observe(max(0.0, now - job.created_at))

    def delivery(self, kind: str, attempt: Attempt, age: float) -> None:
        """Count a recorded delivery attempt; `age` is the time since its event."""
        if attempt.delivered:
            outcome = "delivered"
            self._latency(kind).observe(max(0.0, age))
        elif attempt.retry_at is None:
            outcome = "failed"
        else:
            outcome = "throttled" if attempt.throttled else "retrying"
        self._attempts(kind, outcome).inc()
        if attempt.latency_ms > 0:
            self._attempt_seconds(kind).observe(attempt.latency_ms / 1000)

    # -- the scrape ------------------------------------------------------------------------

    def render(self, counts: Counts, now: float, accept: str = "") -> tuple[bytes, str]:
        """The exposition (OpenMetrics when the scraper asks for it) and its content type."""
        encode, content_type = choose_encoder(accept)
        # No await between setting the read and encoding it: two scrapes cannot interleave.
        self._database.counts, self._database.now = counts, now
        return encode(self.registry), content_type


def install(tx: Tx, metrics: Metrics) -> None:
    """Let this store's units find `metrics` (the job ends recorded in `ledger`)."""
    tx.memo[KEY] = metrics


def job_ended(tx: Tx, job: Job, now: float) -> None:
    """Observe a job's duration once the unit that ends it has committed."""
    found = tx.memo.get(KEY)
    if isinstance(found, Metrics):
        tx.after_commit(lambda: found.job_ended(job, now))
