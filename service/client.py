"""Client commands: talk to a running relay over its HTTP API (submit, jobs, ...)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "canceled")


def _value(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, true, null, ...), else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def pairs(items: list[str]) -> dict[str, Any]:
    """`key=value` arguments as a dict; ValueError names a malformed one."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item!r}")
        out[key] = _value(value)
    return out


class Client:
    """A small synchronous client of the relay's /v1 API."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        base = url or os.environ.get("RELAY_URL", "http://127.0.0.1:8000")
        token = token or os.environ.get("RELAY_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base.rstrip("/"), headers=headers, timeout=60)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; raises SystemExit with the error envelope's message on failure."""
        try:
            answer = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SystemExit(f"upscale-relay: cannot reach {self.http.base_url}: {exc}") from exc
        body = answer.json() if answer.content else None
        if answer.is_error:
            error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            detail = json.dumps(error.get("details"), indent=2) if error.get("details") else ""
            raise SystemExit(
                f"upscale-relay: {answer.status_code} {error.get('code', '')}: "
                f"{error.get('message', answer.text)}\n{detail}".rstrip()
            )
        return body


def _show(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def submit(
    client: Client,
    model: str,
    params: dict[str, Any],
    metadata: dict[str, Any],
    wait: bool,
    limit: float,
) -> int:
    """POST /v1/jobs; with `wait`, follow the job's events until it is terminal."""
    job = client.call(
        "POST", "/v1/jobs", json={"model": model, "input": params, "metadata": metadata}
    )
    print(f"{job['id']} {job['status']}", file=sys.stderr)
    if not wait:
        _show(job)
        return 0
    deadline = time.monotonic() + limit
    after = 0
    while job["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            print(f"{job['id']} still {job['status']} after {limit:g} s", file=sys.stderr)
            return 1
        page = client.call("GET", f"/v1/jobs/{job['id']}/events", params={"after": after})
        for event in page["data"]:
            print(f"  {event['type']} [{event['source']}]", file=sys.stderr)
        after = int(page["next_cursor"])
        job = client.call("GET", f"/v1/jobs/{job['id']}")
        if job["status"] not in TERMINAL:
            time.sleep(0.5)
    _show(job)
    return 0 if job["status"] == "succeeded" else 1


def listing(client: Client, path: str, params: dict[str, Any], columns: list[str]) -> int:
    """GET a list route and print one row per item."""
    page = client.call("GET", path, params={k: v for k, v in params.items() if v})
    for item in page["data"]:
        print("  ".join(str(item.get(c, "")) for c in columns))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a client command parsed by service.cli."""
    relay = Client(args.url, args.token)
    try:
        if args.command == "submit":
            try:
                params, meta = pairs(args.input), pairs(args.meta)
            except ValueError as exc:
                print(f"upscale-relay: {exc}", file=sys.stderr)
                return 2
            return submit(relay, args.model, params, meta, args.wait, args.timeout)
        if args.command == "jobs":
            return listing(
                relay,
                "/v1/jobs",
                {"status": args.status, "model": args.model},
                ["id", "status", "model", "created_at"],
            )
        if args.command == "subscriptions":
            return listing(relay, "/v1/subscriptions", {}, ["id", "kind", "status", "url"])
        return listing(
            relay,
            "/v1/deliveries",
            {"status": args.status, "subscription_id": args.subscription_id},
            ["id", "status", "event_type", "attempts", "last_status_code"],
        )
    finally:
        relay.close()
