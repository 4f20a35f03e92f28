"""The model table and input validation: every problem named, nothing sent that the docs refuse."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from service import catalog
from service.catalog import MODELS, Model, Param

DOCS = Path("/work/shared/provider-docs")
IMAGE_URL = "https://example.com/in.png"
VIDEO_URL = "https://example.com/in.mp4"
ASSET = "asset_AbC-123_x"


def media_value(model: Model) -> str:
    return IMAGE_URL if model.media_type == "image" else VIDEO_URL


def make_input(model: Model, **overrides: Any) -> dict[str, Any]:
    """A minimal valid input for `model`; overrides add or replace keys (None sends null)."""
    given: dict[str, Any] = {model.media_param: media_value(model)}
    given.update(overrides)
    return given


def make_body(**overrides: Any) -> dict[str, Any]:
    """A valid POST /v1/jobs body; overrides replace top-level fields."""
    body: dict[str, Any] = {
        "model": "pixazo/seedvr-image",
        "input": {"image_url": IMAGE_URL},
        "metadata": {"tenant": "acme"},
    }
    body.update(overrides)
    return body


def fields(problems: list[catalog.Problem]) -> list[str]:
    return [p.field for p in problems]


def problem_for(problems: list[catalog.Problem], field: str) -> str:
    messages = [p.message for p in problems if p.field == field]
    assert messages, f"no problem for {field}: {problems}"
    return " | ".join(messages)


def params_where(predicate: Any) -> list[Any]:
    """pytest params (model, param) for every documented parameter matching `predicate`."""
    return [
        pytest.param(model, param, id=f"{model.id}:{param.name}")
        for model in MODELS.values()
        for param in model.params
        if predicate(param)
    ]


ALL_MODELS = [pytest.param(m, id=m.id) for m in MODELS.values()]


# -- valid inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_minimal_input_is_valid(model: Model) -> None:
    assert catalog.validate_input(model, make_input(model)) == []


@pytest.mark.parametrize("model", ALL_MODELS)
def test_input_of_every_documented_default_is_valid(model: Model) -> None:
    given = {p.name: p.default for p in model.params if p.default is not None}
    given[model.media_param] = media_value(model)
    seed = next((p for p in model.params if p.name == "seed"), None)
    if seed is not None:
        given["seed"] = 42
    assert catalog.validate_input(model, given) == []


@pytest.mark.parametrize("model", ALL_MODELS)
def test_boundaries_of_every_range_are_valid(model: Model) -> None:
    for param in model.params:
        for bound in (param.minimum, param.maximum):
            if bound is None:
                continue
            given = make_input(model, **{param.name: bound})
            assert catalog.validate_input(model, given) == [], (param.name, bound)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_every_enum_value_is_valid(model: Model) -> None:
    for param in model.params:
        for value in param.enum or ():
            extra: dict[str, Any] = {param.name: value}
            if model.provider == "pixazo" and param.name == "target_resolution":
                extra["upscale_mode"] = "target"
            if model.provider == "pixazo" and (param.name, value) == ("upscale_mode", "target"):
                extra["target_resolution"] = "720p"
            given = make_input(model, **extra)
            assert catalog.validate_input(model, given) == [], (param.name, value)


def test_pixazo_video_full_input_is_valid() -> None:
    given = {
        "video_url": VIDEO_URL,
        "upscale_mode": "factor",
        "upscale_factor": 4,
        "noise_scale": 0.05,
        "output_format": "H265 (.mp4)",
        "output_quality": "medium",
        "output_write_mode": "quality",
        "seed": 7,
    }
    assert catalog.validate_input(MODELS["pixazo/seedvr-video"], given) == []


def test_integer_accepts_an_integral_float() -> None:
    model = MODELS["pixazo/seedvr-image"]
    assert catalog.validate_input(model, make_input(model, seed=3.0)) == []


# -- missing media, wrong types ---------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_missing_media_is_reported(model: Model) -> None:
    problems = catalog.validate_input(model, {})
    assert problems == [catalog.Problem(f"input.{model.media_param}", "is required")]


_WRONG_VALUES: dict[str, list[tuple[Any, str]]] = {
    # value of the wrong JSON type, and the JSON type the message names
    "boolean": [(1, "number"), (0, "number"), ("true", "string"), ([], "array")],
    "number": [("2", "string"), (True, "boolean"), (False, "boolean"), ({}, "object")],
    "integer": [("5", "string"), (1.5, "number"), (True, "boolean"), ([1], "array")],
    "string": [(5, "number"), (True, "boolean"), (["a"], "array"), ({"a": 1}, "object")],
}


@pytest.mark.parametrize(("model", "param"), params_where(lambda p: True))
def test_wrong_type_is_reported_for_every_parameter(model: Model, param: Param) -> None:
    for value, json_type in _WRONG_VALUES[param.type]:
        given = make_input(model, **{param.name: value})
        problems = catalog.validate_input(model, given)
        assert problems == [
            catalog.Problem(f"input.{param.name}", f"must be a {param.type}, got {json_type}")
        ], value


@pytest.mark.parametrize("text", ["1e309", "-1e309", "NaN", "Infinity"])
def test_non_finite_number_from_json_is_refused(text: str) -> None:
    # Python's json accepts NaN/Infinity and turns 1e309 into inf: none is a usable number.
    value = json.loads(text)
    model = MODELS["pixazo/seedvr-image"]
    problems = catalog.validate_input(model, make_input(model, noise_scale=value, seed=value))
    assert fields(problems) == ["input.noise_scale", "input.seed"]
    assert "must be a number" in problem_for(problems, "input.noise_scale")
    assert "must be a integer" in problem_for(problems, "input.seed")


def test_huge_integer_for_a_number_is_a_problem_not_a_crash() -> None:
    value = json.loads("1" + "0" * 400)
    model = MODELS["pixazo/seedvr-image"]
    problems = catalog.validate_input(model, make_input(model, noise_scale=value))
    assert fields(problems) == ["input.noise_scale"]


# -- enums and ranges --------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "param"), params_where(lambda p: p.enum is not None))
def test_enum_miss_is_reported(model: Model, param: Param) -> None:
    assert param.enum is not None
    problems = catalog.validate_input(model, make_input(model, **{param.name: "nope"}))
    assert fields(problems) == [f"input.{param.name}"]
    message = problem_for(problems, f"input.{param.name}")
    assert "'nope'" in message
    for allowed in param.enum:
        assert allowed in message


def test_enum_is_case_sensitive() -> None:
    model = MODELS["pixazo/seedvr-image"]
    problems = catalog.validate_input(model, make_input(model, output_format="PNG"))
    assert fields(problems) == ["input.output_format"]


@pytest.mark.parametrize(("model", "param"), params_where(lambda p: p.minimum is not None))
def test_below_minimum_is_reported(model: Model, param: Param) -> None:
    assert param.minimum is not None
    value = param.minimum - 0.5
    problems = catalog.validate_input(model, make_input(model, **{param.name: value}))
    assert fields(problems) == [f"input.{param.name}"]
    assert f">= {param.minimum:g}" in problem_for(problems, f"input.{param.name}")


@pytest.mark.parametrize(("model", "param"), params_where(lambda p: p.maximum is not None))
def test_above_maximum_is_reported(model: Model, param: Param) -> None:
    assert param.maximum is not None
    value = param.maximum + 0.5
    problems = catalog.validate_input(model, make_input(model, **{param.name: value}))
    assert fields(problems) == [f"input.{param.name}"]
    assert f"<= {param.maximum:g}" in problem_for(problems, f"input.{param.name}")


def test_overlong_string_is_reported() -> None:
    model = MODELS["scenario/upscale-v3"]
    given = make_input(model, prompt="x" * (catalog.MAX_STRING + 1))
    problems = catalog.validate_input(model, given)
    assert fields(problems) == ["input.prompt"]
    assert str(catalog.MAX_STRING) in problems[0].message


# -- unknown and refused keys, nulls, non-objects ---------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_unknown_key_is_reported(model: Model) -> None:
    problems = catalog.validate_input(model, make_input(model, colour="red"))
    assert problems == [catalog.Problem("input.colour", f"unknown parameter for {model.id}")]


@pytest.mark.parametrize("model", ALL_MODELS)
def test_sync_mode_is_refused_with_its_hint(model: Model) -> None:
    problems = catalog.validate_input(model, make_input(model, sync_mode=True))
    assert fields(problems) == ["input.sync_mode"]
    assert "asynchronously" in problems[0].message


@pytest.mark.parametrize("key", ["webhook", "webhook_events_filter"])
def test_webhook_inside_input_is_refused_with_hint(key: str) -> None:
    model = MODELS["pixazo/seedvr-video"]
    problems = catalog.validate_input(model, make_input(model, **{key: "https://x.example/"}))
    assert fields(problems) == [f"input.{key}"]
    assert "top level" in problems[0].message


@pytest.mark.parametrize(
    "name", ["image_url", "upscale_factor", "output_format", "seed", "upscale_mode"]
)
def test_null_value_is_refused(name: str) -> None:
    model = MODELS["pixazo/seedvr-image"]
    given = make_input(model, **{name: None})
    problems = catalog.validate_input(model, given)
    assert fields(problems) == [f"input.{name}"]
    assert "must not be null" in problems[0].message


@pytest.mark.parametrize(
    ("value", "json_type"),
    [([], "array"), ("https://example.com/a.png", "string"), (None, "null"), (3, "number")],
)
def test_non_object_input_is_refused(value: Any, json_type: str) -> None:
    problems = catalog.validate_input(MODELS["scenario/upscale-v3"], value)
    assert problems == [catalog.Problem("input", f"must be an object, got {json_type}")]


# -- media -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/in.png",
        "example.com/in.png",
        "//example.com/in.png",
        "http://",
        "https:///path-only",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "https://exa mple.com/in.png",
        "",
        "asset_abc",  # an asset id means nothing to Pixazo
    ],
)
@pytest.mark.parametrize("model_id", ["pixazo/seedvr-image", "pixazo/seedvr-video"])
def test_pixazo_media_must_be_http_url(model_id: str, url: str) -> None:
    model = MODELS[model_id]
    problems = catalog.validate_input(model, {model.media_param: url})
    assert problems == [catalog.Problem(f"input.{model.media_param}", "must be an http(s) URL")]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a\nb",
        "https://example.com/a\r\nX-Injected:1",
        "https://exa\tmple.com/",
        "https://example.com/\x00",
    ],
)
def test_url_with_control_characters_is_refused(url: str) -> None:
    body = make_body(input={"image_url": url}, webhook=url)
    _, problems = catalog.validate_job_request(body)
    assert sorted(fields(problems)) == ["input.image_url", "webhook"]


@pytest.mark.parametrize(
    "url", ["http://example.com/a.png", "HTTPS://EXAMPLE.COM/A.PNG", "https://h:8443/p?q=1#f"]
)
def test_pixazo_media_accepts_http_urls(url: str) -> None:
    model = MODELS["pixazo/seedvr-image"]
    assert catalog.validate_input(model, {"image_url": url}) == []


@pytest.mark.parametrize(
    "model_id",
    ["scenario/seedvr2-video", "scenario/magnific-video-creative", "scenario/upscale-v3"],
)
@pytest.mark.parametrize("value", [ASSET, "asset_1", VIDEO_URL, IMAGE_URL])
def test_scenario_media_takes_asset_id_or_url(model_id: str, value: str) -> None:
    model = MODELS[model_id]
    assert catalog.validate_input(model, {model.media_param: value}) == []


@pytest.mark.parametrize(
    "value",
    ["asset_", "asset abc", "asset_a/b", "Asset_abc", "abc", "ftp://x/y.mp4", "asset_" + "a" * 129],
)
def test_scenario_media_refuses_anything_else(value: str) -> None:
    model = MODELS["scenario/seedvr2-video"]
    problems = catalog.validate_input(model, {"video": value})
    assert fields(problems) == ["input.video"]
    assert "asset id" in problems[0].message


# -- upscale mode rules ------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", ["pixazo/seedvr-image", "pixazo/seedvr-video"])
def test_pixazo_target_resolution_needs_mode_target(model_id: str) -> None:
    model = MODELS[model_id]
    for extra in ({}, {"upscale_mode": "factor"}):
        given = make_input(model, target_resolution="720p", **extra)
        problems = catalog.validate_input(model, given)
        assert fields(problems) == ["input.target_resolution"], extra
        assert "only used when upscale_mode is target" in problems[0].message


@pytest.mark.parametrize("model_id", ["pixazo/seedvr-image", "pixazo/seedvr-video"])
def test_pixazo_mode_target_needs_target_resolution(model_id: str) -> None:
    model = MODELS[model_id]
    problems = catalog.validate_input(model, make_input(model, upscale_mode="target"))
    assert fields(problems) == ["input.target_resolution"]
    assert "required" in problems[0].message
    ok = make_input(model, upscale_mode="target", target_resolution="1080p")
    assert catalog.validate_input(model, ok) == []


@pytest.mark.parametrize(
    ("model_id", "mode", "factor", "target"),
    [
        ("pixazo/seedvr-image", "upscale_mode", "upscale_factor", "target_resolution"),
        ("pixazo/seedvr-video", "upscale_mode", "upscale_factor", "target_resolution"),
        ("scenario/seedvr2-video", "upscaleMode", "upscaleFactor", "targetResolution"),
    ],
)
def test_upscale_factor_with_mode_target_is_refused(
    model_id: str, mode: str, factor: str, target: str
) -> None:
    model = MODELS[model_id]
    given = make_input(model, **{mode: "target", target: "1080p", factor: 2})
    problems = catalog.validate_input(model, given)
    assert fields(problems) == [f"input.{factor}"]
    assert "only used when" in problems[0].message


def test_scenario_target_resolution_is_fine_without_mode_target() -> None:
    # Scenario documents a default targetResolution; sending it with mode factor is harmless.
    model = MODELS["scenario/seedvr2-video"]
    given = make_input(model, upscaleMode="factor", targetResolution="1080p", upscaleFactor=2)
    assert catalog.validate_input(model, given) == []
    assert catalog.validate_input(model, make_input(model, upscaleMode="target")) == []


# -- several problems at once ------------------------------------------------------------------


def test_every_problem_is_named_at_once() -> None:
    model = MODELS["pixazo/seedvr-video"]
    given = {
        "upscale_factor": 9,
        "noise_scale": "0.1",
        "output_quality": "ultra",
        "seed": None,
        "sync_mode": True,
        "colour": "red",
    }
    problems = catalog.validate_input(model, given)
    assert sorted(fields(problems)) == sorted(
        [
            "input.video_url",
            "input.upscale_factor",
            "input.noise_scale",
            "input.output_quality",
            "input.seed",
            "input.sync_mode",
            "input.colour",
        ]
    )


def test_below_minimum_and_wrong_enum_in_one_input_both_named() -> None:
    model = MODELS["scenario/magnific-video-creative"]
    given = make_input(model, creativity=-1, sharpen=101, resolution="8k", turbo=1)
    problems = catalog.validate_input(model, given)
    assert sorted(fields(problems)) == [
        "input.creativity",
        "input.resolution",
        "input.sharpen",
        "input.turbo",
    ]


def test_mode_conflict_is_named_alongside_other_problems() -> None:
    model = MODELS["pixazo/seedvr-image"]
    given = make_input(model, target_resolution="1080p", colour="red")
    problems = catalog.validate_input(model, given)
    assert sorted(fields(problems)) == ["input.colour", "input.target_resolution"]


# -- validate_job_request ----------------------------------------------------------------------


def test_valid_job_request() -> None:
    body = make_body(webhook="https://hooks.example.com/x", webhook_events_filter=["completed"])
    model, problems = catalog.validate_job_request(body)
    assert problems == []
    assert model is MODELS["pixazo/seedvr-image"]


@pytest.mark.parametrize("model_id", list(MODELS))
def test_every_model_id_is_accepted(model_id: str) -> None:
    model = MODELS[model_id]
    model_out, problems = catalog.validate_job_request(
        {"model": model_id, "input": make_input(model)}
    )
    assert problems == []
    assert model_out is model


@pytest.mark.parametrize("body", [[], "x", None, 1])
def test_job_request_must_be_an_object(body: Any) -> None:
    model, problems = catalog.validate_job_request(body)
    assert model is None
    assert fields(problems) == ["body"]


def test_unknown_top_level_field() -> None:
    _, problems = catalog.validate_job_request(make_body(priority="high", callback="x"))
    assert sorted(fields(problems)) == ["callback", "priority"]
    assert all(p.message == "unknown field" for p in problems)


def test_missing_model_and_input() -> None:
    model, problems = catalog.validate_job_request({})
    assert model is None
    assert problems == [
        catalog.Problem("model", "is required"),
        catalog.Problem("input", "is required"),
    ]


@pytest.mark.parametrize("model_id", ["pixazo/nope", "", 5, ["pixazo/seedvr-image"]])
def test_unknown_model_lists_the_known_ones(model_id: Any) -> None:
    model, problems = catalog.validate_job_request(make_body(model=model_id))
    assert model is None
    assert fields(problems) == ["model"]
    for known in MODELS:
        assert known in problems[0].message


def test_input_problems_are_reported_through_job_request() -> None:
    _, problems = catalog.validate_job_request(make_body(input={"image_url": "ftp://x"}))
    assert fields(problems) == ["input.image_url"]


def test_problems_of_every_part_are_named_together() -> None:
    body = {
        "model": "pixazo/seedvr-image",
        "input": {"sync_mode": True},
        "metadata": {"a": {"b": 1}},
        "webhook": "not a url",
        "webhook_events_filter": ["done"],
        "extra": 1,
    }
    _, problems = catalog.validate_job_request(body)
    assert sorted(fields(problems)) == sorted(
        [
            "extra",
            "input.sync_mode",
            "input.image_url",
            "metadata.a",
            "webhook",
            "webhook_events_filter",
        ]
    )


# metadata


def test_metadata_null_is_allowed_and_scalars_are_fine() -> None:
    _, problems = catalog.validate_job_request(make_body(metadata=None))
    assert problems == []
    meta = {"s": "x", "i": 1, "f": 1.5, "b": True, "n": None}
    assert catalog.validate_metadata(meta) == []


@pytest.mark.parametrize(("value", "json_type"), [([], "array"), ("x", "string"), (1, "number")])
def test_metadata_must_be_an_object(value: Any, json_type: str) -> None:
    problems = catalog.validate_metadata(value)
    assert problems == [catalog.Problem("metadata", f"must be an object, got {json_type}")]


@pytest.mark.parametrize("nested", [{"b": 1}, [1, 2], []])
def test_metadata_value_must_be_scalar(nested: Any) -> None:
    problems = catalog.validate_metadata({"ok": "x", "a": nested})
    assert fields(problems) == ["metadata.a"]


def test_metadata_key_count() -> None:
    limit = catalog.MAX_METADATA_KEYS
    assert catalog.validate_metadata({f"k{i}": i for i in range(limit)}) == []
    problems = catalog.validate_metadata({f"k{i}": i for i in range(limit + 1)})
    assert fields(problems) == ["metadata"]
    assert str(limit) in problems[0].message


def test_metadata_value_length() -> None:
    limit = catalog.MAX_METADATA_VALUE
    assert catalog.validate_metadata({"a": "x" * limit}) == []
    problems = catalog.validate_metadata({"a": "x" * (limit + 1)})
    assert fields(problems) == ["metadata.a"]
    assert str(limit) in problems[0].message


@pytest.mark.parametrize("key", ["", "k" * 65])
def test_metadata_key_length(key: str) -> None:
    problems = catalog.validate_metadata({key: "v"})
    assert fields(problems) == ["metadata"]


# webhook


@pytest.mark.parametrize(
    "webhook", ["not a url", "ftp://x.example/", "https://", 5, ["https://x.example/"]]
)
def test_webhook_must_be_http_url(webhook: Any) -> None:
    _, problems = catalog.validate_job_request(make_body(webhook=webhook))
    assert problems == [catalog.Problem("webhook", "must be an http(s) URL")]


@pytest.mark.parametrize(
    "events", [["*"], ["completed"], ["start", "output", "completed"], ["completed", "start"]]
)
def test_webhook_events_filter_values_accepted(events: list[str]) -> None:
    _, problems = catalog.validate_job_request(make_body(webhook_events_filter=events))
    assert problems == []


@pytest.mark.parametrize(
    ("events", "count"),
    [
        ([], 1),
        ("completed", 1),
        ({"completed": True}, 1),
        (["done"], 1),
        (["completed", "job.succeeded", "COMPLETED"], 2),
        ([1], 1),
    ],
)
def test_webhook_events_filter_bad_values(events: Any, count: int) -> None:
    _, problems = catalog.validate_job_request(make_body(webhook_events_filter=events))
    assert fields(problems) == ["webhook_events_filter"] * count


# -- describe() --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_describe_lists_every_parameter_with_type_range_enum_default(model: Model) -> None:
    described = model.describe()
    json.dumps(described)  # GET /v1/models serves it as is
    assert described["id"] == model.id
    assert described["provider"] == model.provider
    assert described["media"] == {"param": model.media_param, "type": model.media_type}
    by_name = {p["name"]: p for p in described["parameters"]}
    assert list(by_name) == [p.name for p in model.params]
    for param in model.params:
        shown = by_name[param.name]
        assert shown["type"] == param.type
        assert shown["required"] == param.required
        assert "default" in shown
        assert shown["default"] == param.default
        assert shown["description"]
        if param.minimum is not None or param.maximum is not None:
            assert shown["range"] == [param.minimum, param.maximum]
        else:
            assert "range" not in shown
        if param.enum is not None:
            assert shown["enum"] == list(param.enum)
        else:
            assert "enum" not in shown
    assert by_name[model.media_param]["required"] is True
    assert by_name[model.media_param]["media"] in ("url", "asset_or_url")


def _described(model_id: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in MODELS[model_id].describe()["parameters"]}


def test_describe_pixazo_image_matches_docs() -> None:
    shown = _described("pixazo/seedvr-image")
    # "Upscale multiplier (1-8)", "Noise reduction strength (0.0-1.0)"
    assert shown["upscale_factor"]["range"] == [1, 8]
    assert shown["noise_scale"]["range"] == [0.0, 1.0]
    assert shown["target_resolution"]["enum"] == ["720p", "1080p", "1440p", "2160p"]
    assert shown["output_format"]["enum"] == ["jpg", "png", "webp"]
    assert shown["upscale_mode"]["enum"] == ["factor", "target"]
    assert shown["seed"]["type"] == "integer"
    assert shown["image_url"] == shown["image_url"] | {"type": "string", "required": True}
    assert "sync_mode" not in shown and "webhook" not in shown


def test_describe_pixazo_video_matches_docs() -> None:
    shown = _described("pixazo/seedvr-video")
    # "Upscale multiplier (1-4)", target "720p, 1080p", codecs, quality, write mode
    assert shown["upscale_factor"]["range"] == [1, 4]
    assert shown["upscale_factor"]["default"] == 2
    assert shown["noise_scale"]["default"] == 0.1
    assert shown["target_resolution"]["enum"] == ["720p", "1080p"]
    assert shown["output_format"]["enum"] == ["X264 (.mp4)", "H265 (.mp4)"]
    assert shown["output_quality"]["enum"] == ["low", "medium", "high"]
    assert shown["output_write_mode"]["enum"] == ["fast", "balanced", "quality"]


def test_describe_magnific_matches_docs() -> None:
    shown = _described("scenario/magnific-video-creative")
    # "Creativity intensity (0-100)", "Output resolution tier (1k, 2k, or 4k)"
    for name in ("creativity", "sharpen", "smartGrain"):
        assert shown[name]["range"] == [0, 100]
        assert shown[name]["default"] == 0
    assert shown["resolution"]["enum"] == ["1k", "2k", "4k"]
    assert shown["resolution"]["default"] == "2k"
    assert shown["flavor"]["enum"] == ["vivid", "natural"]
    assert shown["fpsBoost"] == shown["fpsBoost"] | {"type": "boolean", "default": False}


_DOC_ROW = re.compile(r"\|\s*`(\w+)`\s*\|\s*(\w+)\s*\|\s*[^|]*\|\s*(`[^`]*`|-)\s*\|")
_SCENARIO_DOCS = {
    "scenario/seedvr2-video": "scenario-seedvr2-upscale-video.md",
    "scenario/magnific-video-creative": "scenario-magnific-video-upscaler-creative.md",
    "scenario/upscale-v3": "scenario-upscale-v3.md",
}


def _doc_default(type_: str, raw: str) -> Any:
    text = raw.strip("`")
    if type_ == "number":
        return float(text)
    if type_ == "boolean":
        return {"true": True, "false": False}[text]
    return text


@pytest.mark.parametrize(("model_id", "doc"), list(_SCENARIO_DOCS.items()))
def test_describe_scenario_matches_parameter_table(model_id: str, doc: str) -> None:
    rows = _DOC_ROW.findall((DOCS / doc).read_text(encoding="utf-8"))
    assert rows, f"no parameter table in {doc}"
    shown = _described(model_id)
    documented = {name for name, _, _ in rows}
    assert set(shown) - {MODELS[model_id].media_param} == documented
    for name, type_, default in rows:
        param = shown[name]
        # the docs call the seed a number; the relay insists on an integer
        assert param["type"] == type_ or (type_, param["type"]) == ("number", "integer"), name
        if default == "-":
            assert param["default"] is None, name
        else:
            assert param["default"] == _doc_default(type_, default), name
