"""What keeps one client from exhausting the dashboard or reading what is not for it (docs/security.md).

- The server: frames over 4 KiB close the socket (hypercorn's `websocket_max_message_size`), pings every
  `ping_seconds` and a read timeout of three of them (a socket from which not even a pong arrives goes), and a
  listening socket whose accepted connections give up on data the peer does not take within `send_timeout`
  plus a margin (TCP_USER_TIMEOUT: a client that stops reading cannot hold a socket open for ever).
- The app: a bounded queue of received frames per socket (when it is full the server stops reading that
  socket, so TCP pushes back on the client), caps on open sockets per client address and in all, and a
  subscribe budget shared by all the sockets of one address.
- Every response: the Host allowlist (DNS rebinding) and security headers (CSP, frame-ancestors, nosniff,
  referrer policy).
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quart.asgi import ASGIWebsocketConnection

from cryptopulse.errors import ConfigError
from webui.protocol import TokenBucket, is_loopback

if TYPE_CHECKING:
    from hypercorn.config import Config
    from quart import Quart

    from webui.config import WebConfig

# The app's own scripts, styles and socket only; never framed; no referrer leaves the page.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP 2
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-Ip")


PROXIED = "cryptopulse.proxied"  # set in the scope of a request a trusted proxy forwarded (`ProxyHeaders`)


def client_address(scope: dict[str, Any]) -> str:
    """The client's address: the peer as the server saw it, or, behind a trusted proxy, the address the proxy
    forwarded (`ProxyHeaders`); "local" without one (in-process tests, a Unix socket)."""
    client = scope.get("client")
    return str(client[0]) if client else "local"


def is_local(scope: dict[str, Any], headers: Any) -> bool:
    """A request from this machine that no proxy forwarded: a proxy on the same host is not its clients. A request
    from a trusted proxy (WEBUI_TRUSTED_PROXIES) is never local, whatever it forwards or leaves out (nginx's plain
    proxy_pass adds no X-Forwarded-For: each of its clients looked local); nor is any request that carries a
    forwarding header."""
    if scope.get(PROXIED) or any(headers.get(name) for name in FORWARDING_HEADERS):
        return False
    address = client_address(scope)
    return address in ("local", "<local>") or is_loopback(address)


def proxy_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """WEBUI_TRUSTED_PROXIES as networks (an address is a network of one); ConfigError for anything else."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(f"WEBUI_TRUSTED_PROXIES: {entry!r} is not an address or a network (such as 127.0.0.1 "
                              "or 10.0.0.0/8)") from None
    return tuple(networks)


def _in(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _forwarded_for(headers: dict[bytes, bytes], networks: tuple[Any, ...]) -> str | None:
    """The client a chain of trusted proxies forwarded: the right-most X-Forwarded-For (or Forwarded for=) entry
    that is not itself a trusted proxy (the left ones are what the client said), else X-Real-IP."""
    chain: list[str] = []
    if b"x-forwarded-for" in headers:
        chain = [part.strip() for part in headers[b"x-forwarded-for"].decode("latin-1").split(",")]
    elif b"forwarded" in headers:
        for element in headers[b"forwarded"].decode("latin-1").split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for":
                    value = value.strip('"')
                    if value.startswith("["):
                        value = value[1:].split("]")[0]
                    elif value.count(":") == 1:
                        value = value.split(":")[0]
                    chain.append(value)
    for entry in reversed(chain):
        if entry and not _in(entry, networks):
            return entry if _is_address(entry) else None
    if b"x-real-ip" in headers:
        real = headers[b"x-real-ip"].decode("latin-1").strip()
        return real if _is_address(real) else None
    return None


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _forwarded_proto(headers: dict[bytes, bytes]) -> str | None:
    if b"x-forwarded-proto" in headers:
        return headers[b"x-forwarded-proto"].decode("latin-1").split(",")[0].strip().lower()
    for element in headers.get(b"forwarded", b"").decode("latin-1").split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "proto":
                return value.strip('"').lower()
    return None


class ProxyHeaders:
    """ASGI middleware in front of the app: the request head's size, and who the client is behind a proxy.

    - A head (request line and headers) over `max_head_bytes` is refused (431; a WebSocket handshake is closed):
      hypercorn's h11_max_incomplete_size only bounds a head that has not arrived whole, and one read takes up to
      64 KiB, so a head of ~64 KiB sent at once was accepted.
    - From a trusted proxy (WEBUI_TRUSTED_PROXIES): the scope is marked PROXIED (never local), its client is the
      forwarded address (the proxy's own when it forwards none), its scheme the forwarded one (https or http).
      From anyone else, forwarded headers change nothing here (they still make a request non-local: `is_local`).
    """

    def __init__(self, app: Any, trusted: tuple[str, ...], max_head_bytes: int) -> None:
        self.app = app
        self.networks = proxy_networks(trusted)
        self.max_head_bytes = max_head_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
        head += sum(len(name) + len(value) + 4 for name, value in scope.get("headers") or [])
        if head > self.max_head_bytes:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1009})
                return
            body = f"request head too large: at most {self.max_head_bytes} bytes of request line and headers\n"
            await send({"type": "http.response.start", "status": 431,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        peer = scope.get("client")
        if self.networks and peer and _in(str(peer[0]), self.networks):
            headers = {name.lower(): value for name, value in scope.get("headers") or []}
            forwarded = _forwarded_for(headers, self.networks)
            scope = dict(scope)
            scope[PROXIED] = True
            if forwarded is not None:
                scope["client"] = (forwarded, 0)
            proto = _forwarded_proto(headers)
            if proto in ("http", "https"):
                scope["scheme"] = proto if scope["type"] == "http" else ("wss" if proto == "https" else "ws")
        await self.app(scope, receive, send)


@dataclass
class Connections:
    """Open WebSockets, per client address and in all, counted from the handshake to the socket's very end
    (a socket the app gave up on still counts until the server has let it go); and what each address may still
    do: open sockets (a handshake rate), subscribe (a budget all its sockets share), or nothing for a while
    after one of its sockets was closed for abuse. An address's buckets outlive its sockets (reconnecting does
    not refill them) and are forgotten a minute after their last use."""

    total: int = 0
    by_address: Counter[str] = field(default_factory=Counter)
    budgets: dict[str, TokenBucket] = field(default_factory=dict)
    handshakes: dict[str, TokenBucket] = field(default_factory=dict)
    penalties: dict[str, float] = field(default_factory=dict)  # address -> monotonic time its penalty ends
    clock: Any = time.monotonic
    _pruned: float = 0.0

    def opened(self, address: str) -> None:
        self.total += 1
        self.by_address[address] += 1

    def closed(self, address: str) -> None:
        self.total -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]

    def penalize(self, address: str, seconds: float) -> None:
        """Refuse new sockets from `address` for `seconds` (one of its sockets was closed for abuse)."""
        if seconds > 0:
            self.penalties[address] = self.clock() + seconds

    def refusal(self, address: str, config: WebConfig) -> tuple[int, str] | None:
        """(HTTP status, reason) when this socket is one too many, else None."""
        now = self.clock()
        self._prune(now)
        if self.penalties.get(address, 0.0) > now:
            wait = self.penalties[address] - now
            return 429, f"a socket from your address was closed for abuse: try again in {wait:.0f} s"
        if address not in self.handshakes:
            self.handshakes[address] = TokenBucket(config.address_connect_rate, 2 * config.address_connect_rate,
                                                   self.clock)
        if not self.handshakes[address].allow():
            return 429, f"too many new connections from your address: at most {config.address_connect_rate:g} a second"
        if self.total > config.max_connections:
            return 503, f"too many connections: the dashboard serves at most {config.max_connections}"
        cap = config.max_connections_per_address
        if cap > 0 and self.by_address[address] > cap:
            return 429, f"too many connections from your address: at most {cap}"
        return None

    def budget(self, address: str, config: WebConfig) -> TokenBucket:
        """The subscribe budget every socket of `address` draws from (and its history API requests)."""
        self._prune(self.clock())  # the API's clients open no socket: their buckets are forgotten here too
        if address not in self.budgets:
            self.budgets[address] = TokenBucket(config.address_rate, 2 * config.address_rate, self.clock)
        return self.budgets[address]

    def _prune(self, now: float) -> None:
        if now - self._pruned < 10:
            return
        self._pruned = now
        for buckets in (self.budgets, self.handshakes):
            for address in [a for a, b in buckets.items() if now - b.last_used > 60 and a not in self.by_address]:
                del buckets[address]
        for address in [a for a, until in self.penalties.items() if until <= now]:
            del self.penalties[address]


class GuardedWebsocketConnection(ASGIWebsocketConnection):
    """Quart's WebSocket connection with a bounded queue of received frames (Quart's own is unbounded: a
    client that sends while the app is blocked grew it without end), counted in the app's `Connections`."""

    def __init__(self, app: Quart, scope: Any) -> None:
        super().__init__(app, scope)
        shared = app.extensions["webui"]
        self.queue = asyncio.Queue(maxsize=max(1, shared.config.receive_queue))
        self.connections: Connections = shared.connections
        self.address = client_address(scope)

    async def __call__(self, receive: Any, send: Any) -> None:
        self.connections.opened(self.address)
        try:
            await super().__call__(receive, send)
        finally:
            self.connections.closed(self.address)


def listening_socket(host: str, port: int, config: WebConfig, reuse_port: bool = False) -> socket.socket:
    """The server's socket, bound: its accepted connections inherit keepalive and a TCP user timeout, so the
    kernel drops a peer that takes no data (a zero window) or vanished, and hypercorn's blocked write ends.
    `reuse_port`: one of the workers sharing the port (SO_REUSEPORT, webui/workers.py)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int((config.send_timeout + 10) * 1000))
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.bind((host, port))
    return sock


async def _discard(_event: Any) -> None:
    pass


# What the fixes below rely on in hypercorn's private WebSocket stream (verified on 0.18.0, the version pinned in
# pyproject.toml): a method, and the names of its parameters.
HYPERCORN_HOOKS = {("WSStream", "_handle_events"): ("self",), ("WSStream", "handle"): ("self", "event"),
                   ("Handshake", "accept"): ("self", "subprotocol", "additional_headers")}
HYPERCORN_NAMES = ("StreamClosed", "WSStream", "Handshake")


def check_hypercorn_internals(ws_stream: Any) -> None:
    """Refuse, loudly, a hypercorn whose private WebSocket stream is not the one the fixes were written for (a
    silently skipped fix would bring back an unbounded buffer or a socket that never closes)."""
    import inspect
    from importlib.metadata import version

    missing = [name for name in HYPERCORN_NAMES if not hasattr(ws_stream, name)]
    for (owner, method), params in HYPERCORN_HOOKS.items():
        function = getattr(getattr(ws_stream, owner, None), method, None)
        if function is None or tuple(inspect.signature(function).parameters)[:len(params)] != params:
            missing.append(f"{owner}.{method}{params}")
    if missing:
        raise RuntimeError(f"hypercorn {version('hypercorn')} changed what webui/guard.py patches "
                           f"({', '.join(missing)}): install the version pyproject.toml pins (hypercorn>=0.18,<0.19), "
                           "or port the fixes")


def fix_hypercorn_websockets() -> None:
    """Two fixes to hypercorn 0.18's WebSocket stream and one setting it has no option for, installed once by
    `server_config`:

    - a message over `websocket_max_message_size` is answered with a close frame (1009), but the socket stayed
      open and everything the client sent next was appended to the refused message's buffer (~110 MiB a second
      from one client): now the buffer is emptied and the connection ends;
    - when the app has finished (it closed the socket) while its queue of received events is full (it had
      stopped reading a flooding client), handing it the final "disconnect" waited for ever, and so did the
      read loop with frames still to hand over: the TCP connection was never closed and its task, buffers and
      socket stayed for good. Now what the app will never read is dropped;
    - no permessage-deflate: it costs each socket ~300 KB of zlib state (1,000 sockets: 300 MB) and every send a
      deflate of up to ~150 KB; a proxy in front can compress where bandwidth matters.
    """
    from hypercorn.protocol import ws_stream

    stream = ws_stream.WSStream
    if getattr(stream, "_cryptopulse_fixed", False):
        return
    check_hypercorn_internals(ws_stream)
    handle_events, handle, accept = stream._handle_events, stream.handle, ws_stream.Handshake.accept

    def _accept(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.extensions = None  # no permessage-deflate: ~300 KB of zlib state per socket, and a deflate per send
        return accept(self, *args, **kwargs)

    async def _handle_events(self: Any) -> None:
        await handle_events(self)
        if self.buffer.length > self.buffer.max_length:  # a message was refused as too big: no more of it
            self.buffer.clear()
            if not self.closed:
                await self.send(ws_stream.StreamClosed(stream_id=self.stream_id))

    async def _handle(self: Any, event: Any) -> None:
        if not (isinstance(event, ws_stream.StreamClosed) and self.app_put is not None):
            await handle(self, event)
            return
        queue = getattr(self.app_put, "__self__", None)
        while isinstance(queue, asyncio.Queue) and not queue.empty():
            # the client is gone, or the app (which may have stopped reading a flooding client) is: what it has
            # not read is of no use, and the disconnect, and a put the read loop may be waiting on, get through
            queue.get_nowait()
        await handle(self, event)
        # the stream is closed: whatever the read loop still hands over (it may be half-way through a batch of
        # frames) is dropped, never queued for an app that has gone, where the read loop would wait for ever
        self.app_put = _discard

    stream._handle_events, stream.handle = _handle_events, _handle
    ws_stream.Handshake.accept = _accept
    stream._cryptopulse_fixed = True


def server_config(config: WebConfig, sock: socket.socket) -> Config:
    """Hypercorn's settings for the dashboard, serving on `sock` (which it takes over)."""
    from hypercorn.config import Config

    fix_hypercorn_websockets()

    server = Config()
    server.bind = [f"fd://{sock.detach()}"]
    server.accesslog = None
    server.websocket_max_message_size = config.max_frame_bytes  # a bigger frame closes the socket (1009)
    server.websocket_ping_interval = config.ping_seconds
    # nothing read for three ping intervals (a live client answers each ping with a pong): the peer is gone
    server.read_timeout = max(1, int(3 * config.ping_seconds))
    server.max_app_queue_size = 4  # events hypercorn holds for the app, per connection, before it stops reading
    server.h11_max_incomplete_size = config.max_head_bytes  # a head arriving whole is checked by ProxyHeaders
    server.include_server_header = False
    if config.certfile or config.keyfile:
        if not (config.certfile and config.keyfile):
            raise ConfigError("TLS needs both --certfile and --keyfile (WEBUI_CERTFILE, WEBUI_KEYFILE)")
        server.certfile, server.keyfile = config.certfile, config.keyfile
        # the fd:// socket is served with TLS: hypercorn wraps every socket of `bind` when TLS is configured
    return server


_LIBC: Any = None


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim). After a burst (big snapshots built in
    worker threads, each with its own malloc arena, then freed) glibc keeps the pages and the process would
    stay at its peak; where there is no glibc nothing is done."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)
