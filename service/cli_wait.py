"""`submit --wait`: follow a job on the event stream, with a live progress bar on a terminal."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from service import cli_render as render
from service.client import TERMINAL, Client

MAX_STREAM_SECONDS = 86_400  # the stream's own cap on max_seconds


class _Lines:
    """Plain event lines on stderr, where no bar can be drawn (a pipe, a file, a CI log)."""

    def __init__(self) -> None:
        self.console = Console(stderr=True, highlight=False, soft_wrap=True, no_color=True)

    def update(self, status: str, progress: float) -> None:
        """Nothing to redraw: the event lines say it all."""


class _Bar:
    """A rich progress bar on a terminal; event lines scroll above it."""

    def __init__(self, progress: Progress, model: str) -> None:
        self.progress = progress
        self.console = progress.console
        self.model = model
        self.task = progress.add_task(model, total=1.0)

    def update(self, status: str, progress: float) -> None:
        """Move the bar to the job's progress (full once it succeeded)."""
        done = 1.0 if status == "succeeded" else progress
        self.progress.update(
            self.task, completed=done, description=f"{escape(self.model)} {status}"
        )


def _bar(err: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
    )


def _apply(job: dict[str, Any], event: dict[str, Any]) -> None:
    """A job.* event's data is the job at that moment: take its status and progress."""
    data = event.get("data")
    if str(event.get("type", "")).startswith("job.") and isinstance(data, dict):
        for key in ("status", "progress"):
            if key in data:
                job[key] = data[key]


def follow(relay: Client, job: dict[str, Any], limit: float, *, as_json: bool) -> int:
    """Follow `job` until it ends or `limit` seconds pass; 0 succeeded, 1 not, 3 running."""
    try:
        return _follow(relay, job, limit, as_json=as_json)
    except KeyboardInterrupt:
        print(
            f"upscale-relay: stopped following {job['id']}, which goes on; see it with "
            f"`upscale-relay jobs show {job['id']}`",
            file=sys.stderr,
        )
        return 130


def _follow(relay: Client, job: dict[str, Any], limit: float, *, as_json: bool) -> int:
    deadline = time.monotonic() + limit
    job_id = str(job["id"])
    err = Console(stderr=True, highlight=False)
    after = 0
    with contextlib.ExitStack() as stack:
        if err.is_terminal:
            view: _Bar | _Lines = _Bar(stack.enter_context(_bar(err)), str(job["model"]))
        else:
            view = _Lines()
        view.update(job["status"], float(job.get("progress") or 0))
        while job["status"] not in TERMINAL:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            seconds = min(MAX_STREAM_SECONDS, max(1, math.ceil(left)))
            for event in relay.events(job_id, after, seconds):
                after = int(event["id"])
                view.console.print(escape(render.event_line(event)))
                _apply(job, event)
                view.update(job["status"], float(job.get("progress") or 0))
                if job["status"] in TERMINAL:
                    break
            else:
                # the stream ended (its time was up, or the relay is restarting): ask the job,
                # and do not hammer a relay that ends streams at once
                job = relay.call("GET", f"/v1/jobs/{job_id}")
                time.sleep(0.2)
                view.update(job["status"], float(job.get("progress") or 0))
    if job["status"] not in TERMINAL:
        print(
            f"upscale-relay: {job_id} still {job['status']} after {limit:g} s; follow it with "
            f"`upscale-relay jobs show {job_id}`",
            file=sys.stderr,
        )
        return 3
    job = relay.call("GET", f"/v1/jobs/{job_id}")
    if as_json:
        render.dump(job)
    else:
        _summary(job)
    return 0 if job["status"] == "succeeded" else 1


def _summary(job: dict[str, Any]) -> None:
    """The outcome on stdout: a status line, then each output URL (or the error)."""
    out = render.console()
    out.print(f"{escape(str(job['id']))} {render.styled(str(job['status']))}")
    error = job.get("error")
    if isinstance(error, dict):
        print(f"  {error.get('code')}: {error.get('message')}")
    for item in job.get("outputs") or []:
        print(f"  {item.get('media_type', '')}  {item.get('url', '')}")
