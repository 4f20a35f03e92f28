"""The notification's keys are defined once: the job's data, the schema and templates agree."""

from __future__ import annotations

import pytest

from service import notification, notify
from service.http import jobs as api
from service.jobs import Status
from service.outbox import notification as body_of
from service.store import Event, Job
from tests.conftest import SPEC_DATA_KEYS


def make_job(**fields: object) -> Job:
    values: dict[str, object] = {
        "seq": 1,
        "id": "job_abc",
        "model": "scenario/upscale-image",
        "provider": "scenario",
        "status": Status.SUCCEEDED,
        "progress": 1.0,
        "input": {"image_url": "https://example.com/in.png"},
        "metadata": {"tenant": "acme"},
        "outputs": [{"url": "https://cdn.example.com/out.png", "media_type": "image/png"}],
        "error": None,
        "provider_job_id": "job_x",
        "cost": 0.25,
        "webhook": None,
        "webhook_events": None,
        "created_at": 1_795_000_000.0,
        "updated_at": 1_795_000_014.0,
        "finished_at": 1_795_000_014.0,
        "next_poll_at": None,
        "poll_attempt": 0,
        "poll_errors": 0,
        "callback_status": None,
    }
    values.update(fields)
    return Job(**values)  # type: ignore[arg-type]


def test_the_keys_are_the_spec_keys_plus_cost_in_one_order() -> None:
    assert notification.DATA_KEYS == (*SPEC_DATA_KEYS[:9], "cost", *SPEC_DATA_KEYS[9:])
    assert tuple(notification.DATA_PROPERTIES) == notification.DATA_KEYS


def test_the_job_carries_exactly_the_keys() -> None:
    data = make_job().notification_data()
    assert tuple(data) == notification.DATA_KEYS
    assert data["cost"] == 0.25 and data["created_at"] == "2026-11-18T11:06:40.000Z"


def test_the_body_keeps_the_keys_and_drops_the_rest() -> None:
    data = {**make_job().notification_data(), "provider_status": "success", "callback": {"x": 1}}
    event = Event(7, "job_abc", "job.succeeded", "poll", 1_795_000_014.0, data)
    body = body_of(event)
    assert tuple(body["data"]) == notification.DATA_KEYS
    assert body == {
        "type": "job.succeeded",
        "timestamp": "2026-11-18T11:06:54.000Z",
        "data": body["data"],
    }
    assert notification.pick({"id": "job_1"}) == {
        **dict.fromkeys(notification.DATA_KEYS),
        "id": "job_1",
    }


def test_the_job_schema_requires_every_key_and_narrows_three() -> None:
    required = api.JOB_SCHEMA["required"]
    assert required[: len(notification.DATA_KEYS)] == list(notification.DATA_KEYS)
    properties = api.JOB_SCHEMA["properties"]
    for key in notification.DATA_KEYS:
        if key in ("model", "status", "provider"):
            assert "enum" in properties[key], key
        else:
            assert properties[key] is notification.DATA_PROPERTIES[key], key


@pytest.mark.parametrize("key", notification.DATA_KEYS)
def test_a_template_may_name_every_key(key: str) -> None:
    placeholder = f"{{data.{key}}}"
    if key in ("outputs",):
        placeholder = "{data.outputs[0].url}"
    elif key in ("error",):
        placeholder = "{data.error.code}"
    elif key == "metadata":
        placeholder = "{data.metadata.tenant}"
    assert notify.validate_template(placeholder) == []


def test_a_template_names_the_cost() -> None:
    body = body_of(
        Event(1, "job_abc", "job.succeeded", "poll", 0.0, make_job().notification_data())
    )
    assert notify.render_template("{data.cost} credits", body) == "0.25 credits"
    slack = notify.render("slack", body, "{data.model}: {data.cost} credits")
    assert slack["text"] == "scenario/upscale-image: 0.25 credits"
    problem = notify.validate_template("{data}")[0]
    assert "provider_job_id, cost, created_at" in problem
