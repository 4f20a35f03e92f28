"""uvicorn's httptools protocol with a deadline and a size cap on each request's headers."""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def protocol(header_timeout: float, max_header_bytes: int) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn as `http=`, with these limits."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHeaders,),
        {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes},
    )


class BoundedHeaders(HttpToolsProtocol):
    """Close a connection whose request line and headers are too slow or too large.

    httptools puts no bound on either, and uvicorn's keep-alive timer only runs between
    requests: a silent or trickling client could hold a connection, or make the parser
    buffer an 8 MiB header, for as long as it liked.
    """

    header_timeout = 10.0
    max_header_bytes = 32 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn logs each request when the access logger has any handler (ours propagate to
        # the root's), building its arguments even when the level then drops the line: only
        # when INFO would print is the (token-redacting) access log kept.
        self.access_log = self.access_log and self.access_logger.isEnabledFor(logging.INFO)
        self.relay_in_head = True
        self.relay_head_bytes = 0
        self.relay_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._relay_arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay_disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.relay_in_head:
            self.relay_head_bytes += len(data)
        super().data_received(data)
        # counted before the parser saw the chunk, judged after: a chunk that also carries
        # the body is not mistaken for a large header
        if self.relay_in_head and self.relay_head_bytes > self.max_header_bytes:
            self._relay_refuse(431, f"request headers over {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.relay_timer is None:
            self._relay_arm()  # a later request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self.relay_in_head = False
        self._relay_disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.relay_in_head = True
        self.relay_head_bytes = 0

    def _relay_arm(self) -> None:
        loop = asyncio.get_running_loop()
        self.relay_timer = loop.call_later(self.header_timeout, self._relay_expired)

    def _relay_disarm(self) -> None:
        if self.relay_timer is not None:
            self.relay_timer.cancel()
            self.relay_timer = None

    def _relay_expired(self) -> None:
        self.relay_timer = None
        if self.relay_in_head:
            self._relay_refuse(
                408, f"request headers not received within {self.header_timeout:g} s"
            )

    def _relay_refuse(self, status: int, message: str) -> None:
        self._relay_disarm()
        if self.transport.is_closing():
            return
        log.debug("closing a connection: %s", message)
        if self.cycle is None or self.cycle.response_complete:
            code = "request_timeout" if status == 408 else "headers_too_large"
            body = json.dumps(
                {"error": {"code": code, "message": message, "details": None}}
            ).encode()
            head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
            head += b"content-type: application/json\r\nconnection: close\r\n"
            head += b"content-length: %d\r\n\r\n" % len(body)
            self.transport.write(head + body)
        # else a response is being written on this connection: cutting it short is all we can do
        self.transport.close()
