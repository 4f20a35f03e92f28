"""The metrics' pure parts: a provider call's endpoint label never carries an id or a secret."""

from __future__ import annotations

import pytest

from service import catalog, metrics


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        (
            "POST",
            "https://gateway.pixazo.ai/seedvr-upscale/v1/upscale-image/generate",
            "POST /seedvr-upscale/v1/upscale-image/generate",
        ),
        (
            "GET",
            "https://gateway.pixazo.ai/v2/requests/status/seedvr_3f2a-77",
            "GET /v2/requests/status/{id}",
        ),
        ("GET", "https://api.cloud.scenario.com/v1/jobs/job_abc123", "GET /v1/jobs/{id}"),
        ("GET", "http://127.0.0.1:8123/prefix/v1/assets/asset_9", "GET /v1/assets/{id}"),
        ("POST", "https://api.cloud.scenario.com/v1/assets", "POST /v1/assets"),
        ("POST", "https://api.cloud.scenario.com/v1/uploads", "POST /v1/uploads"),
        ("GET", "https://api.cloud.scenario.com/v1/uploads/up_1", "GET /v1/uploads/{id}"),
        (
            "POST",
            "https://api.cloud.scenario.com/v1/uploads/up_1/action",
            "POST /v1/uploads/{id}/action",
        ),
        ("PUT", "https://bucket.s3.example/part-1?X-Amz-Signature=secret", "PUT {upload part}"),
        ("GET", "https://gateway.pixazo.ai/something/else/42", "GET other"),
    ],
)
def test_a_provider_call_is_labelled_by_its_endpoint(method: str, url: str, expected: str) -> None:
    assert metrics.endpoint(method, url) == expected


def test_every_catalog_model_has_its_own_generate_endpoint() -> None:
    names = {
        metrics.endpoint("POST", "https://provider.example" + m.path)
        for m in catalog.MODELS.values()
    }
    assert names == {"POST " + m.path for m in catalog.MODELS.values()}


def test_job_durations_and_delivery_outcomes_land_in_their_series() -> None:
    counted = metrics.Metrics(process="host:1")
    counted.callback(200, {"ok": True, "outcome": "applied"})
    counted.callback(404, {"error": {"code": "not_found"}})
    sample = counted.registry.get_sample_value
    assert sample("relay_callbacks_received_total", {"process": "host:1", "outcome": "applied"})
    assert sample("relay_callbacks_rejected_total", {"process": "host:1", "reason": "not_found"})
    assert (
        metrics.Metrics(process="host:2").registry.get_sample_value(
            "relay_callbacks_rejected_total", {"process": "host:2", "reason": "not_found"}
        )
        is None
    )  # another app's registry counts nothing of this one's
