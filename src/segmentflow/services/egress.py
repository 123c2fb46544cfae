"""Every outbound connection goes through here: webhooks (sequences, actions, SLA), the chat-completions
responder and SMTP. Resolve once, check the address (`policies.egress`), connect to that very address.

- `EgressTransport`: the httpx transport all our HTTP clients use (`egress_client`). It refuses a non-http(s)
  URL, resolves the host once, drops every address the policy refuses, and connects to a checked one
  (TLS still verifies and sends SNI for the URL's host name; the `Host` header is the URL's), so a name
  that resolves to 127.0.0.1, or re-resolves there after a check (DNS rebinding), is never connected to.
  A refusal raises `EgressRefusedError`, which callers treat as final, never as a retry.
- Responses are read up to a cap (`SEGMENTFLOW_MAX_RESPONSE_BYTES`, default 64 KiB): the rest is not read
  (the connection is closed instead of drained) and the answer is marked truncated. Headers larger than
  `max_header_bytes` and every malformed answer raise `httpx.RemoteProtocolError`; the transport raises
  nothing but `httpx.TransportError` subclasses (with `EgressRefusedError` among them).
- `post_json` sends one POST through any httpx client and reads the body with the same cap (for transports
  other than ours too), asking for an unencoded body and decompressing a compressed one only up to the cap.
- `connect_socket`: the same resolve-check-connect for SMTP (aiosmtplib takes the connected socket).
Redirects are never followed (httpx does not by default, and `redirect_refusal` names a 3xx for callers).

Why our own HTTP/1.1 transport rather than httpcore's pool: on a 2-core machine httpcore's async pool spends
~3 ms of CPU per request, which caps a webhook channel far below the ~1,000 sends/s a sequence batch
otherwise reaches; this one, checks included, does 5-7x that (bench/egress.py). No proxies and no HTTP/2
(a proxy would connect on our behalf, out of the policy's sight).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from segmentflow.policies.egress import (
    EgressPolicy,
    address_refusal,
    literal_address,
    redact_url,
    url_refusal,
)

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "Answer",
    "EgressClient",
    "EgressRefusedError",
    "EgressTransport",
    "Resolver",
    "checked_addresses",
    "connect_socket",
    "egress_client",
    "post_json",
    "redirect_refusal",
    "system_resolver",
]

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
#: The extension an `EgressTransport` response carries when its body was cut at the cap.
TRUNCATED = "segmentflow.truncated"

#: host, port -> the addresses it resolves to (strings, in the resolver's order).
Resolver = Callable[[str, int], Awaitable[list[str]]]


class EgressRefusedError(httpx.TransportError):
    """The egress policy refused the request (scheme, or the address it would connect to). Final: a
    retry would be refused the same way."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's answer (getaddrinfo, in a thread as asyncio does it), addresses in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_addresses(host: str, port: int, *, policy: EgressPolicy, resolve: Resolver) -> list[str]:
    """The addresses of `host` the policy allows connecting to, resolved once. A literal address is
    judged as itself (whatever form: `2130706433` is 127.0.0.1). Raises `EgressRefusedError` when none is
    allowed (naming the first refused address), `OSError` when the name does not resolve."""
    literal = literal_address(host)
    if literal is not None:
        reason = address_refusal(literal, policy, host=host)
        if reason is not None:
            raise EgressRefusedError(reason)
        return [str(literal)]
    found = await resolve(host, port)
    allowed: list[str] = []
    first_refusal: str | None = None
    for text in found:
        address = literal_address(text)
        if address is None:
            continue
        reason = address_refusal(address, policy, host=host)
        if reason is None:
            allowed.append(str(address))
        elif first_refusal is None:
            first_refusal = reason
    if not allowed:
        raise EgressRefusedError(first_refusal or f"egress refused: {host} resolves to no address")
    return allowed


async def connect_socket(
    host: str, port: int, *, policy: EgressPolicy, resolve: Resolver = system_resolver, timeout: float
) -> socket.socket:
    """A connected (non-blocking) TCP socket to a checked address of `host` (SMTP's way in). Raises
    `EgressRefusedError`, `OSError` or `TimeoutError`."""
    loop = asyncio.get_running_loop()

    async def attempt() -> socket.socket:
        last: OSError | None = None
        for address in await checked_addresses(host, port, policy=policy, resolve=resolve):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (address, port))
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise last or OSError(f"could not connect to {host}:{port}")

    return await asyncio.wait_for(attempt(), timeout)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class _Body(httpx.AsyncByteStream):
    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._content


class _ProtocolError(Exception):
    """A malformed or oversized answer (mapped to `httpx.RemoteProtocolError`)."""


@dataclass(frozen=True, slots=True)
class _Exchange:
    status: int
    headers: list[tuple[str, str]]
    content: bytes
    keep: bool
    truncated: bool


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL as the direct path sends to it: its origin and the request line with the `host` header."""

    origin: tuple[str, str, int]
    head: str


#: The headers httpx's client adds to every request, in its order (the direct path sends the same).
_CLIENT_HEADERS = {
    "accept": "*/*",
    "connection": "keep-alive",
    "user-agent": f"python-httpx/{httpx.__version__}",
    "accept-encoding": "identity",
}
#: Headers the direct path leaves to httpx when a caller sets them.
_FRAMING_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection"})
_TARGETS_KEPT = 1024


class EgressTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 for httpx under the egress policy: keep-alive connections per origin over asyncio streams
    (each to a checked address), request bodies sent whole, response bodies read up to `max_body` bytes.

    `post_json` is its direct path (what `services.egress.post_json` uses on an `EgressClient`): the same
    request bytes, checks, connections and limits without building httpx's request and response objects,
    which cost more CPU than the exchange itself at a thousand webhook calls a second."""

    def __init__(
        self,
        *,
        policy: EgressPolicy,
        max_connections: int = 64,
        timeout: float = 10.0,
        max_body: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        resolve: Resolver = system_resolver,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: the context https connections verify with (default: the system's trust store)."""
        self.policy = policy
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._gate = asyncio.Semaphore(max_connections)
        self._timeout = timeout
        self._max_body = max_body
        self._max_header = max_header_bytes
        self._resolve = resolve
        self._ssl: ssl.SSLContext | None = tls
        self._targets: dict[str, _Target | None] = {}

    async def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        context = None
        if scheme == "https":
            self._ssl = self._ssl or ssl.create_default_context()
            context = self._ssl
        last: OSError | None = None
        for address in await checked_addresses(host, port, policy=self.policy, resolve=self._resolve):
            try:
                reader, writer = await asyncio.open_connection(
                    address,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                    limit=self._max_header,
                )
            except OSError as exc:  # the next checked address, if any
                last = exc
                continue
            return _Connection(reader, writer)
        raise last or OSError(f"could not connect to {host}:{port}")

    async def _open(self, request: httpx.Request | None, origin: tuple[str, str, int]) -> _Connection:
        """A new connection; failures as httpx errors (refused by policy or peer, unresolvable, TLS,
        timeout)."""
        try:
            return await asyncio.wait_for(self._connect(*origin), self._timeout)
        except EgressRefusedError as exc:
            if request is not None:
                exc.request = request
            raise
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except (OSError, ssl.SSLError) as exc:  # ConnectionRefusedError, socket.gaierror, ...
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        refusal = url_refusal(str(url), self.policy) if scheme not in ("http", "https") else None
        if refusal is not None:
            raise EgressRefusedError(refusal, request=request)
        port = url.port or (443 if scheme == "https" else 80)
        origin = (scheme, url.host, port)
        body = await request.aread()
        head = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1\r\n"]
        headers = request.headers.copy()
        headers["Content-Length"] = str(len(body))
        head.extend(f"{k}: {v}\r\n" for k, v in headers.multi_items() if k.lower() != "transfer-encoding")
        message = ("".join(head) + "\r\n").encode("latin-1") + body
        answer = await self._round_trip(request, origin, message)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=_Body(answer.content),
            request=request,
            extensions={TRUNCATED: answer.truncated},
        )

    async def _round_trip(
        self, request: httpx.Request | None, origin: tuple[str, str, int], message: bytes
    ) -> _Exchange:
        """Send `message` on an idle connection to `origin` (or a new one to a checked address) and read
        the answer; a kept-alive connection goes back to the pool."""
        async with self._gate:
            pool = self._idle.setdefault(origin, [])
            reused = bool(pool)
            connection = pool.pop() if pool else await self._open(request, origin)
            try:
                answer = await self._answer(request, connection, message)
            except httpx.ConnectError:
                if not reused:
                    raise
                # The server closed an idle connection: one fresh try.
                connection = await self._open(request, origin)
                answer = await self._answer(request, connection, message)
            if answer.keep:
                self._idle.setdefault(origin, []).append(connection)
            else:
                connection.close()
        return answer

    def _target(self, url: str) -> _Target | None:
        """`url` parsed once (as httpx parses it); None for what the direct path leaves to httpx: another
        scheme than http(s) (refused there with the policy's reason), no host, or credentials in the URL."""
        if url in self._targets:
            return self._targets[url]
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            found = None
        else:
            scheme = parsed.scheme
            found = None
            if scheme in ("http", "https") and parsed.host and not parsed.userinfo:
                port = parsed.port or (443 if scheme == "https" else 80)
                found = _Target(
                    (scheme, parsed.host, port),
                    f"POST {parsed.raw_path.decode('ascii')} HTTP/1.1\r\n"
                    f"host: {parsed.netloc.decode('ascii')}\r\n",
                )
        if len(self._targets) >= _TARGETS_KEPT:
            self._targets.clear()
        self._targets[url] = found
        return found

    async def post_json(
        self, url: str, payload: Mapping[str, Any] | list[Any], headers: Mapping[str, str]
    ) -> _Exchange | None:
        """POST `payload` as JSON with the bytes httpx's client would send through this transport (same
        header set, same compact JSON); None when the URL or a header needs httpx's general path (see
        `_target`; a header framing the message, or a value that is not plain ASCII)."""
        target = self._target(url)
        if target is None:
            return None
        fields = dict(_CLIENT_HEADERS)
        given: set[str] = set()
        for name, value in headers.items():  # as httpx merges: a header set here moves to the end
            key = name.lower()
            if (
                key in _FRAMING_HEADERS
                or key in given
                or not value.isascii()
                or "\r" in value
                or "\n" in value
            ):
                return None
            given.add(key)
            fields.pop(key, None)
            fields[key] = value
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        message = (
            f"{target.head}{head}content-length: {len(body)}\r\ncontent-type: application/json\r\n\r\n"
        ).encode("latin-1") + body
        return await self._round_trip(None, target.origin, message)

    async def _answer(
        self, request: httpx.Request | None, connection: _Connection, message: bytes
    ) -> _Exchange:
        """One exchange; the connection is closed on any failure (its state is unknown)."""
        try:
            async with asyncio.timeout(self._timeout):  # no task per request, unlike wait_for on 3.11
                return await self._exchange(connection, message)
        except TimeoutError:
            connection.close()
            raise httpx.ReadTimeout("timed out waiting for the response", request=request) from None
        except (_ProtocolError, asyncio.LimitOverrunError) as exc:
            connection.close()
            if isinstance(exc, asyncio.LimitOverrunError):
                exc = _ProtocolError(f"a response header section or line over {self._max_header} bytes")
            raise httpx.RemoteProtocolError(str(exc), request=request) from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            connection.close()
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from None
        except BaseException:  # cancelled mid-exchange
            connection.close()
            raise

    async def _exchange(self, connection: _Connection, message: bytes) -> _Exchange:
        connection.writer.write(message)
        await connection.writer.drain()
        reader = connection.reader
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            version, status_text = lines[0].split(" ", 2)[:2]
            status = int(status_text)
        except ValueError:
            raise _ProtocolError(f"not an HTTP status line: {lines[0][:100]!r}") from None
        if not version.startswith("HTTP/1.") or not 100 <= status <= 999:
            raise _ProtocolError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
        headers = [
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if ":" in line)
        ]
        fields = {k.lower(): v for k, v in headers}
        keep = version == "HTTP/1.1" and fields.get("connection", "").lower() != "close"
        cap = self._max_body
        truncated = False
        if status in (204, 304) or status < 200:  # no body, whatever the headers say (RFC 9112 6.3)
            content = b""
        elif "content-length" in fields:
            try:
                length = int(fields["content-length"])
            except ValueError:
                raise _ProtocolError(f"Content-Length {fields['content-length'][:40]!r}") from None
            if length < 0:
                raise _ProtocolError(f"Content-Length {length}")
            if length > cap:
                content, keep, truncated = await reader.readexactly(cap), False, True
            else:
                content = await reader.readexactly(length)
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            content, truncated = await self._chunked(reader, cap)
            keep = keep and not truncated
        else:
            content, keep = await self._until_close(reader, cap), False
            truncated = len(content) > cap
            content = content[:cap]
        return _Exchange(status, headers, content, keep, truncated)

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                raise _ProtocolError(f"not a chunk size: {line[:40]!r}") from None
            if size < 0:
                raise _ProtocolError("a negative chunk size")
            if size == 0:
                await reader.readuntil(b"\r\n")  # the empty trailer (trailers are not supported)
                return b"".join(parts), False
            if total + size > cap:
                parts.append(await reader.readexactly(cap - total))
                return b"".join(parts), True  # the rest is left unread: the connection is closed
            parts.append((await reader.readexactly(size + 2))[:-2])
            total += size

    @staticmethod
    async def _until_close(reader: asyncio.StreamReader, cap: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while total <= cap:
            chunk = await reader.read(min(65536, cap + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for pool in idle.values():
            for connection in pool:
                connection.close()


class EgressClient(httpx.AsyncClient):
    """The httpx client `egress_client` builds: `direct` is its `EgressTransport` (None when a test gave a
    stand-in transport), which `post_json` sends through without httpx's request machinery. It keeps no
    cookies (a webhook receiver's cookie is never sent back, to it or to anyone)."""

    direct: EgressTransport | None = None


def egress_client(
    *,
    policy: EgressPolicy,
    max_connections: int = 64,
    timeout: float = 10.0,
    max_body: int = DEFAULT_MAX_RESPONSE_BYTES,
    resolve: Resolver = system_resolver,
    tls: ssl.SSLContext | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> EgressClient:
    """The httpx client every outbound request uses: an `EgressTransport` (unless a test gives a stand-in
    transport), no redirects followed, unencoded bodies asked for, no cookies kept."""
    direct = (
        None
        if transport is not None
        else EgressTransport(
            policy=policy,
            max_connections=max_connections,
            timeout=timeout,
            max_body=max_body,
            resolve=resolve,
            tls=tls,
        )
    )
    client = EgressClient(
        transport=transport or direct,
        timeout=timeout,
        follow_redirects=False,
        headers={"Accept-Encoding": "identity"},
    )
    client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # keeps none
    client.direct = direct
    return client


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer with its body read up to the cap; `truncated` when there was more."""

    status_code: int
    headers: httpx.Headers
    body: bytes
    truncated: bool

    @property
    def text(self) -> str:
        charset = httpx.Response(self.status_code, headers=self.headers).charset_encoding or "utf-8"
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def summary(self, limit: int) -> str:
        """The body as text, cut to `limit` characters, saying when the answer was truncated."""
        text = self.text[:limit]
        return f"{text} [truncated]" if self.truncated or len(self.text) > limit else text


def redirect_refusal(answer: Answer, url: str) -> str | None:
    """For a 3xx: the failure that names it (redirects are never followed). Secrets in either URL are
    redacted."""
    if not 300 <= answer.status_code < 400:
        return None
    location = answer.headers.get("location")
    where = f" to {redact_url(location)}" if location else ""
    return f"{redact_url(url)} answered HTTP {answer.status_code}: redirect{where} not followed"


def _decoder(encoding: str) -> Any:
    """A decompressor for a `Content-Encoding` (None: identity, or one we do not decode)."""
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    truncated = bool(response.extensions.get(TRUNCATED))
    try:
        held = response.content  # an answer built in memory (a stand-in transport's): nothing to stream
    except httpx.ResponseNotRead:
        pass
    else:
        return held[:cap], truncated or len(held) > cap
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    decoder = _decoder(encoding)
    parts: list[bytes] = []
    total = 0
    async for chunk in response.aiter_raw():
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk, cap + 1 - total)
            except zlib.error as exc:  # a transport error like any other malformed answer
                raise httpx.RemoteProtocolError(f"{encoding}: {exc}", request=response.request) from None
        parts.append(chunk)
        total += len(chunk)
        if total > cap:
            return b"".join(parts)[:cap], True
    return b"".join(parts), truncated


def _direct_answer(exchange: _Exchange, cap: int) -> Answer:
    """An `Answer` from the direct path's exchange, its body decoded as `_read_capped` decodes one."""
    headers = httpx.Headers(exchange.headers)
    body, truncated = exchange.content, exchange.truncated
    encoding = headers.get("content-encoding", "identity").strip().lower()
    decoder = _decoder(encoding)
    if decoder is not None and body:
        try:
            body = decoder.decompress(body, cap + 1)
        except zlib.error as exc:
            raise httpx.RemoteProtocolError(f"{encoding}: {exc}") from None
    if len(body) > cap:
        body, truncated = body[:cap], True
    return Answer(exchange.status, headers, body, truncated)


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: Mapping[str, Any] | list[Any],
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    max_body: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Answer:
    """POST `payload` as JSON and read the answer's body up to `max_body` bytes (the rest is discarded
    unread). Raises only `httpx.TransportError` subclasses (`EgressRefusedError` for a policy refusal) and
    `httpx.InvalidURL`."""
    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    direct = client.direct if isinstance(client, EgressClient) else None
    if direct is not None:
        exchange = await direct.post_json(url, payload, sent)
        if exchange is not None:
            return _direct_answer(exchange, max_body)
    try:
        async with client.stream("POST", url, json=payload, headers=sent, **extra) as response:
            body, truncated = await _read_capped(response, max_body)
    except httpx.UnsupportedProtocol as exc:
        raise EgressRefusedError(url_refusal(url, EgressPolicy()) or str(exc)) from None
    return Answer(response.status_code, response.headers, body, truncated)
