"""Every outbound HTTP client: httpx's API over aiohttp, guarded where a user chose the target.

PERF-NOTES ("HTTP clients side by side") and bench/httpclients.py: httpx over the
`httpx-aiohttp` transport costs 2-4x less CPU per request than httpx's own httpcore pool
(~280 us against 600-1,050 us here; bare aiohttp ~85 us), and keeps httpx's API, its error
types and `httpx.MockTransport` for unit tests. aiohttp's connector also takes a resolver,
which is where the SSRF guard belongs: the address that was checked is the one connected to.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport

from service import netguard

log = logging.getLogger(__name__)
# httpx logs every request at INFO with its whole URL (Slack webhook paths, `?key=&token=`,
# signed media URLs): silenced, and each request is logged below without path or query.
logging.getLogger("httpx").setLevel(logging.WARNING)

USER_AGENT = "upscale-relay"
# A request may carry the ids it serves in this extension: {"job": ..., "delivery": ...}.
IDS = "relay_ids"
MAX_HOSTS = 256
# aiohttp warns about bodies over 1 MiB given as bytes (written in one go): stream those.
_LARGE_BODY = 1024 * 1024
_BODY_CHUNK = 256 * 1024


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


# First match wins: a subclass comes before its base. httpx-aiohttp's own mapping turns every
# aiohttp ClientConnectionError (a reset after sending, a read timeout) into ConnectTimeout,
# which would mark sent requests as "surely not sent" and make them safe to resend.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientError, httpx.ReadError),
    (TimeoutError, httpx.TimeoutException),
)


def _message(exc: BaseException) -> str:
    # Some aiohttp errors print the request URL, whose path or query may be a secret.
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{exc.status}, {exc.message}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {exc.description or 'not usable'}"
    return str(exc) or type(exc).__name__


def translate(exc: Exception, request: httpx.Request) -> Exception | None:
    """The exception callers should see instead of ``exc``, or None to let it through."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, Refused):
            return cause.refused
        cause = cause.__cause__
    original = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
    for kind, target in _ERRORS:
        if isinstance(original, kind):
            return target(_message(original), request=request)
    return None


def describe(
    method: str,
    url: httpx.URL,
    status: int | None,
    error: str | None,
    ms: float,
    ids: Mapping[str, str] | None = None,
) -> str:
    """One log line for a request: method, scheme://host:port, outcome, latency and ids."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = f":{url.port}" if url.port is not None else ""
    outcome = str(status) if status is not None else f"failed ({error})"
    line = f"{method} {url.scheme}://{host}{port} {outcome} {ms:.0f} ms"
    if ids:
        line += " " + " ".join(f"{k}={v}" for k, v in ids.items() if v)
    return line


class Transport(httpx.AsyncBaseTransport):
    """Wraps the aiohttp transport: refuses forbidden IP literals, fixes errors, logs."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, guard: bool) -> None:
        self._inner = inner
        self._guard = guard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request (aiohttp asks the resolver only for names, so literals are checked)."""
        started = time.perf_counter()
        ids = request.extensions.get(IDS)
        try:
            if self._guard:
                _check_literal(request.url.host)
            response = await self._inner.handle_async_request(_streamed(request))
        except Exception as exc:
            error = translate(exc, request)
            shown = error or exc
            if log.isEnabledFor(logging.INFO):
                reason = f"{type(shown).__name__}: {shown}" if error else type(exc).__name__
                ms = (time.perf_counter() - started) * 1000
                log.info(describe(request.method, request.url, None, reason, ms, ids))
            if error is not None:
                raise error from None
            raise
        level = logging.DEBUG if response.status_code < 400 else logging.INFO
        if log.isEnabledFor(level):
            ms = (time.perf_counter() - started) * 1000
            log.log(
                level, describe(request.method, request.url, response.status_code, None, ms, ids)
            )
        return response

    async def aclose(self) -> None:
        """Close the aiohttp session and its connections."""
        await self._inner.aclose()


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self._data)
        for start in range(0, len(view), _BODY_CHUNK):
            yield bytes(view[start : start + _BODY_CHUNK])


def _streamed(request: httpx.Request) -> httpx.Request:
    """The request, its body given as chunks when large (Content-Length is kept)."""
    try:
        content = request.content
    except httpx.RequestNotRead:
        return request
    if len(content) <= _LARGE_BODY:
        return request
    return httpx.Request(
        request.method,
        request.url,
        headers=request.headers,
        stream=_Chunks(content),
        extensions=request.extensions,
    )


def _check_literal(host: str) -> None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    reason = netguard.is_forbidden_ip(ip)
    if reason is not None:
        raise netguard.TargetRefused(host, f"{reason} address", private=True)


def _transport(
    *,
    guard: bool,
    resolve: netguard.Resolver | None,
    allow_private: bool,
    ssl_context: ssl.SSLContext,
    connections: int,
) -> Transport:
    def session() -> aiohttp.ClientSession:
        # Made on first use: aiohttp wants a running loop.
        resolver = (
            GuardedResolver(resolve or netguard.system_resolve, allow_private=allow_private)
            if guard
            else None
        )
        connector = aiohttp.TCPConnector(limit=connections, ssl=ssl_context, resolver=resolver)
        # No trust_env: a proxy would resolve user-chosen names itself, past the guard, and
        # aiohttp reads the proxy variables and ~/.netrc again on every request.
        return aiohttp.ClientSession(connector=connector)

    inner = AiohttpTransport(verify=ssl_context, trust_env=False, client=session)
    return Transport(inner, guard=guard and not allow_private)


def _client(transport: Transport, timeout: httpx.Timeout) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


def provider_client(
    timeout: float, ssl_context: ssl.SSLContext, *, connections: int = 32
) -> httpx.AsyncClient:
    """A client for a provider's operator-configured base URL: pooled, bounded, no redirects."""
    # One client is enough: aiohttp's pool does not slow down with concurrency as httpcore's
    # did (the reason the relay used to spread requests over several clients).
    transport = _transport(
        guard=False,
        resolve=None,
        allow_private=True,
        ssl_context=ssl_context,
        connections=connections,
    )
    return _client(transport, httpx.Timeout(timeout, connect=min(timeout, 10.0)))


def guarded_client(
    timeout: float,
    ssl_context: ssl.SSLContext,
    *,
    allow_private: bool,
    resolve: netguard.Resolver | None = None,
    connections: int = 8,
) -> httpx.AsyncClient:
    """A client for targets a user chose (webhooks, media): connects to checked addresses only."""
    transport = _transport(
        guard=True,
        resolve=resolve,
        allow_private=allow_private,
        ssl_context=ssl_context,
        connections=connections,
    )
    return _client(transport, httpx.Timeout(timeout))


@dataclass(slots=True)
class _Entry:
    client: httpx.AsyncClient
    gate: asyncio.Semaphore
    users: int = 0
    evicted: bool = False


@dataclass(slots=True)
class HostClients:
    """One client per destination host, at most ``bound`` of them (least recently used go)."""

    make: Callable[[], httpx.AsyncClient]
    per_host: int
    bound: int = MAX_HOSTS
    _entries: collections.OrderedDict[str, _Entry] = field(default_factory=collections.OrderedDict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def use(self, key: str) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.Semaphore]]:
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
