"""The client subcommands' arguments (submit, jobs, subscriptions, deliveries, sim).

Only argparse here: the modules doing the work (httpx, rich, the simulators) are imported
when a command runs, so `serve` and `--help` do not pay for them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

SIM_PORT = 8100


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A handler imported from `module` when it runs."""

    def run(args: argparse.Namespace) -> int:
        handler: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), name
        )
        return handler(args)

    return run


def _sim_parser(sub: Any) -> None:
    sim = sub.add_parser(
        "sim",
        help="run simulated Pixazo, Scenario, subscribers and media on loopback (no keys)",
        description="Run the provider and subscriber simulators on one loopback port until "
        "Ctrl-C, and print the environment for an `upscale-relay serve` pointed at them.",
    )
    sim.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=SIM_PORT, help=f"default {SIM_PORT}")
    sim.add_argument(
        "--relay-url",
        default="http://127.0.0.1:8000",
        help="where the relay will listen, for Pixazo's callbacks (default http://127.0.0.1:8000)",
    )
    sim.add_argument("--token", help="the API token to print (default: a new random one)")
    sim.add_argument("--queue-seconds", type=float, default=1.0, help="time queued (default 1)")
    sim.add_argument("--process-seconds", type=float, default=4.0, help="processing (default 4)")
    sim.set_defaults(run=_lazy("service.sim.run", "command"))


def add_parsers(sub: Any) -> None:
    """Add the client subcommands (and `sim`) to the command line's subparsers."""
    _sim_parser(sub)
    # SUPPRESS: a subcommand's defaults would otherwise reset what its parent parsed
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="the relay ($RELAY_URL, else http://127.0.0.1:8000)",
    )
    common.add_argument("--token", default=argparse.SUPPRESS, help="API token ($RELAY_TOKEN)")
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )

    submit = sub.add_parser("submit", parents=[common], help="submit a job to a running relay")
    submit.add_argument("model", help="e.g. pixazo/seedvr-image")
    submit.add_argument("input", nargs="*", metavar="KEY=VALUE", help="input parameters")
    submit.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    submit.add_argument("--timeout", type=float, default=3600.0, help="with --wait, seconds")
    submit.set_defaults(run=_lazy("service.cli_commands", "submit"))

    jobs = sub.add_parser("jobs", parents=[common], help="list jobs, newest first; jobs show ID")
    jobs.add_argument("--status")
    jobs.add_argument("--model")
    _paging(jobs)
    jobs.set_defaults(run=_lazy("service.cli_commands", "jobs"))
    show = jobs.add_subparsers(dest="action", metavar="show ID").add_parser(
        "show", parents=[common], help="a job with its event timeline and outputs"
    )
    show.add_argument("id")
    show.set_defaults(run=_lazy("service.cli_commands", "show"))

    subs = sub.add_parser(
        "subscriptions", parents=[common], help="list, add, pause, resume, test, remove"
    )
    _paging(subs)
    subs.set_defaults(run=_lazy("service.cli_commands", "subscriptions"))
    actions = subs.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser("add", parents=[common], help="subscribe a URL to job events")
    add.add_argument("url_", metavar="URL")
    add.add_argument(
        "--kind", default="webhook", choices=["webhook", "slack", "discord", "teams", "google_chat"]
    )
    add.add_argument("--events", help="comma-separated, e.g. job.succeeded,job.failed or job.*")
    add.add_argument("--model", action="append", default=[], help="only jobs of this model")
    add.add_argument("--template", help="a chat message template")
    add.add_argument("--description")
    add.set_defaults(run=_lazy("service.cli_commands", "subscription_add"))
    for name, text in (
        ("pause", "hold its deliveries"),
        ("resume", "send its held deliveries"),
        ("test", "send it a job.test delivery"),
        ("remove", "delete it; its pending deliveries are canceled"),
    ):
        one = actions.add_parser(name, parents=[common], help=text)
        one.add_argument("id")
        one.set_defaults(run=_lazy("service.cli_commands", "subscription_action"))

    deliveries = sub.add_parser(
        "deliveries", parents=[common], help="list deliveries; deliveries retry ID"
    )
    deliveries.add_argument("--status")
    deliveries.add_argument("--subscription", dest="subscription_id")
    _paging(deliveries)
    deliveries.set_defaults(run=_lazy("service.cli_commands", "deliveries"))
    retry = deliveries.add_subparsers(dest="action", metavar="retry ID").add_parser(
        "retry", parents=[common], help="deliver again now, with a fresh schedule"
    )
    retry.add_argument("id")
    retry.set_defaults(run=_lazy("service.cli_commands", "retry"))


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    parser.add_argument("--cursor", help="the next page, as printed under the table")
