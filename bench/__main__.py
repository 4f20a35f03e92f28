"""`python -m bench [names...] [--quick]`: run the benchmarks, print one table, write it down.

A full run (every benchmark, not --quick) writes bench/RESULTS.md; a partial or quick run
writes bench/out/RESULTS-partial.md unless --output says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench.common import OUT, PINNING, ROOT, Outcome, Row, log, machine_lines

BENCHMARKS = {
    "ingest": "1. Callback ingest",
    "latency": "2. End-to-end latency",
    "fanout": "3. Fan-out",
    "polling": "4. Polling at scale",
    "biglog": "5. Big log",
    "startup": "6. Start-up",
    "httpclients": "7. HTTP clients",
    "pgdrivers": "8. PostgreSQL drivers",
    "postgres": "9. PostgreSQL",
    "submit": "10. Submissions",
    "ui": "11. Dashboard",
    "archive": "12. Archiving",
    "archive_s3": "13. S3 archive",
}


def table(rows: list[Row]) -> str:
    head = ["Benchmark", "Metric", "Measured", "Baseline (same run)", "Ratio", "Goal", "Result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.bench, r.metric, r.value, r.baseline, r.ratio, r.goal, r.result]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def report(
    rows: list[Row], notes: list[str], quick: bool, names: list[str], flags: list[str], took: float
) -> str:
    failed = sum(r.result == "FAIL" for r in rows)
    passed = sum(r.result == "PASS" for r in rows)
    title = "# Benchmark results" + (" (quick smoke run: durations shortened)" if quick else "")
    parts = [
        title,
        "",
        f"`{' '.join(['python -m bench', *names, *flags])}`, "
        f"{time.strftime('%Y-%m-%d')}, {took / 60:.1f} min in all.",
        "",
        *machine_lines(),
        "",
        table(rows),
        "",
        f"{passed} PASS, {failed} FAIL.",
        "",
        "## How each number was measured",
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    return "\n".join(parts)


async def run_one(name: str, quick: bool) -> Outcome:
    module = importlib.import_module(f"bench.{name}")
    return await module.run(quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    parser.add_argument("--output", type=Path, help="where to write the results (markdown)")
    parser.add_argument(
        "--unpinned", action="store_true", help="no taskset: servers and load share both cores"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when any goal fails")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    PINNING["on"] = not args.unpinned
    full = set(names) == set(BENCHMARKS) and not args.quick and not args.unpinned
    output = args.output or (ROOT / "bench" / "RESULTS.md" if full else OUT / "RESULTS-partial.md")
    rows: list[Row] = []
    notes: list[str] = []
    started = time.monotonic()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        for name in names:
            log(f"=== {BENCHMARKS[name]} ===")
            t0 = time.monotonic()
            try:
                outcome = runner.run(run_one(name, args.quick))
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                outcome = Outcome(
                    [
                        Row(
                            BENCHMARKS[name],
                            "the benchmark crashed",
                            f"{type(exc).__name__}: {exc}",
                            result="FAIL",
                        )
                    ]
                )
            rows += outcome.rows
            notes += outcome.notes
            log(f"{BENCHMARKS[name]}: {time.monotonic() - t0:.0f} s")
    flags = [f for f, on in (("--quick", args.quick), ("--unpinned", args.unpinned)) if on]
    text = report(rows, notes, args.quick, args.names, flags, time.monotonic() - started)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
    log(f"written to {output}")
    crashed = any(r.metric == "the benchmark crashed" for r in rows)
    failed = any(r.result == "FAIL" for r in rows)
    return 1 if crashed or (args.strict and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
