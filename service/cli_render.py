"""How the client commands show things: rich tables, a job's timeline, event lines."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Only these columns fold to fit the width; the others (ids above all: people copy them into
# the next command) are never wrapped or cut.
FOLDING = ("MODEL", "EVENTS", "URL", "DETAIL")
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "canceled": "yellow",
    "paused": "yellow",
    "active": "green",
    "pending": "cyan",
}


def console(*, stderr: bool = False) -> Console:
    """A console sized to the terminal (or $COLUMNS, else 80 when not a terminal)."""
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def styled(status: str) -> str:
    """A status word in its colour (markup; plain when the console has no colour)."""
    style = STATUS_STYLE.get(status)
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


def when(stamp: Any, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An ISO 8601 time (UTC) as `pattern` (as given when it does not parse)."""
    if not isinstance(stamp, str):
        return ""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.strftime(pattern)


def short(stamp: Any) -> str:
    """A time as `MM-DD HH:MM:SS`, narrow enough for a table on an 80-column terminal."""
    return when(stamp, "%m-%d %H:%M:%S")


def percent(value: Any) -> str:
    """A 0-1 progress as a percentage."""
    return f"{float(value) * 100:.0f}%" if isinstance(value, int | float) else ""


def table(headers: list[str], rows: list[list[str]]) -> Table:
    """A table whose id columns stay whole and whose other columns fold to fit the width."""
    out = Table(
        box=box.SIMPLE_HEAD,
        header_style="bold",
        show_edge=False,
        padding=(0, 1, 0, 0),  # with the column rule's space: two spaces between columns
    )
    for header in headers:
        if header in FOLDING:
            out.add_column(header, overflow="fold", min_width=min(len(header), 8))
        else:
            out.add_column(header, no_wrap=True, overflow="ignore")
    for row in rows:
        out.add_row(*row)
    return out


def dump(value: Any) -> None:
    """JSON on stdout, for scripts (`--json`)."""
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def describe(event: dict[str, Any]) -> str:
    """One event's gist: the job's status and progress, a callback's status, an error."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    kind = str(event.get("type", ""))
    if kind.startswith("job.") and data.get("status"):
        text = f"{data['status']} {percent(data.get('progress'))}".strip()
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            text += f": {error.get('code', '')} {error['message']}"
        outputs = data.get("outputs")
        if isinstance(outputs, list) and outputs:
            text += f", {len(outputs)} output(s)"
        return text
    if kind.startswith("callback."):
        return str(data.get("reason") or data.get("status") or "")
    for key in ("message", "error", "reason"):
        if data.get(key):
            return str(data[key])[:200]
    return ""


def event_line(event: dict[str, Any]) -> str:
    """An event as one plain line: time, id, type, source and gist."""
    stamp = when(event.get("created_at"))[11:]
    return (
        f"{stamp} #{event.get('id')} {event.get('type')} [{event.get('source')}] "
        f"{describe(event)}".rstrip()
    )


def timeline(events: list[dict[str, Any]]) -> Table:
    """A job's events as a table."""
    rows = [
        [
            when(e.get("created_at"), "%H:%M:%S"),
            str(e.get("id")),
            escape(str(e.get("type"))),
            escape(str(e.get("source"))),
            escape(describe(e)),
        ]
        for e in events
    ]
    return table(["TIME", "#", "EVENT", "SOURCE", "DETAIL"], rows)


def show_job(out: Console, job: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """A job: its fields, its event timeline and its outputs (one URL a line, uncut)."""
    status = str(job.get("status"))
    out.print(
        f"[bold]{escape(str(job.get('id')))}[/]  {escape(str(job.get('model')))}  "
        f"{styled(status)}  {percent(job.get('progress'))}"
    )
    facts = [
        ("provider", f"{job.get('provider')} {job.get('provider_job_id') or ''}".strip()),
        ("created", when(job.get("created_at"))),
        ("finished", when(job.get("finished_at"))),
        ("cost", "" if job.get("cost") is None else str(job.get("cost"))),
    ]
    error = job.get("error")
    if isinstance(error, dict):
        facts.append(("error", f"{error.get('code')}: {error.get('message')}"))
    for name in ("input", "metadata"):
        value = job.get(name)
        if isinstance(value, dict) and value:
            facts.append((name, ", ".join(f"{k}={json.dumps(v)}" for k, v in value.items())))
    grid = Table.grid(padding=(0, 2, 0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in facts:
        if value:
            grid.add_row(name, escape(value))
    out.print(grid)
    out.print()
    if events:
        out.print(timeline(events))
    else:
        out.print("no events yet")
    outputs = job.get("outputs") or []
    if outputs:
        out.print("\n[bold]outputs[/]")
        for item in outputs:
            # printed plainly, never folded: a URL must stay one copyable line
            print(f"  {item.get('media_type', '')}  {item.get('url', '')}")
