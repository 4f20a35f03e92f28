"""PostgreSQL beside SQLite: ingest, submit, end-to-end latency and fan-out, 1 and 2 processes.

Three set-ups in one run, each on a fresh database seeded alike: SQLite with one relay
process (the baseline), PostgreSQL with one, PostgreSQL with two sharing one database (the
load alternates between them). A throwaway PostgreSQL server (tests/pgserver.py) runs on
this machine; it and every relay process share core 0, the load and the simulators core 1,
as SQLite and its relay do. `python -m bench postgres [--quick]`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    MAX_AGE,
    SECRET,
    SERVER_CPU,
    Outcome,
    RawClient,
    Row,
    client_core,
    fmt_ms,
    log,
    relay_server,
    serving,
    tmpdir,
)
from bench.fanout import RECEIVERS
from bench.latency import PIXAZO_KEY, Receiver
from bench.pgdrivers import _pin_server
from bench.pgphases import (
    CONNECTIONS,
    NAME,
    RATES,
    Pixazo,
    Setup,
    Sizes,
    add_jobs,
    create,
    fanout,
    ingest,
    latency,
    seed_rows,
    submit,
)
from tests.pgserver import PgServer

# -- the run -------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_server(needed: bool) -> Iterator[PgServer | None]:
    if not needed:
        yield None
        return
    with PgServer() as pg:
        _pin_server(pg)
        yield pg


async def measure(
    s: Setup, sizes: Sizes, pg: PgServer | None, lines: list[str], work: Path, sims: dict[str, Any]
) -> None:
    """Seed a fresh database, start the processes, run the four measurements, stop.

    Submissions come first, before the ingest jobs are added: each one counts the jobs in
    flight at its provider, a count that grows with the table (PERF-NOTES)."""
    rows = seed_rows(sizes)
    database = pg.create_database() if pg is not None else str(work / "relay.db")
    await create(database)
    add_jobs(database, rows["latency"] + rows["fanout"])
    s.m.update(db=database, rows=rows["latency"], fan_rows=rows["fanout"])
    s.m["lat_high"] = sizes.callbacks
    relays = [
        relay_server(
            database,
            work,
            SERVER_CPU,
            PIXAZO_API_KEY=PIXAZO_KEY,
            PIXAZO_BASE_URL=sims["pixazo"],
            RELAY_ALLOW_PRIVATE_TARGETS="1",
            RELAY_MAX_IN_FLIGHT="1000000",  # the submissions are measured, not the cap
        )
        for _ in range(s.procs)
    ]
    clients = [RawClient(0)]
    try:
        for relay in relays:
            relay.start()
        for relay in relays:
            await relay.wait_ready()
        clients = [RawClient(r.port) for r in relays]
        api = [r.url for r in relays]
        await submit(s, clients, sims["pixazo"], sizes.submit_seconds, sizes.submit_tasks)
        add_jobs(database, rows["ingest"])
        await ingest(s, relays, pg, lines, work, sizes.ingest_seconds)
        await latency(s, relays, pg, clients, sims["receiver"], sims["receiver_url"])
        await fanout(s, clients, api, sims["fan"], sims["fan_urls"], sizes.subs)
    finally:
        for client in clients:
            await client.aclose()
        for relay in relays:
            await relay.astop()
        if pg is None:
            for leftover in work.glob("relay.db*"):
                leftover.unlink()


def latency_cell(figures: tuple[Any, ...]) -> str:
    p50, p99, worst, cpu_ms = figures[:4]
    return f"{fmt_ms(p50)} / {fmt_ms(p99)} ({fmt_ms(worst)}); {cpu_ms:.1f} ms"


def cpu_cell(m: dict[str, Any]) -> str:
    relay, pg = m["ingest_cpu_us"]
    return f"relay {relay:.0f} µs + PostgreSQL {pg:.0f} µs" if pg else f"relay {relay:.0f} µs"


def rows_for(setups: list[Setup], sizes: Sizes) -> list[Row]:
    """PostgreSQL's figures (info) against SQLite's, then every set-up's checks."""
    base = setups[0].m
    out: list[Row] = []
    for s in setups[1:]:
        m, on = s.m, f"PostgreSQL, {s.procs} process{'es' * (s.procs > 1)}"
        cells = [
            (
                "callback ingest requests/s (wrk, 32 connections)",
                f"{m['ingest_rps']:,.0f}",
                f"{base['ingest_rps']:,.0f}",
                f"{m['ingest_rps'] / base['ingest_rps']:.2f}x",
            ),
            (
                "callback ingest p50 / p99; server CPU per callback",
                f"{fmt_ms(m['ingest_p50'])} / {fmt_ms(m['ingest_p99'])}; {cpu_cell(m)}",
                f"{fmt_ms(base['ingest_p50'])} / {fmt_ms(base['ingest_p99'])}; {cpu_cell(base)}",
                f"{sum(m['ingest_cpu_us']) / sum(base['ingest_cpu_us']):.1f}x (CPU)",
            ),
            (
                f"POST /v1/jobs submissions/s ({sizes.submit_tasks} in flight); p50 / p99",
                f"{m['submit_rate']:,.0f}; {fmt_ms(m['submit_p50'])} / {fmt_ms(m['submit_p99'])}",
                f"{base['submit_rate']:,.0f}; "
                f"{fmt_ms(base['submit_p50'])} / {fmt_ms(base['submit_p99'])}",
                f"{m['submit_rate'] / base['submit_rate']:.2f}x",
            ),
            *(
                (
                    f"callback → webhook p50 / p99 (max) at {rate:g} jobs/s; server CPU a job",
                    latency_cell(m[f"lat{rate:g}"]),
                    latency_cell(base[f"lat{rate:g}"]),
                    f"{m[f'lat{rate:g}'][1] / base[f'lat{rate:g}'][1]:.1f}x (p99)",
                )
                for rate in RATES
            ),
            (
                f"fan-out of one event to {sizes.subs} webhooks, first (cold) / second",
                f"{fmt_ms(m['fan0'])} / {fmt_ms(m['fan1'])}",
                f"{fmt_ms(base['fan0'])} / {fmt_ms(base['fan1'])}",
                f"{m['fan1'] / base['fan1']:.1f}x (second)",
            ),
        ]
        goals = pg_goals(m) if s.procs == 1 else {}
        for i, (metric, value, baseline, ratio) in enumerate(cells):
            goal, ok = goals.get(i, ("—", None))
            result = "info" if ok is None else Row.verdict(ok)
            out.append(
                Row(NAME, f"{on}: {metric}", value, f"{baseline} (SQLite)", ratio, goal, result)
            )
    for s in setups:
        out += checks(s, sizes)
    return out


def pg_goals(m: dict[str, Any]) -> dict[int, tuple[str, bool]]:
    """The PostgreSQL goals (one process), keyed by the row they judge in `rows_for`.

    Set from what one process measured on this machine with the server on the same core:
    ingest 727/s and fan-out 0.3-0.7 s before the round-trip cuts, latency p99 13-18 ms.
    """
    lat = m[f"lat{RATES[0]:g}"]
    return {
        0: ("≥ 1,000/s", m["ingest_rps"] >= 1000),
        3: (f"p99 ≤ 25 ms at {RATES[0]:g}/s", lat[1] <= 0.025),
        5: ("≤ 1 s (second)", m["fan1"] <= 1.0),
    }


def checks(s: Setup, sizes: Sizes) -> list[Row]:
    """The correctness rows of one set-up: PASS or FAIL."""
    m = s.m
    on = s.label
    fans = [m["fan0_check"], m["fan1_check"]]
    ingest_ok = m["ingest_errors"] == 0 and 0 <= m["ingest_diff"] <= CONNECTIONS
    return [
        Row(
            NAME,
            f"{on}: ingest non-2xx + socket errors; job.processing events - 2xx answers",
            f"{m['ingest_errors']}; {m['ingest_diff']:+d}"
            + (" (WRAPPED: wrk sent more than the seeded jobs)" if m["ingest_wrapped"] else ""),
            goal=f"0; 0 to +{CONNECTIONS}",
            result=Row.verdict(ingest_ok and not m["ingest_wrapped"]),
        ),
        Row(
            NAME,
            f"{on}: submissions not answered 202 (or deferred); jobs recorded - 202 answers",
            f"{m['submit_bad']}; {m['submit_diff']:+d}",
            goal="0; 0",
            result=Row.verdict(m["submit_bad"] == 0 and m["submit_diff"] == 0),
        ),
        *(
            Row(
                NAME,
                f"{on}: latency at {rate:g}/s, missing of {m[f'lat{rate:g}'][4]} "
                "(duplicates, bad signatures, non-200)",
                "{} ({}, {}, {})".format(*m[f"lat{rate:g}"][5]),
                goal="0 (0, 0, 0)",
                result=Row.verdict(not any(m[f"lat{rate:g}"][5])),
            )
            for rate in RATES
        ),
        Row(
            NAME,
            f"{on}: fan-out, missing (duplicates, bad signatures) of {sizes.subs}, per event",
            ", ".join(f"{f[0]} ({f[1]}, {f[2]})" for f in fans),
            goal="0 (0, 0)",
            result=Row.verdict(not any(any(f) for f in fans)),
        ),
    ]


async def run(quick: bool) -> Outcome:
    sizes = (
        Sizes(2.0, 30_000, 2.0, 16, 200, 1000) if quick else Sizes(5.0, 80_000, 5.0, 16, 500, 1000)
    )
    from service.http.callbacks import PREFIX
    from service.tokens import Tokens

    setups = [
        Setup("SQLite, 1 process", 1, False),
        Setup("PostgreSQL, 1 process", 1, True),
        Setup("PostgreSQL, 2 processes", 2, True),
    ]
    tokens = Tokens(SECRET, MAX_AGE)
    ingest_rows = seed_rows(Sizes(0, sizes.ingest_jobs, 0, 0, 0, 0))["ingest"]
    lines = [f"{PREFIX}{tokens.make(r[0])} {r[7]}" for r in ingest_rows]
    version = "?"
    with postgres_server(True) as pg, tmpdir("postgres") as tmp, client_core():
        assert pg is not None
        version = pg.bindir.parent.name
        async with contextlib.AsyncExitStack() as stack:
            pixazo, receiver, fan = Pixazo(), Receiver(), Receiver()
            sims: dict[str, Any] = {
                "pixazo": await stack.enter_async_context(serving(pixazo)),
                "receiver": receiver,
                "receiver_url": await stack.enter_async_context(serving(receiver)),
                "fan": fan,
                "fan_urls": [
                    await stack.enter_async_context(serving(fan)) for _ in range(RECEIVERS)
                ],
            }
            for s in setups:
                log(f"=== {s.label} ===")
                await measure(s, sizes, pg if s.postgres else None, lines, Path(tmp), sims)
    note = (
        f"{NAME}: PostgreSQL {version} on this same machine, started for the run by "
        "tests/pgserver.py (initdb in a temporary folder, loopback TCP, fsync and "
        "synchronous_commit on, default settings otherwise); the relay's psycopg pool at its "
        "default (RELAY_DATABASE_POOL=10, plus one LISTEN connection per process). Three "
        "set-ups in one run, each on a fresh database seeded alike: SQLite with 1 relay process "
        "(the baseline column), PostgreSQL with 1, PostgreSQL with 2 on one database. The "
        "PostgreSQL server and every relay process share core 0 (taskset), as SQLite's relay "
        "and its thread do; wrk, the load and the simulators run on core 1. So the 2-process "
        "rows show what sharing the work costs on the same CPU, not what a second host adds. "
        "Order on each: submissions first, on a database holding only the latency and "
        f"fan-out jobs; then {sizes.ingest_jobs:,} queued jobs are added for ingest (each "
        "submission counts the jobs in flight, a count that grows with the table); then "
        "latency, then fan-out. "
        f"Load is spread by alternating requests: ingest runs one wrk per process (-c"
        f"{CONNECTIONS // 2} each, every other seeded job's URL, {sizes.ingest_seconds:g} s; "
        f"-c{CONNECTIONS} with one process); submissions come from {sizes.submit_tasks} workers "
        f"for {sizes.submit_seconds:g} s, each sending its next POST /v1/jobs to the other "
        "process, to a lean Pixazo generate endpoint answering 202 at once with no callbacks "
        f"(RELAY_MAX_IN_FLIGHT raised so none is deferred); latency is bench 2's method "
        f"({sizes.callbacks} COMPLETED callbacks at {RATES[0]:g}/s, then "
        f"{sizes.callbacks // 5} at {RATES[1]:g}/s, each confirmed with the "
        "status endpoint, to one webhook subscription); fan-out is bench 3's (1000 webhook "
        f"subscriptions on {RECEIVERS} receivers, two events, the second one through the other "
        "process). Server CPU per callback = utime+stime of the relay processes and of every "
        "PostgreSQL process over the wrk run, divided by 2xx answers; server CPU a job, the "
        "same over a paced latency run divided by its callbacks (the window's background work, "
        "heartbeats and scans, included: it weighs more at the lower rate). Duplicates count as "
        "failures here: nothing crashes during the run, so a repeat would mean two processes "
        "did the same work."
    )
    return Outcome(rows_for(setups, sizes), [note])


def main() -> int:
    import sys

    outcome = asyncio.run(run("--quick" in sys.argv[1:]))
    for row in outcome.rows:
        print(f"{row.metric}: {row.value} | {row.baseline} | {row.ratio} | {row.result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
