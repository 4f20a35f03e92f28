"""RELAY_ARCHIVE=s3://…: a job's outputs streamed from the Pixazo simulator into a real S3
server on loopback (moto's, with auth on) before the job is announced, retried there too."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from service.sim.pixazo import PixazoSim
from tests.conftest import IMAGE_JOB, Running, StartRelay
from tests.integration.helpers import FAST
from tests.integration.test_archive import event_types, succeeded
from tests.s3server import BUCKET, S3Server


async def archiving(
    start_relay: StartRelay, s3: S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> Running:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)  # the usual AWS variables, read by the bucket client
    return await start_relay(
        **FAST,
        RELAY_ARCHIVE=f"s3://{BUCKET}/{prefix}",
        RELAY_ARCHIVE_ENDPOINT=s3.endpoint,
        RELAY_ARCHIVE_RETRY_SCHEDULE="0,0.1,0.2",
        RELAY_ARCHIVE_URL_TTL="600",
    )


def stored(s3: S3Server, prefix: str) -> dict[str, Any]:
    """The one object under `prefix`: its key, bytes and content type."""
    client = s3.client()
    (item,) = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")["Contents"]
    got = client.get_object(Bucket=BUCKET, Key=item["Key"])
    return {"key": item["Key"], "body": got["Body"].read(), "type": got["ContentType"]}


async def test_outputs_land_in_the_bucket_before_the_job_is_announced(
    start_relay: StartRelay, s3: S3Server, monkeypatch: pytest.MonkeyPatch, pixazo: PixazoSim
) -> None:
    relay = await archiving(start_relay, s3, monkeypatch, "flow")
    pixazo.output_dimensions = (64, 48)
    job = await succeeded(relay, IMAGE_JOB)
    types = await event_types(relay, job["id"], "job.succeeded")
    assert "job.archive_failed" not in types
    body = pixazo.output_bodies[job["provider_job_id"]]
    obj = stored(s3, "flow")
    assert obj["body"] == body and obj["type"] == "image/png"
    assert obj["key"].startswith("flow/") and obj["key"].endswith(f"/{job['id']}/0.png")
    events = await relay.events(job["id"])
    (out,) = next(e for e in events if e["type"] == "job.succeeded")["data"]["outputs"]
    assert out["sha256"] == hashlib.sha256(body).hexdigest()
    assert (out["bytes"], out["width"], out["height"]) == (len(body), 64, 48)
    # archive_url: a GET presigned for RELAY_ARCHIVE_URL_TTL, signed again on each read
    shown = (await relay.client.get(f"/v1/jobs/{job['id']}")).json()["outputs"][0]
    url = urlsplit(shown["archive_url"])
    assert f"{url.scheme}://{url.netloc}" == s3.endpoint
    assert url.path == f"/{BUCKET}/{obj['key']}"
    query = parse_qs(url.query)
    assert query["X-Amz-Expires"] == ["600"] and query["X-Amz-Signature"]
    assert s3.secret_key not in shown["archive_url"]


async def test_a_url_that_fails_twice_lands_in_the_bucket_on_the_third_try(
    start_relay: StartRelay, s3: S3Server, monkeypatch: pytest.MonkeyPatch, pixazo: PixazoSim
) -> None:
    relay = await archiving(start_relay, s3, monkeypatch, "retried")
    pixazo.output_failures = 2
    job = await succeeded(relay, IMAGE_JOB)
    types = await event_types(relay, job["id"], "job.succeeded")
    assert "job.archive_failed" not in types
    assert pixazo.output_requests == 3
    assert stored(s3, "retried")["body"] == pixazo.output_bodies[job["provider_job_id"]]
