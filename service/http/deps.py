"""HTTP plumbing shared by the routes: bounded bodies, strict JSON, declared query parameters."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ApiError

if TYPE_CHECKING:
    from service.state import Relay

MAX_DEPTH = 64
MAX_INT64 = 2**63 - 1


class JSON(Response):
    """A compact JSON response."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> ApiError:
    """The 413 answer."""
    return ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes")


class _Refused(ValueError):
    """A body json.loads would take but the relay does not."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to inf
        raise _Refused(f"number {text[:40]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


# One decoder for every call: json.loads with keywords would build a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _depth(text: str) -> int:
    """How deep the brackets outside strings nest, counted without recursion."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DELTA.__getitem__, brackets)), default=0)


def _has_lone_surrogate(value: Any) -> bool:
    # json decodes a valid pair to one code point: any surrogate left in a string is lone.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return True
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _bad_json(reason: str, message: str) -> ApiError:
    return ApiError(400, "invalid_json", message, details={"reason": reason})


def parse_json(raw: bytes) -> Any:
    """Decode a strict JSON body (UTF-8, finite numbers, no lone surrogates, <= 64 deep) or 400."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_json("not_utf8", f"the body is not UTF-8 (byte {exc.start})") from None
    text = text.removeprefix("\ufeff")  # RFC 8259: a parser may ignore a byte order mark
    # Cheap bound first: fewer opening brackets than the limit cannot nest deeper than it.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise _bad_json("too_deep", f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        value = _DECODER.decode(text)
    except _Refused as exc:
        raise _bad_json("not_finite", f"the body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise _bad_json("syntax", f"the body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise _bad_json("lone_surrogate", "the body has a lone UTF-16 surrogate (\\ud800-\\udfff)")
    return value


async def read_json(request: Request, limit: int) -> Any:
    """A bounded JSON body."""
    return parse_json(await read_body(request, limit))


async def api_error(request: Request, exc: Exception) -> Response:
    """Render an ApiError as the envelope."""
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return JSON(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Render Starlette's 404/405 as the envelope."""
    assert isinstance(exc, HTTPException)  # noqa: S101
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = {
        "error": {
            "code": codes.get(exc.status_code, "http_error"),
            "message": exc.detail,
            "details": None,
        }
    }
    return JSON(body, status_code=exc.status_code, headers=exc.headers)


_DIGITS = re.compile(r"[0-9]+")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


@dataclass(frozen=True, slots=True)
class Query:
    """One query parameter, declared once: routes read it and the OpenAPI document shows it."""

    name: str
    description: str
    type: Literal["integer", "string", "boolean"] = "integer"
    default: Any = None
    minimum: int | None = None
    maximum: int = MAX_INT64
    enum: tuple[str, ...] | None = None

    def read(self, request: Request) -> Any:
        """The parameter's value in `request`, its default when absent, or ApiError 400."""
        raw = request.query_params.get(self.name)
        if raw is None or raw == "":
            return self.default
        if self.type == "boolean":
            word = raw.lower()
            if word not in _TRUE + _FALSE:
                raise self._refuse(f"must be one of {', '.join(_TRUE + _FALSE)}")
            return word in _TRUE
        if self.type == "string":
            if self.enum is not None and raw not in self.enum:
                raise ApiError(
                    400,
                    "invalid_query",
                    f"{self.name}: unknown value {raw[:64]!r}",
                    details={"parameter": self.name, "allowed": list(self.enum)},
                )
            return raw
        # int() takes "٣", "1_0", "+1" and " 1": a cursor is plain ASCII digits only.
        if not raw.isascii() or not _DIGITS.fullmatch(raw):
            raise self._refuse(f"must be a whole number in ASCII digits, got {raw[:32]!r}")
        value = int(raw) if len(raw) <= 20 else MAX_INT64 + 1
        low = self.minimum if self.minimum is not None else 0
        if not low <= value <= self.maximum:
            raise self._refuse(f"must be from {low} to {self.maximum}, got {raw[:32]}")
        return value

    def _refuse(self, message: str) -> ApiError:
        return ApiError(
            400, "invalid_query", f"{self.name} {message}", details={"parameter": self.name}
        )

    def schema(self) -> dict[str, Any]:
        """The parameter's JSON Schema."""
        out: dict[str, Any] = {"type": self.type}
        if self.type == "integer":
            out.update(minimum=self.minimum or 0, maximum=self.maximum)
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.default is not None:
            out["default"] = self.default
        return out


Schema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Operation:
    """What the OpenAPI document says of one route: read by openapi.py, declared beside it."""

    summary: str
    answers: Mapping[int, tuple[str, Schema | None]]
    query: tuple[Query, ...] = ()
    body: Callable[[], Schema] | None = None
    errors: tuple[int, ...] = ()
    headers: Mapping[str, Schema] = field(default_factory=dict)
    auth: bool = True
    tags: tuple[str, ...] = field(default_factory=tuple)


OPERATIONS: dict[Callable[..., Any], Operation] = {}
_F = TypeVar("_F", bound=Callable[..., Any])


def operation(spec: Operation) -> Callable[[_F], _F]:
    """Register a route handler's OpenAPI operation."""

    def register(handler: _F) -> _F:
        OPERATIONS[handler] = spec
        return handler

    return register


def relay_of(request: Request) -> Relay:
    """The lifespan state of the app serving `request`."""
    relay: Relay = request.app.state.relay
    return relay
