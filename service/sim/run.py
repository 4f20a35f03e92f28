"""`upscale-relay sim`: the simulated providers, subscribers and media as long-lived servers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from service.sim.chat import ChatSim
from service.sim.media import MediaSim
from service.sim.pixazo import PixazoSim
from service.sim.scenario import ScenarioSim
from service.sim.subscriber import Subscriber

CHAT_KINDS = ("slack", "discord", "teams", "google_chat")
# Fixed asset ids, so the README's examples can name them; "fail" makes Scenario's sim fail.
ASSETS = (
    ("asset_sim_photo", "image/png", "photo.png"),
    ("asset_sim_clip", "video/mp4", "clip.mp4"),
    ("asset_sim_fail", "image/png", "fail.png"),
)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Sims:
    """Every simulator behind one ASGI app, each under its own path."""

    def __init__(self, base: str, queue_seconds: float, process_seconds: float) -> None:
        self.pixazo = PixazoSim(
            queue_seconds=queue_seconds, process_seconds=process_seconds, base_url=f"{base}/pixazo"
        )
        self.scenario = ScenarioSim(
            queue_seconds=queue_seconds,
            process_seconds=process_seconds,
            base_url=f"{base}/scenario",
        )
        self.hook = Subscriber()
        self.failing_hook = Subscriber(status=500)
        self.chats = {kind: ChatSim(kind) for kind in CHAT_KINDS}
        self.media = MediaSim()
        for asset_id, mime, name in ASSETS:
            self.scenario.add_asset(None, mime, name=name, asset_id=asset_id)
        self.prefixes: list[tuple[str, ASGIApp]] = [
            ("/pixazo", self.pixazo.app),
            ("/scenario", self.scenario.app),
            ("/hook", self.hook.app),
            ("/failing-hook", self.failing_hook.app),
            *((f"/{kind}", chat.app) for kind, chat in self.chats.items()),
        ]

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a request to the simulator its first path segment names (else the media)."""
        path: str = scope.get("path", "")
        for prefix, target in self.prefixes:
            if path == prefix or path.startswith(f"{prefix}/"):
                # as starlette's Mount does, but `/hook` itself reaches the receiver too
                root = scope.get("root_path", "") + prefix
                inner = dict(scope, root_path=root, path=root + (path[len(prefix) :] or "/"))
                await target(inner, receive, send)
                return
        await self.media.app(scope, receive, send)

    async def aclose(self) -> None:
        """Stop the providers' background work (callbacks, uploads)."""
        await self.pixazo.aclose()
        await self.scenario.aclose()


def environment(base: str, relay_url: str, token: str) -> list[tuple[str, str]]:
    """The variables to export for a `serve` (and the README's examples) using the sims."""
    return [
        ("PIXAZO_BASE_URL", f"{base}/pixazo"),
        ("PIXAZO_API_KEY", "sim-pixazo-key"),
        ("SCENARIO_BASE_URL", f"{base}/scenario"),
        ("SCENARIO_API_KEY", "sim-key"),
        ("SCENARIO_API_SECRET", "sim-secret"),
        ("RELAY_PUBLIC_URL", relay_url),
        # every simulator and media URL is on loopback, which the relay refuses by default
        ("RELAY_ALLOW_PRIVATE_TARGETS", "1"),
        # simulated jobs take seconds: poll them as often
        ("RELAY_POLL_MIN", "0.5"),
        ("RELAY_POLL_MAX", "2"),
        ("RELAY_API_TOKENS", token),
        ("RELAY_URL", relay_url),
        ("RELAY_TOKEN", token),
        ("TOKEN", token),
        ("HOOK_URL", f"{base}/hook"),
        ("FAILING_HOOK_URL", f"{base}/failing-hook"),
        ("SLACK_URL", f"{base}/slack/services/T000/B000/XXXX"),
        ("IMAGE_URL", f"{base}/media/photo.png"),
        ("VIDEO_URL", f"{base}/media/clip.mp4"),
    ]


def banner(base: str, relay_url: str, token: str) -> str:
    """What `sim` prints: the export lines, then what each simulated thing is."""
    lines = [
        f"# upscale-relay sim: simulated providers and subscribers on {base} (Ctrl-C to stop).",
        "# Export these in the shells that run `upscale-relay serve` and the examples:",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in environment(base, relay_url, token)]
    lines += [
        "#",
        "# Scenario assets: asset_sim_photo (image), asset_sim_clip (video),",
        "#   asset_sim_fail (an image whose job fails)",
        "# Pixazo media: any URL; one with sim=fail in it makes the job fail",
        f"# Media URLs: {base}/media/<name>.png|jpg|webp|mp4|mov (missing* answers 404)",
        f"# Webhook receivers: $HOOK_URL answers 200, $FAILING_HOOK_URL 500; chat sinks "
        f"{base}/slack|discord|teams|google_chat/...",
    ]
    return "\n".join(lines)


async def _report(sims: Sims, out: Any) -> None:
    """Print each notification the simulated receivers accept, as it arrives."""
    seen: dict[str, int] = {}
    while True:
        await asyncio.sleep(0.3)
        sinks: list[tuple[str, list[Any]]] = [("webhook", sims.hook.received)]
        sinks += [(kind, chat.received) for kind, chat in sims.chats.items()]
        for name, received in sinks:
            for item in received[seen.get(name, 0) :]:
                body = item.json if name == "webhook" else item
                if name == "webhook" and isinstance(body, dict):
                    data = body.get("data") or {}
                    text = f"{body.get('type')} {data.get('id', '')} {data.get('status', '')}"
                else:
                    text = str((body or {}).get("text") or (body or {}).get("content") or "")
                print(f"[{name}] received {text.strip()[:120]}", file=out, flush=True)
            seen[name] = len(received)


class _Server(uvicorn.Server):
    """uvicorn's server leaving the signals to `run`, which stops it and exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run(host: str, port: int, relay_url: str, token: str, timing: tuple[float, float]) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(f"upscale-relay: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        print("  choose another port with --port", file=sys.stderr)
        return 1
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{sock.getsockname()[1]}"
    sims = Sims(base, *timing)
    config = uvicorn.Config(
        sims.app, interface="asgi3", log_level="warning", access_log=False, lifespan="off"
    )
    server = _Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    reporter: asyncio.Task[None] | None = None
    try:
        while not server.started:
            if task.done():
                task.result()
                return 1
            await asyncio.sleep(0.01)
        print(banner(base, relay_url, token), flush=True)
        reporter = asyncio.create_task(_report(sims, sys.stdout))
        await stop.wait()
    finally:
        if reporter is not None:
            reporter.cancel()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sims.aclose()
        sock.close()
    print("upscale-relay sim: stopped", file=sys.stderr)
    return 0


def command(args: argparse.Namespace) -> int:
    """Run `upscale-relay sim`."""
    if not is_loopback(args.host):
        print(
            f"upscale-relay: sim listens on loopback only (127.0.0.1, ::1, localhost); "
            f"refusing --host {args.host}",
            file=sys.stderr,
        )
        return 2
    token = args.token or f"sim_{secrets.token_urlsafe(18)}"
    timing = (args.queue_seconds, args.process_seconds)
    return asyncio.run(run(args.host, args.port, args.relay_url.rstrip("/"), token, timing))
