"""Start-up: `upscale-relay serve` on a fresh database to its first 200 from /healthz, and
`upscale-relay --help`; medians of 5, the console script as a user runs it, unpinned."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench.common import (
    VENV_BIN,
    Outcome,
    Row,
    clean_env,
    fmt_ms,
    log,
    median,
    relay_server,
    tmpdir,
)

RUNS = 5


def time_serve(work: Path, n: int) -> float:
    relay = relay_server(work / f"fresh-{n}" / "relay.db", work, cpu=None, console=True)
    try:
        relay.start()
        return relay.wait_ready_sync(30)
    finally:
        relay.stop()


def time_help(work: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [str(VENV_BIN / "upscale-relay"), "--help"],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        check=False,
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"upscale-relay --help exited {done.returncode}: {done.stderr!r}")
    return took


async def run(quick: bool) -> Outcome:
    with tmpdir("startup") as tmp:
        work = Path(tmp)
        time_help(work)  # the first run may compile bytecode: not counted
        serve = [time_serve(work, n) for n in range(RUNS)]
        helps = [time_help(work) for _ in range(RUNS)]
    log(f"startup: serve {', '.join(fmt_ms(s) for s in serve)}")
    log(f"startup: --help {', '.join(fmt_ms(s) for s in helps)}")
    name = "6. Start-up"
    s, h = median(serve), median(helps)
    rows = [
        Row(
            name,
            f"`upscale-relay serve` to first /healthz 200, median of {RUNS}",
            f"{fmt_ms(s)} (max {fmt_ms(max(serve))})",
            goal="≤ 1.5 s",
            result=Row.verdict(s <= 1.5),
        ),
        Row(
            name,
            f"`upscale-relay --help`, median of {RUNS}",
            f"{fmt_ms(h)} (max {fmt_ms(max(helps))})",
            goal="< 0.3 s",
            result=Row.verdict(h < 0.3),
        ),
    ]
    notes = [
        "Start-up: the console script .venv/bin/upscale-relay, unpinned, each serve on a fresh "
        "temporary database (migrations included), /healthz polled every 5 ms; wall time from "
        "launch. One untimed --help first (bytecode compilation).",
    ]
    return Outcome(rows, notes)
