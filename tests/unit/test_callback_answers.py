"""The callback route's 200 answers, encoded once: the same bytes as encoding each time."""

from __future__ import annotations

import json
from typing import Any, get_args

from service import ledger
from service.http import callbacks


async def _answer(status: int, answer: dict[str, Any], headers: dict[str, str]) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await callbacks._respond(send, status, answer, headers)
    return sent


async def test_every_outcome_has_its_ready_answer() -> None:
    for outcome in get_args(ledger.CallbackOutcome):
        start, body = await _answer(200, {"ok": True, "outcome": outcome}, {})
        assert start["status"] == 200
        assert json.loads(body["body"]) == {"ok": True, "outcome": outcome}
        assert dict(start["headers"]) == {
            b"content-type": b"application/json",
            b"content-length": str(len(body["body"])).encode(),
        }
    # each answer gets its own header list: a server changing one spoils no other
    first, _ = await _answer(200, {"ok": True, "outcome": "applied"}, {})
    first["headers"].append((b"x", b"y"))
    again, _ = await _answer(200, {"ok": True, "outcome": "applied"}, {})
    assert len(again["headers"]) == 2
    assert set(callbacks._OK) == set(get_args(ledger.CallbackOutcome))


async def test_errors_are_encoded_with_their_headers() -> None:
    error = {"error": {"code": "method_not_allowed", "message": "no", "details": None}}
    start, body = await _answer(405, error, {"allow": "POST"})
    assert start["status"] == 405
    assert json.loads(body["body"]) == error
    assert (b"allow", b"POST") in start["headers"]
