"""Loopback Slack, Discord, Teams and Google Chat webhooks that refuse what the real ones refuse."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

KINDS = ("slack", "discord", "teams", "google_chat")

_Problems = list[tuple[str, str]]  # (path in the body, message)

_SLACK_BLOCKS = {
    "actions", "context", "divider", "file", "header", "image", "input",
    "markdown", "rich_text", "section", "video",
}  # fmt: skip
_DISCORD_BUCKET = "simdiscordwebhookbucket"
_ADAPTIVE = "application/vnd.microsoft.card.adaptive"
_TEAMS_MAX_BYTES = 28_000


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_text(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _text_object(value: object, path: str, limit: int, out: _Problems) -> None:
    if not isinstance(value, dict) or value.get("type") not in ("plain_text", "mrkdwn"):
        out.append((path, "must be a plain_text or mrkdwn text object"))
    elif not _is_text(value.get("text"), limit):
        out.append((f"{path}.text", f"must be 1 to {limit} characters"))


def _check_slack(body: dict[str, Any]) -> _Problems:
    out: _Problems = []
    text, blocks = body.get("text"), body.get("blocks")
    if not (isinstance(text, str) and text.strip()) and not blocks:
        return [("text", "no_text")]
    if blocks is None:
        return out
    if not isinstance(blocks, list) or len(blocks) > 50:
        return [("blocks", "must be a list of at most 50 blocks")]
    for n, block in enumerate(blocks):
        path = f"blocks.{n}"
        if not isinstance(block, dict) or block.get("type") not in _SLACK_BLOCKS:
            out.append((path, "must be a block of a known type"))
            continue
        kind = block["type"]
        if len(str(block.get("block_id", ""))) > 255:
            out.append((f"{path}.block_id", "must be at most 255 characters"))
        if kind == "header":
            text_obj = block.get("text")
            if not isinstance(text_obj, dict) or text_obj.get("type") != "plain_text":
                out.append((f"{path}.text", "must be a plain_text object"))
            else:
                _text_object(text_obj, f"{path}.text", 150, out)
        elif kind == "section":
            fields = block.get("fields")
            if "text" not in block and not fields:
                out.append((path, "a section needs text or fields"))
            if "text" in block:
                _text_object(block["text"], f"{path}.text", 3000, out)
            if fields is not None:
                if not isinstance(fields, list) or not 0 < len(fields) <= 10:
                    out.append((f"{path}.fields", "must hold 1 to 10 text objects"))
                else:
                    for i, field in enumerate(fields):
                        _text_object(field, f"{path}.fields.{i}", 2000, out)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 10:
                out.append((f"{path}.elements", "must hold 1 to 10 elements"))
            else:
                for i, element in enumerate(elements):
                    if not (isinstance(element, dict) and element.get("type") == "image"):
                        _text_object(element, f"{path}.elements.{i}", 3000, out)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                out.append((f"{path}.elements", "must hold 1 to 25 elements"))
    return out


def _discord_len(path: str, value: object, limit: int, out: _Problems, required: bool) -> int:
    if value is None and not required:
        return 0
    if not isinstance(value, str) or (required and not value):
        out.append((path, "BASE_TYPE_REQUIRED: This field is required"))
        return 0
    if len(value) > limit:
        out.append((path, f"BASE_TYPE_MAX_LENGTH: Must be {limit} or fewer in length."))
    return len(value)


def _check_discord(body: dict[str, Any]) -> _Problems:
    out: _Problems = []
    content, embeds = body.get("content"), body.get("embeds")
    if not content and not embeds:
        return [("content", "Cannot send an empty message")]
    _discord_len("content", content, 2000, out, required=False)
    mentions = body.get("allowed_mentions")
    if mentions is not None and not (
        isinstance(mentions, dict)
        and set(_list(mentions.get("parse", []))) <= {"roles", "users", "everyone"}
    ):
        out.append(("allowed_mentions", "must name parse types among roles, users, everyone"))
    if embeds is None:
        return out
    if not isinstance(embeds, list) or len(embeds) > 10:
        return [*out, ("embeds", "BASE_TYPE_MAX_LENGTH: Must be 10 or fewer in length.")]
    total = 0
    for n, embed in enumerate(embeds):
        path = f"embeds.{n}"
        if not isinstance(embed, dict):
            out.append((path, "MODEL_TYPE_CONVERT: Only dictionaries may be used"))
            continue
        total += _discord_len(f"{path}.title", embed.get("title"), 256, out, required=False)
        total += _discord_len(f"{path}.description", embed.get("description"), 4096, out, False)
        footer, author = _dict(embed.get("footer")), _dict(embed.get("author"))
        total += _discord_len(f"{path}.footer.text", footer.get("text"), 2048, out, False)
        total += _discord_len(f"{path}.author.name", author.get("name"), 256, out, False)
        color = embed.get("color")
        if color is not None and not (isinstance(color, int) and 0 <= color <= 0xFFFFFF):
            out.append((f"{path}.color", "NUMBER_TYPE_MAX: int value should be <= 16777215."))
        url = embed.get("url")
        if url is not None and not (
            isinstance(url, str) and url.startswith(("http://", "https://"))
        ):
            out.append((f"{path}.url", "URL_TYPE_INVALID_URL: Not a well formed URL."))
        stamp = embed.get("timestamp")
        if stamp is not None:
            try:
                datetime.fromisoformat(str(stamp))
            except ValueError:
                out.append((f"{path}.timestamp", "DATE_TYPE_PARSE: Could not parse the date."))
        fields = embed.get("fields") or []
        if not isinstance(fields, list) or len(fields) > 25:
            out.append((f"{path}.fields", "BASE_TYPE_MAX_LENGTH: Must be 25 or fewer in length."))
            continue
        for i, field in enumerate(fields):
            field = _dict(field)
            total += _discord_len(f"{path}.fields.{i}.name", field.get("name"), 256, out, True)
            total += _discord_len(f"{path}.fields.{i}.value", field.get("value"), 1024, out, True)
    if total > 6000:
        out.append(("embeds", "MAX_EMBED_SIZE_EXCEEDED: Embed size exceeds maximum size of 6000"))
    return out


def _check_teams(body: dict[str, Any]) -> _Problems:
    if body.get("type") != "message":
        return [("type", "must be 'message'")]
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return [("attachments", "must be a non-empty list")]
    out: _Problems = []
    for n, attachment in enumerate(attachments):
        path = f"attachments.{n}"
        if not isinstance(attachment, dict) or attachment.get("contentType") != _ADAPTIVE:
            out.append((f"{path}.contentType", f"must be {_ADAPTIVE}"))
            continue
        card = attachment.get("content")
        if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
            out.append((f"{path}.content.type", "must be 'AdaptiveCard'"))
            continue
        if not isinstance(card.get("version"), str):
            out.append((f"{path}.content.version", "is required"))
        elements = card.get("body")
        if not isinstance(elements, list):
            out.append((f"{path}.content.body", "must be a list"))
            continue
        for i, element in enumerate([*elements, *_list(card.get("actions"))]):
            if not isinstance(element, dict) or not isinstance(element.get("type"), str):
                out.append((f"{path}.content.body.{i}.type", "is required"))
            elif element["type"] == "Action.OpenUrl" and not isinstance(element.get("url"), str):
                out.append((f"{path}.content.actions.{i}.url", "is required"))
            elif element["type"] == "FactSet":
                for fact in map(_dict, _list(element.get("facts"))):
                    if not (
                        isinstance(fact.get("title"), str) and isinstance(fact.get("value"), str)
                    ):
                        out.append((f"{path}.content.body.{i}.facts", "need title and value"))
    return out


def _check_google_chat(body: dict[str, Any]) -> _Problems:
    text, cards = body.get("text"), body.get("cardsV2")
    if not text and not cards:
        return [("text", "Message cannot be empty.")]
    out: _Problems = []
    if text is not None and not (isinstance(text, str) and len(text) <= 4096):
        out.append(("text", "must be a string of at most 4096 characters"))
    if cards is not None and not isinstance(cards, list):
        return [*out, ("cards_v2", "must be a list")]
    for n, item in enumerate(cards or []):
        if not isinstance(item, dict) or not isinstance(item.get("cardId"), str):
            out.append((f"cards_v2[{n}].card_id", "is required"))
        elif not isinstance(item.get("card"), dict):
            out.append((f"cards_v2[{n}].card", "is required"))
        else:
            for i, section in enumerate(_list(item["card"].get("sections"))):
                if not isinstance(section, dict) or not isinstance(section.get("widgets"), list):
                    out.append((f"cards_v2[{n}].card.sections[{i}].widgets", "must be a list"))
    return out


_CHECKS: dict[str, Callable[[dict[str, Any]], _Problems]] = {
    "slack": _check_slack,
    "discord": _check_discord,
    "teams": _check_teams,
    "google_chat": _check_google_chat,
}


def check(kind: str, body: object) -> list[str]:
    """Why the tool of `kind` would refuse this JSON body ('path: message'); [] if accepted."""
    if not isinstance(body, dict):
        return ["body: must be a JSON object"]
    problems = _CHECKS[kind](body)
    if kind == "teams" and len(json.dumps(body, ensure_ascii=False).encode()) > _TEAMS_MAX_BYTES:
        problems.append(("body", f"is over {_TEAMS_MAX_BYTES} bytes"))
    return [f"{path}: {message}" for path, message in problems]


def _discord_errors(problems: list[str]) -> dict[str, Any]:
    # Discord nests its errors by the failing path: {"embeds": {"0": {"title": {"_errors": ..}}}}.
    errors: dict[str, Any] = {}
    for problem in problems:
        path, _, message = problem.partition(": ")
        code, _, text = message.partition(": ")
        node = errors
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": code, "message": text or code})
    return errors


class ChatSim:
    """An incoming webhook of one chat tool: validates bodies, rate-limits on demand."""

    def __init__(self, kind: str, *, rate_limit: tuple[int, float] | None = None) -> None:
        if kind not in _CHECKS:
            raise ValueError(f"unknown chat kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.received: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.rejected: list[tuple[int, str]] = []
        self.attempts: list[tuple[float, int]] = []
        # (limit, window seconds): Discord allows about 5 per 2 s per webhook, Slack 1 per second.
        self.rate_limit = rate_limit
        self._forced: collections.deque[float] = collections.deque()
        self._window: collections.deque[float] = collections.deque()
        self._ids = itertools.count(1)
        self._waiter: asyncio.Event | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def rate_limit_next(self, count: int = 1, retry_after: float = 1.0) -> None:
        """Answer the next `count` requests with 429, asking to wait `retry_after` seconds."""
        self._forced.extend([retry_after] * count)

    # A timeout argument rather than asyncio.timeout around the call: tests read better.
    async def wait_for(
        self,
        count: int,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        """Wait until at least `count` messages were accepted; return them."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.received) < count:
                    self._waiter = asyncio.Event()
                    await self._waiter.wait()
        except TimeoutError:
            msg = f"{self.kind}: {len(self.received)} of {count} messages after {timeout}s"
            raise TimeoutError(msg) from None
        return list(self.received)

    def _retry_after(self, now: float) -> float | None:
        if self._forced:
            return self._forced.popleft()
        if self.rate_limit is None:
            return None
        limit, window = self.rate_limit
        self._prune(now, window)
        if len(self._window) < limit:
            return None
        return max(0.0, self._window[0] + window - now)

    def _prune(self, now: float, window: float) -> None:
        while self._window and self._window[0] <= now - window:
            self._window.popleft()

    def _discord_headers(self, now: float, reset_after: float | None) -> dict[str, str]:
        limit, window = self.rate_limit or (5, 2.0)
        self._prune(now, window)
        if reset_after is None:
            reset_after = self._window[0] + window - now if self._window else window
        remaining = max(0, limit - len(self._window))
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": _DISCORD_BUCKET,
        }

    async def _handle(self, request: Request) -> Response:
        now = time.monotonic()
        raw = await request.body()
        wait = self._retry_after(now)
        if wait is not None:
            self.attempts.append((now, 429))
            self.rejected.append((429, f"rate limited for {wait:.3f}s"))
            return self._too_many(now, wait)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problems = check(self.kind, body) if body is not None else ["body: invalid JSON"]
        if problems:
            status = (
                413 if self.kind == "teams" and problems[-1].startswith("body: is over") else 400
            )
            self.attempts.append((now, status))
            self.rejected.append((status, "; ".join(problems)))
            return self._refuse(status, problems)
        self._window.append(now)
        self.received.append(body)
        self.received_at.append(now)
        self.headers.append(dict(request.headers))
        if self._waiter is not None:
            self._waiter.set()
        status, response = self._accept(request, body, now)
        self.attempts.append((now, status))
        return response

    def _too_many(self, now: float, wait: float) -> Response:
        retry_after = {"Retry-After": str(math.ceil(wait))}
        if self.kind == "slack":
            return PlainTextResponse("rate_limited", 429, headers=retry_after)
        if self.kind == "discord":
            body = {"message": "You are being rate limited.", "retry_after": wait, "global": False}
            headers = {
                **retry_after,
                **self._discord_headers(now, wait),
                "X-RateLimit-Scope": "user",
            }
            headers["X-RateLimit-Remaining"] = "0"
            return JSONResponse(body, 429, headers=headers)
        if self.kind == "teams":
            busy = {"code": "TooManyRequests", "message": "Rate limit is exceeded."}
            return JSONResponse({"error": busy}, 429, headers=retry_after)
        # Google Chat answers quota errors without Retry-After: the sender must back off alone.
        quota = {
            "code": 429,
            "message": "Resource has been exhausted.",
            "status": "RESOURCE_EXHAUSTED",
        }
        return JSONResponse({"error": quota}, 429)

    def _refuse(self, status: int, problems: list[str]) -> Response:
        if self.kind == "slack":
            if problems[0].startswith("body:"):
                return PlainTextResponse("invalid_payload", 400)
            reason = "no_text" if problems[0].startswith("text") else "invalid_blocks"
            return PlainTextResponse(reason, 400)
        if self.kind == "discord":
            if problems[0].startswith("content: Cannot send an empty message"):
                return JSONResponse({"code": 50006, "message": "Cannot send an empty message"}, 400)
            body = {
                "code": 50035,
                "message": "Invalid Form Body",
                "errors": _discord_errors(problems),
            }
            return JSONResponse(body, 400)
        if self.kind == "teams":
            code = "RequestEntityTooLarge" if status == 413 else "InvalidRequestContent"
            return JSONResponse({"error": {"code": code, "message": "; ".join(problems)}}, status)
        invalid = {"code": 400, "message": "; ".join(problems), "status": "INVALID_ARGUMENT"}
        return JSONResponse({"error": invalid}, 400)

    def _accept(self, request: Request, body: dict[str, Any], now: float) -> tuple[int, Response]:
        n = next(self._ids)
        if self.kind == "slack":
            return 200, PlainTextResponse("ok")
        if self.kind == "discord":
            headers = self._discord_headers(now, None)
            if request.query_params.get("wait") == "true":
                message = {"id": str(10**17 + n), "type": 0, **body, "webhook_id": "sim"}
                return 200, JSONResponse(message, headers=headers)
            return 204, Response(status_code=204, headers=headers)
        if self.kind == "teams":
            return 202, Response(status_code=202)
        created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        message = {"name": f"spaces/SIM/messages/{n}", "createTime": created, **body}
        return 200, JSONResponse(message)
