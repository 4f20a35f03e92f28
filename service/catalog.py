"""The model table, taken from the provider documents, and input validation (pure)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

ParamType = Literal["string", "number", "integer", "boolean"]
MediaKind = Literal["url", "asset_or_url"]

_ASSET_ID = re.compile(r"^asset_[A-Za-z0-9_-]{1,128}$")
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE = 500
MAX_STRING = 4000
MAX_URL = 2048
MAX_WEBHOOK_EVENTS = 16
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
WEBHOOK_EVENTS = ("*", "completed", "start", "output")
_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\s]+"


@dataclass(frozen=True, slots=True)
class Param:
    """One documented input parameter of a model."""

    name: str
    type: ParamType
    description: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    media: MediaKind | None = None

    def describe(self) -> dict[str, Any]:
        """The parameter as GET /v1/models shows it."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        out["default"] = self.default
        if self.minimum is not None or self.maximum is not None:
            out["range"] = [self.minimum, self.maximum]
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.media:
            out["media"] = self.media
        out["description"] = self.description
        return out

    def schema(self) -> dict[str, Any]:
        """The parameter's JSON Schema: the same bounds _check_param enforces."""
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.type == "integer":
            out.update(minimum=MIN_INT, maximum=MAX_INT)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.type == "string":
            out["maxLength"] = MAX_URL if self.media else MAX_STRING
        if self.media == "url":
            out["pattern"] = _URL_PATTERN
        elif self.media == "asset_or_url":
            out["pattern"] = f"{_ASSET_ID.pattern}|{_URL_PATTERN}"
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True, slots=True)
class Model:
    """A model the relay can run: where it goes and what it accepts."""

    id: str
    provider: Literal["pixazo", "scenario"]
    path: str
    media_param: str
    media_type: Literal["image", "video"]
    params: tuple[Param, ...]
    title: str

    def describe(self) -> dict[str, Any]:
        """The model as GET /v1/models shows it."""
        return {
            "id": self.id,
            "title": self.title,
            "provider": self.provider,
            "media": {"param": self.media_param, "type": self.media_type},
            "parameters": [p.describe() for p in self.params],
        }

    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of this model's `input`, from the parameters that validate it."""
        return {
            "type": "object",
            "properties": {p.name: p.schema() for p in self.params},
            "required": [p.name for p in self.params if p.required],
            "additionalProperties": False,
        }


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """JSON form for the 422 details."""
        return {"field": self.field, "message": self.message}


def _p(name: str, type_: ParamType, description: str, **kw: Any) -> Param:
    return Param(name=name, type=type_, description=description, **kw)


# Pixazo SeedVR (provider-docs/pixazo-seedvr-upscale.md). The document gives no defaults for
# the image upscaler; the video defaults are the values its prediction example echoes back.
_PIXAZO_IMAGE = (
    _p(
        "image_url",
        "string",
        "Public URL of the image (PNG, JPEG, WebP).",
        required=True,
        media="url",
    ),
    _p(
        "upscale_mode",
        "string",
        "factor multiplies the resolution; target aims at one.",
        enum=("factor", "target"),
    ),
    _p("upscale_factor", "number", "Multiplier, with upscale_mode factor.", minimum=1, maximum=8),
    _p(
        "target_resolution",
        "string",
        "Output resolution, with upscale_mode target.",
        enum=("720p", "1080p", "1440p", "2160p"),
    ),
    _p("noise_scale", "number", "Noise reduction strength.", minimum=0.0, maximum=1.0),
    _p("output_format", "string", "Output image format.", enum=("jpg", "png", "webp")),
    _p("seed", "integer", "Random seed for reproducibility."),
)
_PIXAZO_VIDEO = (
    _p(
        "video_url",
        "string",
        "Public URL of the video (MP4, MOV, AVI, WebM).",
        required=True,
        media="url",
    ),
    _p(
        "upscale_mode",
        "string",
        "factor multiplies the resolution; target aims at one.",
        enum=("factor", "target"),
        default="factor",
    ),
    _p(
        "upscale_factor",
        "number",
        "Multiplier, with upscale_mode factor (1 = enhance only).",
        minimum=1,
        maximum=4,
        default=2,
    ),
    _p(
        "target_resolution",
        "string",
        "Output resolution, with upscale_mode target.",
        enum=("720p", "1080p"),
    ),
    _p("noise_scale", "number", "Noise reduction strength.", minimum=0.0, maximum=1.0, default=0.1),
    _p(
        "output_format",
        "string",
        "Output video codec.",
        enum=("X264 (.mp4)", "H265 (.mp4)"),
        default="X264 (.mp4)",
    ),
    _p(
        "output_quality",
        "string",
        "Encoding quality.",
        enum=("low", "medium", "high"),
        default="high",
    ),
    _p(
        "output_write_mode",
        "string",
        "Encoding speed/quality trade-off.",
        enum=("fast", "balanced", "quality"),
        default="balanced",
    ),
    _p("seed", "integer", "Random seed for reproducibility."),
)
# Scenario models (provider-docs/scenario-*.md): defaults as documented. Where a document
# names no range, only the type (and a positive factor) is checked.
_SCENARIO_SEEDVR2 = (
    _p(
        "video",
        "string",
        "Scenario asset id (asset_...) or a URL to upload.",
        required=True,
        media="asset_or_url",
    ),
    _p(
        "upscaleMode",
        "string",
        "factor uses upscaleFactor; target uses targetResolution.",
        enum=("factor", "target"),
        default="factor",
    ),
    _p("upscaleFactor", "number", "How much to upscale.", minimum=1, default=2),
    _p(
        "targetResolution",
        "string",
        "Target resolution when upscaleMode is target.",
        enum=("720p", "1080p", "1440p", "2160p"),
        default="1080p",
    ),
    _p(
        "noiseScale",
        "number",
        "Noise scale of the generation.",
        minimum=0.0,
        maximum=1.0,
        default=0.1,
    ),
    _p(
        "outputQuality",
        "string",
        "Quality of the output video.",
        enum=("low", "medium", "high"),
        default="high",
    ),
    _p(
        "outputWriteMode",
        "string",
        "Write mode of the output video.",
        enum=("fast", "balanced", "quality"),
        default="balanced",
    ),
    _p("seed", "integer", "Random seed; random when absent."),
)
_SCENARIO_MAGNIFIC = (
    _p(
        "video",
        "string",
        "Scenario asset id (asset_...) or a URL to upload.",
        required=True,
        media="asset_or_url",
    ),
    _p("creativity", "number", "Creativity intensity.", minimum=0, maximum=100, default=0),
    _p("resolution", "string", "Output resolution tier.", enum=("1k", "2k", "4k"), default="2k"),
    _p("fpsBoost", "boolean", "Increase the output frame rate.", default=False),
    _p("sharpen", "number", "Sharpening intensity.", minimum=0, maximum=100, default=0),
    _p(
        "smartGrain",
        "number",
        "Film grain / texture enhancement.",
        minimum=0,
        maximum=100,
        default=0,
    ),
    _p(
        "flavor",
        "string",
        "vivid: enhanced colors; natural: faithful to source.",
        enum=("vivid", "natural"),
        default="vivid",
    ),
    _p("turbo", "boolean", "Faster processing with the turbo preset.", default=False),
)
_SCENARIO_UPSCALE_V3 = (
    _p(
        "image",
        "string",
        "Scenario asset id (asset_...) or a URL to upload.",
        required=True,
        media="asset_or_url",
    ),
    _p("style", "string", "Style the output is optimised for.", default="standard"),
    _p("upscaleFactor", "number", "Scaling factor; 1 refines only.", minimum=1, default=2),
    _p("preset", "string", "A preset set of parameters.", default="precise"),
    _p(
        "styleStrength",
        "number",
        "How closely the style images are followed.",
        minimum=0,
        maximum=1,
        default=0.5,
    ),
    _p(
        "tileStyle",
        "boolean",
        "Match tiles of the source with tiles of the style image.",
        default=False,
    ),
    _p("prompt", "string", "Prompt.", default=""),
    _p("negativePrompt", "string", "Negative prompt.", default=""),
    _p(
        "guidanceScale", "number", "Higher follows the prompt over the image.", minimum=0, default=6
    ),
    _p(
        "controlnetConditioningScale",
        "number",
        "Higher keeps the original structure.",
        minimum=0,
        default=0.8,
    ),
    _p("strength", "number", "Creativity of the enhancement.", minimum=0, maximum=1, default=0.1),
    _p("fractality", "number", "Fractal-like detail.", minimum=0, default=0),
    _p("loraDetailsScale", "number", "Intensity of the details.", default=0),
    _p("seed", "integer", "Seed used for reproduction."),
    _p(
        "strengthDecay",
        "number",
        "Creativity kept at each stage (factors above 2).",
        minimum=0,
        maximum=1,
        default=0.8,
    ),
    _p(
        "overrideEmbeddings",
        "boolean",
        "Remove custom embeddings guiding the style.",
        default=False,
    ),
)

MODELS: dict[str, Model] = {
    m.id: m
    for m in (
        Model(
            "pixazo/seedvr-image",
            "pixazo",
            "/seedvr-upscale/v1/upscale-image/generate",
            "image_url",
            "image",
            _PIXAZO_IMAGE,
            "Pixazo SeedVR image upscaler",
        ),
        Model(
            "pixazo/seedvr-video",
            "pixazo",
            "/seedvr-upscale/v1/upscale-video/generate",
            "video_url",
            "video",
            _PIXAZO_VIDEO,
            "Pixazo SeedVR video upscaler",
        ),
        Model(
            "scenario/seedvr2-video",
            "scenario",
            "/v1/generate/custom/model_seedvr-2-upscale-video",
            "video",
            "video",
            _SCENARIO_SEEDVR2,
            "Scenario SeedVR2 video upscale",
        ),
        Model(
            "scenario/magnific-video-creative",
            "scenario",
            "/v1/generate/custom/model_magnific-video-upscaler-creative",
            "video",
            "video",
            _SCENARIO_MAGNIFIC,
            "Scenario Magnific video upscaler (creative)",
        ),
        Model(
            "scenario/upscale-v3",
            "scenario",
            "/v1/generate/custom/model_upscale-v3",
            "image",
            "image",
            _SCENARIO_UPSCALE_V3,
            "Scenario Upscale V3",
        ),
    )
}

# Keys a user may reach for that the relay deliberately does not forward.
_REFUSED_HINTS = {
    "sync_mode": "not supported: the relay always runs jobs asynchronously",
    "webhook": "give `webhook` at the top level of the job, not inside `input`",
    "webhook_events_filter": "give `webhook_events_filter` at the top level of the job",
}


def is_http_url(value: str) -> bool:
    """True for an absolute http(s) URL with a host and no whitespace or control characters."""
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return False
    return re.match(r"^https?://[^/?#@]+", value, re.IGNORECASE) is not None


def _check_type(param: Param, value: Any, where: str) -> Problem | None:
    if param.type == "boolean":
        ok = isinstance(value, bool)
    elif param.type == "integer":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    elif param.type == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        try:
            ok = ok and math.isfinite(float(value))
        except OverflowError:  # a JSON integer beyond float range
            ok = False
    else:
        ok = isinstance(value, str)
    return None if ok else Problem(where, f"must be a {param.type}, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _check_param(param: Param, value: Any, where: str) -> list[Problem]:
    wrong_type = _check_type(param, value, where)
    if wrong_type:
        return [wrong_type]
    problems: list[Problem] = []
    if param.enum is not None and value not in param.enum:
        problems.append(Problem(where, f"must be one of {', '.join(param.enum)}; got {value!r}"))
    if param.type == "integer" and not MIN_INT <= value <= MAX_INT:
        problems.append(Problem(where, "must fit in 64 bits"))
    elif param.type in ("number", "integer"):
        if param.minimum is not None and value < param.minimum:
            problems.append(Problem(where, f"must be >= {param.minimum:g}, got {value}"))
        if param.maximum is not None and value > param.maximum:
            problems.append(Problem(where, f"must be <= {param.maximum:g}, got {value}"))
    longest = MAX_URL if param.media else MAX_STRING
    if isinstance(value, str) and len(value) > longest:
        problems.append(Problem(where, f"is longer than {longest} characters"))
    elif param.media == "url" and isinstance(value, str) and not is_http_url(value):
        problems.append(Problem(where, "must be an http(s) URL"))
    elif param.media == "asset_or_url" and isinstance(value, str):
        if not (_ASSET_ID.match(value) or is_http_url(value)):
            problems.append(
                Problem(where, "must be a Scenario asset id (asset_...) or an http(s) URL")
            )
    return problems


def _mode_rules(model: Model, given: dict[str, Any]) -> list[Problem]:
    """upscale_factor goes with mode factor, target_resolution with mode target (provider docs)."""
    names = {p.name for p in model.params}
    if "upscale_mode" in names:
        mode_key, factor_key, target_key = "upscale_mode", "upscale_factor", "target_resolution"
    elif "upscaleMode" in names:
        mode_key, factor_key, target_key = "upscaleMode", "upscaleFactor", "targetResolution"
    else:
        return []
    mode = given.get(mode_key)
    problems: list[Problem] = []
    if mode == "target" and target_key not in given and model.provider == "pixazo":
        problems.append(Problem(f"input.{target_key}", f"is required when {mode_key} is target"))
    if target_key in given and mode != "target" and model.provider == "pixazo":
        problems.append(Problem(f"input.{target_key}", f"is only used when {mode_key} is target"))
    if factor_key in given and mode == "target":
        problems.append(Problem(f"input.{factor_key}", f"is only used when {mode_key} is factor"))
    return problems


def validate_input(model: Model, given: Any) -> list[Problem]:
    """Every problem with a model's `input` object; empty when it can be sent."""
    if not isinstance(given, dict):
        return [Problem("input", f"must be an object, got {_json_type(given)}")]
    problems: list[Problem] = []
    params = {p.name: p for p in model.params}
    for key in given:
        if key not in params:
            hint = _REFUSED_HINTS.get(key, f"unknown parameter for {model.id}")
            problems.append(Problem(f"input.{key}", hint))
    for param in model.params:
        where = f"input.{param.name}"
        if param.name not in given:
            if param.required:
                problems.append(Problem(where, "is required"))
            continue
        if given[param.name] is None:
            problems.append(Problem(where, "must not be null (leave it out for the default)"))
            continue
        problems.extend(_check_param(param, given[param.name], where))
    named = {p.field for p in problems}
    problems.extend(p for p in _mode_rules(model, given) if p.field not in named)
    return problems


def normalize(model: Model, given: dict[str, Any]) -> dict[str, Any]:
    """A validated input as sent: integral floats of integer parameters become integers."""
    kinds = {p.name: p.type for p in model.params}
    return {
        k: int(v) if kinds.get(k) == "integer" and isinstance(v, float) else v
        for k, v in given.items()
    }


def validate_metadata(value: Any) -> list[Problem]:
    """Metadata: a flat object of at most 32 string keys with short scalar values."""
    if not isinstance(value, dict):
        return [Problem("metadata", f"must be an object, got {_json_type(value)}")]
    problems: list[Problem] = []
    if len(value) > MAX_METADATA_KEYS:
        problems.append(Problem("metadata", f"has more than {MAX_METADATA_KEYS} keys"))
    for key, item in value.items():
        if not 0 < len(key) <= 64:
            problems.append(Problem("metadata", f"key {key[:70]!r} must be 1 to 64 characters"))
        if item is not None and not isinstance(item, str | int | float | bool):
            problems.append(Problem(f"metadata.{key}", "must be a string, number or boolean"))
        elif isinstance(item, str) and len(item) > MAX_METADATA_VALUE:
            problems.append(
                Problem(f"metadata.{key}", f"is longer than {MAX_METADATA_VALUE} characters")
            )
    return problems


def validate_job_request(body: Any) -> tuple[Model | None, list[Problem]]:
    """The model named by a POST /v1/jobs body and every problem with the body."""
    if not isinstance(body, dict):
        return None, [Problem("body", f"must be a JSON object, got {_json_type(body)}")]
    problems: list[Problem] = []
    allowed = {"model", "input", "metadata", "webhook", "webhook_events_filter"}
    problems.extend(Problem(k, "unknown field") for k in body if k not in allowed)
    model: Model | None = None
    model_id = body.get("model")
    if model_id is None:
        problems.append(Problem("model", "is required"))
    elif not isinstance(model_id, str) or model_id not in MODELS:
        problems.append(
            Problem("model", f"unknown model {model_id!r}; known: {', '.join(sorted(MODELS))}")
        )
    else:
        model = MODELS[model_id]
    if "input" not in body:
        problems.append(Problem("input", "is required"))
    elif model is not None:
        problems.extend(validate_input(model, body["input"]))
    if "metadata" in body and body["metadata"] is not None:
        problems.extend(validate_metadata(body["metadata"]))
    webhook = body.get("webhook")
    if webhook is not None and (not isinstance(webhook, str) or not is_http_url(webhook)):
        problems.append(Problem("webhook", "must be an http(s) URL"))
    elif isinstance(webhook, str) and len(webhook) > MAX_URL:
        problems.append(Problem("webhook", f"is longer than {MAX_URL} characters"))
    flt = body.get("webhook_events_filter")
    if flt is not None:
        if not isinstance(flt, list) or not flt:
            problems.append(Problem("webhook_events_filter", "must be a non-empty array"))
        elif len(flt) > MAX_WEBHOOK_EVENTS:
            problems.append(
                Problem("webhook_events_filter", f"has more than {MAX_WEBHOOK_EVENTS} items")
            )
        else:
            for item in flt:
                if item not in WEBHOOK_EVENTS:
                    problems.append(
                        Problem(
                            "webhook_events_filter",
                            f"{item!r} is not one of {', '.join(WEBHOOK_EVENTS)}",
                        )
                    )
    return model, problems


METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Your own labels, echoed in the job and its notifications.",
    "maxProperties": MAX_METADATA_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": 64},
    "additionalProperties": {
        "type": ["string", "number", "boolean", "null"],
        "maxLength": MAX_METADATA_VALUE,
    },
}


def _example(model: Model) -> str:
    if model.provider == "scenario":
        return "asset_example"
    return f"https://media.example/in.{'png' if model.media_type == 'image' else 'mp4'}"


def request_schema() -> dict[str, Any]:
    """The JSON Schema of a POST /v1/jobs body: one alternative per model in MODELS."""
    common: dict[str, Any] = {
        "metadata": {**METADATA_SCHEMA, "type": ["object", "null"]},
        "webhook": {
            "type": ["string", "null"],
            "maxLength": MAX_URL,
            "pattern": _URL_PATTERN,
            "description": "Also deliver this job's events here, signed (GET /v1/webhook-secret).",
        },
        "webhook_events_filter": {
            "type": ["array", "null"],
            "minItems": 1,
            "maxItems": MAX_WEBHOOK_EVENTS,
            "items": {"enum": list(WEBHOOK_EVENTS)},
        },
    }
    return {
        "oneOf": [
            {
                "title": model.id,
                "type": "object",
                "required": ["model", "input"],
                "additionalProperties": False,
                "properties": {
                    "model": {"const": model.id},
                    "input": model.input_schema(),
                    **common,
                },
                "examples": [{"model": model.id, "input": {model.media_param: _example(model)}}],
            }
            for model in MODELS.values()
        ]
    }


_TYPES: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """True when `value` meets `schema` (the JSON Schema subset the relay's tables use)."""
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else kinds
        if not any(_TYPES[name](value) for name in names):
            return False
    if "const" in schema and value != schema["const"]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            return False
        if "maximum" in schema and value > schema["maximum"]:
            return False
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return False
    elif isinstance(value, str):
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            return False
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return False
    elif isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            return False
        items = schema.get("items")
        if items is not None and not all(conforms(v, items) for v in value):
            return False
    elif isinstance(value, dict):
        return _object_conforms(value, schema)
    return True


def _object_conforms(value: dict[str, Any], schema: dict[str, Any]) -> bool:
    if len(value) > schema.get("maxProperties", len(value)):
        return False
    if any(k not in value for k in schema.get("required", ())):
        return False
    names = schema.get("propertyNames")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if names is not None and not conforms(key, names):
            return False
        if key in properties:
            if not conforms(item, properties[key]):
                return False
        elif extra is False or (isinstance(extra, dict) and not conforms(item, extra)):
            return False
    return True
