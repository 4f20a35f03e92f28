"""Every outbound HTTP client: aiohttp behind the small request/response shape the relay uses.

PERF-NOTES ("HTTP clients side by side") and `python -m bench httpclients`: aiohttp's own
client costs ~85-100 us of CPU per request here, httpx over the `httpx-aiohttp` transport
~280 us and httpx's httpcore pool 0.9-2 ms. The call sites need a status, headers, a body
(whole or streamed) and errors that say whether a request surely was not sent: that is all
this module offers, with the project's own error types. aiohttp's connector also takes a
resolver, which is where the SSRF guard belongs: the address that was checked is the one
connected to.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ipaddress
import json as jsonlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from service import netguard

log = logging.getLogger(__name__)
# httpx (the simulators, the CLI) logs every request at INFO with its whole URL (callback
# tokens, webhook paths): silenced wherever the relay runs.
logging.getLogger("httpx").setLevel(logging.WARNING)

USER_AGENT = "upscale-relay"
MAX_HOSTS = 256
# aiohttp warns about bodies over 1 MiB given as bytes (written in one go): stream those.
_LARGE_BODY = 1024 * 1024
_BODY_CHUNK = 256 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

Ids = Mapping[str, str]
Params = Mapping[str, str]
# Told of each request's outcome: method, url, HTTP status or None, error name, seconds.
Observe = Callable[[str, str, int | None, str | None, float], None]


class HTTPError(Exception):
    """An outbound request got no usable answer."""


class TransportError(HTTPError):
    """The connection failed, or the answer could not be read."""


class UnsupportedProtocol(TransportError):
    """The URL cannot be requested (not http or https, or malformed)."""


class ConnectError(TransportError):
    """No connection was made: the request surely was not sent."""


class TimeoutException(TransportError):
    """A timeout ran out."""


class ConnectTimeout(TimeoutException):
    """No connection (or pool slot) in time: the request surely was not sent."""


class ReadTimeout(TimeoutException):
    """The answer did not come in time: the request may have been acted on."""


class RemoteProtocolError(TransportError):
    """The server closed the connection or answered something that is not HTTP."""


class ReadError(TransportError):
    """The connection broke while the request or its answer was under way."""


class Refused(OSError):
    """The resolver's refusal: an OSError, as aiohttp expects, carrying the TargetRefused."""

    def __init__(self, refused: netguard.TargetRefused) -> None:
        super().__init__(str(refused))
        self.refused = refused


class GuardedResolver(AbstractResolver):
    """Resolve once, refuse forbidden addresses, and hand aiohttp only the checked ones."""

    def __init__(self, resolve: netguard.Resolver, *, allow_private: bool) -> None:
        self._resolve = resolve
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses aiohttp may connect to for ``host``; raises when any is forbidden."""
        # A failed lookup stays an OSError (aiohttp reports a connect error, worth a retry);
        # only an answer naming a forbidden address is a refusal.
        try:
            addresses = await self._resolve(host, port)
        except UnicodeError as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise OSError(f"no addresses for {host}")
        try:
            checked = netguard.check_addresses(host, addresses, allow_private=self._allow_private)
        except netguard.TargetRefused as exc:
            raise Refused(exc) from None
        return [
            {
                "hostname": host,
                "host": str(ip),
                "port": port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in checked
        ]

    async def close(self) -> None:
        """Nothing to release."""


# First match wins: a subclass comes before its base. Only a failed connect is "surely not
# sent"; a reset after sending or a read timeout must never look like one.
_ERRORS: tuple[tuple[type[BaseException], type[TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, ConnectTimeout),
    (aiohttp.ServerTimeoutError, ReadTimeout),
    (aiohttp.ClientConnectorError, ConnectError),
    (aiohttp.ServerDisconnectedError, RemoteProtocolError),
    (aiohttp.ClientPayloadError, RemoteProtocolError),
    (aiohttp.ClientResponseError, RemoteProtocolError),
    (aiohttp.InvalidURL, UnsupportedProtocol),
    (aiohttp.ClientError, ReadError),
    (TimeoutError, TimeoutException),
)


def _message(exc: BaseException) -> str:
    # Some aiohttp errors print the request URL, whose path or query may be a secret.
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{exc.status}, {exc.message}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {exc.description or 'not usable'}"
    return str(exc) or type(exc).__name__


def translate(exc: BaseException) -> Exception | None:
    """The exception callers should see instead of ``exc``, or None to let it through."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, Refused):
            return cause.refused
        cause = cause.__cause__
    for kind, target in _ERRORS:
        if isinstance(exc, kind):
            return target(_message(exc))
    return None


def describe(
    method: str, url: str, status: int | None, error: str | None, ms: float, ids: Ids | None = None
) -> str:
    """One log line for a request: method, scheme://host:port, outcome, latency and ids."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    outcome = str(status) if status is not None else f"failed ({error})"
    line = f"{method} {parts.scheme}://{host}{port} {outcome} {ms:.0f} ms"
    if ids:
        line += " " + " ".join(f"{k}={v}" for k, v in ids.items() if v)
    return line


def fields(status: int | None, ms: float, ids: Ids | None) -> dict[str, Any]:
    """The same line's facts as structured fields (RELAY_LOG_FORMAT=json writes them out)."""
    out: dict[str, Any] = {"status": status, "latency_ms": round(ms, 1)}
    for key, value in (ids or {}).items():
        if value:
            out[f"{key}_id"] = value
    return out


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The Authorization header of HTTP Basic authentication."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


class Response:
    """An answer: status, headers and the body (read whole, or streamed by `Client.stream`)."""

    __slots__ = ("_stream", "content", "headers", "reason_phrase", "status_code")

    def __init__(
        self,
        status_code: int,
        headers: Mapping[str, str],
        content: bytes = b"",
        reason_phrase: str = "",
        stream: aiohttp.StreamReader | None = None,
    ) -> None:
        self.status_code = status_code
        self.headers = headers  # case-insensitive as aiohttp gives them
        self.content = content
        self.reason_phrase = reason_phrase
        self._stream = stream

    @property
    def is_success(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status_code < 300

    @property
    def is_redirect(self) -> bool:
        """A redirect status with a Location to go to."""
        return self.status_code in _REDIRECTS and "location" in self.headers

    @property
    def text(self) -> str:
        """The body as text (its charset, else UTF-8; undecodable bytes replaced)."""
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, "replace")
        except LookupError:
            return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body decoded as JSON (ValueError when it is not)."""
        return jsonlib.loads(self.content)

    def raise_for_status(self) -> None:
        """Raise HTTPError for an answer outside 2xx."""
        if not self.is_success:
            raise HTTPError(f"HTTP {self.status_code} {self.reason_phrase}".rstrip())

    async def aiter_bytes(self, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        """The streamed body, decoded, in chunks of at most ``chunk_size``."""
        if self._stream is None:
            if self.content:
                yield self.content
            return
        try:
            async for chunk in self._stream.iter_chunked(chunk_size):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = translate(exc)
            if error is None:
                raise
            raise error from None


def _check_literal(host: str) -> None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    reason = netguard.is_forbidden_ip(ip)
    if reason is not None:
        raise netguard.TargetRefused(host, f"{reason} address", private=True)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), _BODY_CHUNK):
        yield bytes(view[start : start + _BODY_CHUNK])


class Client:
    """Requests through one aiohttp pool; errors as this module's types, one log line each."""

    def __init__(
        self,
        *,
        timeout: aiohttp.ClientTimeout,
        ssl_context: ssl.SSLContext,
        connections: int,
        resolver: GuardedResolver | None = None,
        check_literals: bool = False,
        observe: Observe | None = None,
    ) -> None:
        self._observe = observe  # the metrics of a provider's calls (service.metrics)
        self._timeout = timeout
        self._ssl = ssl_context
        self._connections = connections
        self._resolver = resolver
        # aiohttp asks the resolver only for names: IP literals are checked per request.
        self._check_literals = check_literals
        self._made: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def is_closed(self) -> bool:
        """True once `aclose` was called."""
        return self._closed

    def _session(self) -> aiohttp.ClientSession:
        # Made on first use: aiohttp wants a running loop.
        if self._made is None:
            if self._closed:
                raise RuntimeError("the client has been closed")
            connector = aiohttp.TCPConnector(
                limit=self._connections, ssl=self._ssl, resolver=self._resolver
            )
            # No trust_env: a proxy would resolve user-chosen names itself, past the guard.
            # No cookies: one subscriber's cookies are nothing to send another.
            self._made = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._made

    async def _start(
        self,
        method: str,
        url: str,
        params: Params | None,
        json: Any,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        ids: Ids | None,
    ) -> aiohttp.ClientResponse:
        """Send a request and wait for the answer's head; the body is the caller's to read."""
        started = time.perf_counter()
        try:
            target: str | yarl.URL = url
            if self._check_literals:
                try:
                    target = yarl.URL(url)
                except ValueError:
                    raise UnsupportedProtocol("invalid URL: not usable") from None
                _check_literal(target.host or "")
            sent: dict[str, str] = dict(headers) if headers else {}
            data: Any = content
            if json is not None:
                data = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
                sent["Content-Type"] = "application/json"
            if data is not None and len(data) > _LARGE_BODY:
                sent["Content-Length"] = str(len(data))
                data = _chunks(data)
            response = await self._session().request(
                method, target, params=params, data=data, headers=sent, allow_redirects=False
            )
        except Exception as exc:
            error = translate(exc)
            if self._observe is not None:
                failed = type(error or exc).__name__
                self._observe(method, url, None, failed, time.perf_counter() - started)
            if log.isEnabledFor(logging.INFO):
                shown = error or exc
                reason = f"{type(shown).__name__}: {shown}" if error else type(exc).__name__
                ms = (time.perf_counter() - started) * 1000
                log.info(describe(method, url, None, reason, ms, ids), extra=fields(None, ms, ids))
            if error is not None:
                raise error from None
            raise
        if self._observe is not None:
            self._observe(method, url, response.status, None, time.perf_counter() - started)
        level = logging.DEBUG if response.status < 400 else logging.INFO
        if log.isEnabledFor(level):
            ms = (time.perf_counter() - started) * 1000
            line = describe(method, url, response.status, None, ms, ids)
            log.log(level, line, extra=fields(response.status, ms, ids))
        return response

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ids: Ids | None = None,
    ) -> Response:
        """Send a request and read its whole answer (never following redirects)."""
        answer = await self._start(method, url, params, json, content, headers, ids)
        try:
            body = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = translate(exc)
            if error is None:
                raise
            raise error from None
        finally:
            answer.release()
        return Response(answer.status, answer.headers, body, answer.reason or "")

    async def get(
        self,
        url: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        ids: Ids | None = None,
    ) -> Response:
        """GET ``url``."""
        return await self.request("GET", url, params=params, headers=headers, ids=ids)

    async def post(
        self,
        url: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ids: Ids | None = None,
    ) -> Response:
        """POST to ``url``."""
        return await self.request(
            "POST", url, params=params, json=json, content=content, headers=headers, ids=ids
        )

    async def put(
        self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        """PUT ``content`` to ``url``."""
        return await self.request("PUT", url, content=content, headers=headers)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ids: Ids | None = None,
    ) -> AsyncIterator[Response]:
        """The answer once its head is in; its body read with `aiter_bytes` (or left unread)."""
        answer = await self._start(method, url, None, None, content, headers, ids)
        try:
            yield Response(answer.status, answer.headers, b"", answer.reason or "", answer.content)
        finally:
            answer.release()

    async def aclose(self) -> None:
        """Close the pool and its connections."""
        self._closed = True
        if self._made is not None:
            await self._made.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def provider_client(
    timeout: float,
    ssl_context: ssl.SSLContext,
    *,
    connections: int = 32,
    observe: Observe | None = None,
) -> Client:
    """A client for a provider's operator-configured base URL: pooled, bounded, no redirects."""
    # One client is enough: aiohttp's pool does not slow down with concurrency as httpcore's
    # did (the reason the relay used to spread requests over several clients). `connect`
    # also bounds the wait for a pool slot: a request that never got one was never sent.
    limits = aiohttp.ClientTimeout(
        connect=timeout, sock_connect=min(timeout, 10.0), sock_read=timeout
    )
    return Client(timeout=limits, ssl_context=ssl_context, connections=connections, observe=observe)


def guarded_client(
    timeout: float,
    ssl_context: ssl.SSLContext,
    *,
    allow_private: bool,
    resolve: netguard.Resolver | None = None,
    connections: int = 8,
) -> Client:
    """A client for targets a user chose (webhooks, media): connects to checked addresses only."""
    resolver = GuardedResolver(resolve or netguard.system_resolve, allow_private=allow_private)
    limits = aiohttp.ClientTimeout(connect=timeout, sock_connect=timeout, sock_read=timeout)
    return Client(
        timeout=limits,
        ssl_context=ssl_context,
        connections=connections,
        resolver=resolver,
        check_literals=not allow_private,
    )


@dataclass(slots=True)
class _Entry:
    client: Client
    gate: asyncio.Semaphore
    users: int = 0
    evicted: bool = False


@dataclass(slots=True)
class HostClients:
    """One client per destination host, at most ``bound`` of them (least recently used go)."""

    make: Callable[[], Client]
    per_host: int
    bound: int = MAX_HOSTS
    _entries: collections.OrderedDict[str, _Entry] = field(default_factory=collections.OrderedDict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def use(self, key: str) -> AsyncIterator[tuple[Client, asyncio.Semaphore]]:
        """The host's client and its gate, kept open while the caller uses them."""
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(self.make(), asyncio.Semaphore(self.per_host))
            self._entries[key] = entry
            while len(self._entries) > self.bound:
                _, old = self._entries.popitem(last=False)
                old.evicted = True
                if old.users == 0:
                    self._close(old)
        else:
            self._entries.move_to_end(key)
        entry.users += 1
        try:
            yield entry.client, entry.gate
        finally:
            entry.users -= 1
            # An evicted client in use is closed by its last user, never under a request.
            if entry.evicted and entry.users == 0:
                self._close(entry)

    def _close(self, entry: _Entry) -> None:
        task = asyncio.create_task(entry.client.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every client, including evicted ones still closing."""
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            await entry.client.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)
