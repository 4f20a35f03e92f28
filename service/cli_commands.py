"""The client commands' work: call the relay, show the answer, choose the exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from service import cli_render as render
from service.client import Client, RelayError, Unreachable, UsageError, base_url, pairs

# Exit codes: 0 done (the job succeeded), 1 refused by the relay or the job failed or was
# canceled, 2 bad usage, 3 still running at --timeout, 4 the relay could not be reached.
OK, FAILED, USAGE, RUNNING, UNREACHABLE = 0, 1, 2, 3, 4
EVENT_PAGE = 100
WIDE = 132  # columns
Handler = Callable[[Client, argparse.Namespace], int]


def _client(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """A handler run with a client; errors become a message and an exit code, no traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            relay = Client(base_url(getattr(args, "url", None)), getattr(args, "token", None))
        except UsageError as exc:
            return _fail(str(exc), USAGE)
        try:
            return handler(relay, args)
        except UsageError as exc:
            return _fail(str(exc), USAGE)
        except Unreachable as exc:
            return _fail(str(exc), UNREACHABLE)
        except RelayError as exc:
            return _fail(_refusal(exc), FAILED)
        except KeyboardInterrupt:
            return _fail("interrupted", 130)
        except BrokenPipeError:
            # the reader left (`| head`): no traceback, and none at exit when flushing either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return FAILED
        finally:
            relay.close()

    return run


def _fail(message: str, code: int) -> int:
    print(f"upscale-relay: {message}", file=sys.stderr)
    return code


def _refusal(exc: RelayError) -> str:
    """The error envelope as lines: status, code, message, then each named problem."""
    lines = [f"{exc.status} {exc.code}: {exc.message}"]
    details = exc.details
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict):
                lines.append(f"  {item.get('field', '')}: {item.get('message', '')}")
    elif isinstance(details, dict):
        lines += [f"  {k}: {v}" for k, v in details.items()]
    if exc.status == 401:
        lines.append("  pass --token or set RELAY_TOKEN (one of the relay's RELAY_API_TOKENS)")
    return "\n".join(lines)


def _wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def cmd_submit(relay: Client, args: argparse.Namespace) -> int:
    """POST /v1/jobs; with --wait, follow the job and exit by its outcome."""
    from service import cli_wait

    body = {"model": args.model, "input": pairs(args.input), "metadata": pairs(args.meta)}
    try:
        job = relay.call("POST", "/v1/jobs", json=body)
    except RelayError as exc:
        # refused as given (422: nothing was created) is a usage error: fix the command
        return _fail(_refusal(exc), USAGE if exc.status == 422 and not exc.job_id else FAILED)
    if not args.wait:
        if _wants_json(args):
            render.dump(job)
        else:
            print(job["id"])
            print(
                f"{job['id']} {job['status']}: follow it with `upscale-relay jobs show "
                f"{job['id']}`",
                file=sys.stderr,
            )
        return OK
    return cli_wait.follow(relay, job, args.timeout, as_json=_wants_json(args))


def _page(relay: Client, path: str, args: argparse.Namespace, **params: Any) -> Any:
    query = {k: v for k, v in params.items() if v} | {"limit": args.limit}
    if args.cursor:
        query["cursor"] = args.cursor
    return relay.call("GET", path, params=query)


def _listing(args: argparse.Namespace, page: Any, noun: str, headers: list[str], row: Any) -> int:
    if _wants_json(args):
        render.dump(page)
        return OK
    out = render.console()
    items = page.get("data") or []
    if not items:
        filtered = any(getattr(args, k, None) for k in ("status", "model", "subscription_id"))
        more = " match" if filtered else (" on this page" if args.cursor else " yet")
        out.print(f"no {noun}{more}")
        return OK
    out.print(render.table(headers, [row(item) for item in items]))
    if page.get("next_cursor"):
        out.print(f"more: add --cursor {page['next_cursor']}")
    return OK


def cmd_jobs(relay: Client, args: argparse.Namespace) -> int:
    """GET /v1/jobs as a table."""
    page = _page(relay, "/v1/jobs", args, status=args.status, model=args.model)
    return _listing(
        args,
        page,
        "jobs",
        ["ID", "STATUS", "MODEL", "DONE", "CREATED (UTC)"],
        lambda j: [
            j["id"],
            render.styled(str(j.get("status"))),
            str(j.get("model")),
            render.percent(j.get("progress")),
            render.short(j.get("created_at")),
        ],
    )


def job_events(relay: Client, job_id: str) -> list[dict[str, Any]]:
    """Every event of a job, page by page."""
    events: list[dict[str, Any]] = []
    after = "0"
    while True:
        query = {"after": after, "limit": EVENT_PAGE}
        page = relay.call("GET", f"/v1/jobs/{job_id}/events", params=query)
        events += page["data"]
        if len(page["data"]) < EVENT_PAGE:
            return events
        after = str(page["next_cursor"])


def cmd_show(relay: Client, args: argparse.Namespace) -> int:
    """A job, its event timeline and outputs."""
    job = relay.call("GET", f"/v1/jobs/{args.id}")
    events = job_events(relay, args.id)
    if _wants_json(args):
        render.dump({"job": job, "events": events})
        return OK
    render.show_job(render.console(), job, events)
    return OK


def _sub_row(s: dict[str, Any]) -> list[str]:
    status = str(s.get("status") or "")
    return [
        s["id"],
        str(s.get("kind")),
        render.styled(status),
        ", ".join(s.get("events") or []),
        str(s.get("url")),
    ]


def cmd_subscriptions(relay: Client, args: argparse.Namespace) -> int:
    """GET /v1/subscriptions as a table."""
    page = _page(relay, "/v1/subscriptions", args)
    return _listing(
        args, page, "subscriptions", ["ID", "KIND", "STATUS", "EVENTS", "URL"], _sub_row
    )


def cmd_subscription_add(relay: Client, args: argparse.Namespace) -> int:
    """POST /v1/subscriptions; a webhook's secret is printed this once."""
    body: dict[str, Any] = {"url": args.url_, "kind": args.kind}
    if args.events:
        body["events"] = [e.strip() for e in args.events.split(",") if e.strip()]
    if args.model:
        body["filter"] = {"models": args.model}
    for name in ("template", "description"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    sub = relay.call("POST", "/v1/subscriptions", json=body)
    if _wants_json(args):
        render.dump(sub)
        return OK
    out = render.console()
    out.print(render.table(["ID", "KIND", "STATUS", "EVENTS", "URL"], [_sub_row(sub)]))
    if sub.get("secret"):
        print(f"secret {sub['secret']}")
        print("  verify deliveries with it (Standard Webhooks); it is not shown again here")
    return OK


def cmd_subscription_action(relay: Client, args: argparse.Namespace) -> int:
    """pause | resume | test | remove one subscription."""
    path = f"/v1/subscriptions/{args.id}"
    if args.action == "remove":
        relay.call("DELETE", path)
        print(f"{args.id} removed")
        return OK
    if args.action == "test":
        delivery = relay.call("POST", f"{path}/test")
        print(f"{args.id}: test delivery {delivery['id']} {delivery.get('status', '')}".rstrip())
        print(f"  see it with `upscale-relay deliveries --subscription {args.id}`")
        return OK
    sub = relay.call("PATCH", path, json={"paused": args.action == "pause"})
    if _wants_json(args):
        render.dump(sub)
    else:
        print(f"{args.id} {sub.get('status')}")
    return OK


def _delivery_row(d: dict[str, Any]) -> list[str]:
    return [
        d["id"],
        render.styled(str(d.get("status"))),
        str(d.get("event_type", "")),
        str(d.get("attempts", "")),
        str(d.get("last_status_code") or ""),
        str(d.get("job_id") or ""),
        str(d.get("subscription_id") or ""),
    ]


def cmd_deliveries(relay: Client, args: argparse.Namespace) -> int:
    """GET /v1/deliveries as a table."""
    page = _page(
        relay,
        "/v1/deliveries",
        args,
        status=args.status,
        subscription_id=args.subscription_id,
    )
    headers = ["ID", "STATUS", "EVENT", "TRIES", "LAST", "JOB", "SUBSCRIPTION"]
    # the job and subscription ids only where they fit whole (--subscription filters)
    keep = len(headers) if render.console().width >= WIDE else 5
    return _listing(args, page, "deliveries", headers[:keep], lambda d: _delivery_row(d)[:keep])


def cmd_retry(relay: Client, args: argparse.Namespace) -> int:
    """POST /v1/deliveries/{id}/retry."""
    delivery = relay.call("POST", f"/v1/deliveries/{args.id}/retry")
    if _wants_json(args):
        render.dump(delivery)
    else:
        print(f"{delivery['id']} {delivery.get('status', '')}: delivering again now")
    return OK


submit = _client(cmd_submit)
jobs = _client(cmd_jobs)
show = _client(cmd_show)
subscriptions = _client(cmd_subscriptions)
subscription_add = _client(cmd_subscription_add)
subscription_action = _client(cmd_subscription_action)
deliveries = _client(cmd_deliveries)
retry = _client(cmd_retry)
