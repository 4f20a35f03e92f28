"""Provider adapters: the ones configured, and the callback rules of those that send callbacks."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from service import netguard, outbound
from service.config import Settings
from service.jobs import CallbackReport
from service.providers import pixazo
from service.providers.base import Provider
from service.providers.pixazo import Pixazo
from service.providers.scenario import Scenario

# Parsing a callback needs no client: a callback for a job is read even when its provider's
# key has since been removed from the configuration.
_CALLBACK_PARSERS = {Pixazo.name: pixazo.parse_callback}


# The variables each provider needs (build() below skips a provider missing any of them),
# with the setting each one fills.
CREDENTIALS: dict[str, tuple[tuple[str, str], ...]] = {
    Pixazo.name: (("PIXAZO_API_KEY", "pixazo_api_key"),),
    Scenario.name: (
        ("SCENARIO_API_KEY", "scenario_api_key"),
        ("SCENARIO_API_SECRET", "scenario_api_secret"),
    ),
}


def missing_variables(provider: str, settings: Settings) -> list[str]:
    """The variables to set before `provider` can be used (all it needs, if none is missing)."""
    needed = CREDENTIALS.get(provider, ())
    missing = [name for name, setting in needed if getattr(settings, setting) is None]
    return missing or [name for name, _ in needed]


def parse_callback(provider: str, body: Any) -> CallbackReport:
    """A callback body for `provider` as a report; LookupError if it sends no callbacks."""
    return _CALLBACK_PARSERS[provider](body)


def build(
    settings: Settings,
    ssl_context: ssl.SSLContext,
    resolve: netguard.Resolver = netguard.system_resolve,
    observe: Callable[[str], outbound.Observe] | None = None,
) -> tuple[dict[str, Provider], list[outbound.Client]]:
    """The adapters whose credentials are configured, by catalog name, and the clients to close;
    `observe(name)` is told of each call to that provider (service.metrics)."""
    clients: list[outbound.Client] = []
    providers: dict[str, Provider] = {}
    if settings.pixazo_api_key is not None:
        client = outbound.provider_client(
            settings.provider_timeout, ssl_context, observe=observe and observe(Pixazo.name)
        )
        clients.append(client)
        providers[Pixazo.name] = Pixazo(
            client, settings.pixazo_base_url, str(settings.pixazo_api_key)
        )
    if settings.scenario_api_key is not None and settings.scenario_api_secret is not None:
        client = outbound.provider_client(
            settings.provider_timeout, ssl_context, observe=observe and observe(Scenario.name)
        )
        # Media URLs are the user's: fetched through the guarded client, never the provider's.
        media_client = outbound.guarded_client(
            settings.provider_timeout,
            ssl_context,
            allow_private=settings.allow_private_targets,
            resolve=resolve,
        )
        clients += [client, media_client]
        providers[Scenario.name] = Scenario(
            client,
            settings.scenario_base_url,
            str(settings.scenario_api_key),
            str(settings.scenario_api_secret),
            settings.scenario_project_id,
            media_client=media_client,
            allow_private_media=settings.allow_private_targets,
            resolve=resolve,
        )
    return providers, clients
