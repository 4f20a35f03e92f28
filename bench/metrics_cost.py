"""`python -m bench.metrics_cost`: what the metrics add per callback, per provider call, per
delivery attempt and per job end, in ns (perf_counter_ns, median of rounds, an empty method
call of the same shape as the baseline)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from service import metrics
from service.outbox import Attempt

ROUNDS, N = 15, 100_000


class _Empty:
    def callback(self, status: int, answer: object) -> None:
        return None


def per_call(fn: Callable[[], None]) -> float:
    """Median ns per call of `fn` over ROUNDS rounds of N calls."""
    runs = []
    for _ in range(ROUNDS):
        started = time.perf_counter_ns()
        for _ in range(N):
            fn()
        runs.append((time.perf_counter_ns() - started) / N)
    return statistics.median(runs)


def main() -> None:
    m = metrics.Metrics(["pixazo", "scenario"], process="bench:1")
    empty = _Empty()
    ok = {"ok": True, "outcome": "applied"}
    refused = {"error": {"code": "not_found", "message": "no such callback", "details": None}}
    observe = m.provider_calls("pixazo")
    url = "https://gateway.pixazo.ai/v2/requests/status/seedvr_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    submit = "https://gateway.pixazo.ai/seedvr-upscale/v1/upscale-image/generate"
    attempt = Attempt(200, 12.5, "ok", None, True, None)

    class _Job:
        model, status, created_at = "pixazo/seedvr-image", "succeeded", time.time() - 30

    job = _Job()
    rows = {
        "empty method call (baseline)": per_call(lambda: empty.callback(200, ok)),
        "callback answered 200": per_call(lambda: m.callback(200, ok)),
        "callback refused": per_call(lambda: m.callback(404, refused)),
        "provider call (generate)": per_call(lambda: observe("POST", submit, 202, None, 0.01)),
        "provider call (status poll)": per_call(lambda: observe("GET", url, 200, None, 0.01)),
        "delivery attempt": per_call(lambda: m.delivery("webhook", attempt, 0.05)),
        "job end": per_call(lambda: m.job_ended(job, time.time())),  # type: ignore[arg-type]
        "poll lateness": per_call(lambda: m.poll_late("scenario", 0.003)),
    }
    for name, ns in rows.items():
        print(f"{name:32} {ns:8.0f} ns")


if __name__ == "__main__":
    main()
