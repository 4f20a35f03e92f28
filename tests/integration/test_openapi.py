"""GET /openapi.json: every route is in it, and its limits are the ones that validate."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from service import catalog, ui
from service.http import callbacks, openapi, subscriptions
from tests.conftest import Running, StartRelay


def served(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(path, method) of every route the app answers, walked independently of openapi.py."""
    out: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount) and prefix + route.path == ui.PREFIX:
            continue  # the dashboard's HTML pages are not the API (tests/integration/test_ui.py)
        if isinstance(route, Mount):
            out |= served(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            out |= {(prefix + route.path, m) for m in route.methods or () if m != "HEAD"}
    return out


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, m.upper()) for path, ops in document["paths"].items() for m in ops}


def missing(routes: list[Any], document: dict[str, Any]) -> set[tuple[str, str]]:
    callback = {(callbacks.PREFIX + "{token}", "POST")}  # served by middleware ahead of the router
    return (served(routes) | callback) - documented(document)


@pytest.fixture
async def guarded(start_relay: StartRelay) -> Running:
    return await start_relay(RELAY_API_TOKENS="secret-token")


async def test_the_document_is_public_and_names_every_route(guarded: Running) -> None:
    async with httpx.AsyncClient(base_url=guarded.url) as anon:
        answer = await anon.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"] == "3.1.0"
    assert missing(guarded.app.routes, document) == set()
    assert ("/openapi.json", "GET") in documented(document)
    assert ("/hooks/pixazo/{token}", "POST") in documented(document)
    jobs = document["paths"]["/v1/jobs"]["post"]
    assert jobs["security"] == [{"bearer": []}]
    assert {"400", "401", "413", "422", "202"} <= set(jobs["responses"])
    error = jobs["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == openapi.ERROR_SCHEMA
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_a_route_without_a_declaration_is_caught() -> None:
    async def undocumented(request: Any) -> Any:
        raise NotImplementedError

    routes = [
        Route("/healthz", undocumented, methods=["GET"]),
        Mount("/v1", routes=[Route("/extra/{id}", undocumented, methods=["GET", "DELETE"])]),
    ]
    document = openapi.document(routes)
    assert missing(routes, document) == {
        ("/v1/extra/{id}", "GET"),
        ("/v1/extra/{id}", "DELETE"),
    }


def test_job_bodies_are_generated_from_the_catalog() -> None:
    schema = catalog.request_schema()
    by_model = {alt["properties"]["model"]["const"]: alt for alt in schema["oneOf"]}
    assert set(by_model) == set(catalog.MODELS)
    for model_id, model in catalog.MODELS.items():
        inputs = by_model[model_id]["properties"]["input"]
        assert inputs["additionalProperties"] is False
        assert set(inputs["properties"]) == {p.name for p in model.params}
        assert inputs["required"] == [p.name for p in model.params if p.required]
        for param in model.params:
            shown = inputs["properties"][param.name]
            assert shown["type"] == param.type
            assert shown.get("enum") == (list(param.enum) if param.enum else None)
            if param.minimum is not None:
                assert shown["minimum"] == param.minimum
            if param.maximum is not None:
                assert shown["maximum"] == param.maximum
            if param.media:
                assert shown["maxLength"] == catalog.MAX_URL


def test_subscription_bodies_come_from_the_validating_table() -> None:
    created = subscriptions.body_schema(creating=True)
    patched = subscriptions.body_schema(creating=False)
    assert set(created["properties"]) == set(subscriptions.FIELDS)
    assert set(patched["properties"]) == set(subscriptions.FIELDS) - {"kind"}
    assert created["properties"]["events"]["maxItems"] == subscriptions.MAX_EVENTS
    assert created["properties"]["url"]["maxLength"] == 2048


async def test_every_documented_integer_bound_is_the_enforced_one(relay: Running) -> None:
    document = (await relay.client.get("/openapi.json")).json()
    checked = 0
    for path, ops in document["paths"].items():
        if "get" not in ops or "{" in path:
            continue
        for param in ops["get"].get("parameters", []):
            schema = param["schema"]
            if param["in"] != "query" or schema["type"] != "integer":
                continue
            name = param["name"]
            above = await relay.client.get(path, params={name: str(schema["maximum"] + 1)})
            assert above.status_code == 400, (path, name)
            below = await relay.client.get(path, params={name: str(schema["minimum"] - 1)})
            assert below.status_code == 400, (path, name)
            # the top wait is a real minute, the top max_seconds a day; a stream must end
            bounded = {"max_seconds": "0"} if path.endswith("/stream") else {}
            if name not in ("wait", "max_seconds"):
                params = {**bounded, name: str(schema["maximum"])}
                top = await relay.client.get(path, params=params)
                assert top.status_code == 200, (path, name, top.text)
            checked += 1
    assert checked >= 9
