"""The dashboard's own settings, read from the environment when the app is created (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cryptopulse.errors import ConfigError
from cryptopulse.settings import DEFAULT_SYMBOLS, Settings, env, env_flag, env_number, symbols

AUTH_MODES = ("auto", "on")


def _symbols() -> tuple[str, ...]:
    return tuple(symbols(env("SYMBOLS", DEFAULT_SYMBOLS)))


def _origins() -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in env("WEBUI_ALLOWED_ORIGINS", "").split(",") if o.strip())


def _hosts() -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in env("WEBUI_ALLOWED_HOSTS", "").split(",") if h.strip())


def _list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env(name, "").split(",") if item.strip())


def _auth() -> str:
    value = env("WEBUI_AUTH", "auto").strip().lower()
    if value not in AUTH_MODES:
        raise ConfigError(f"WEBUI_AUTH={value!r}: give auto (a login as soon as an account exists) or on (always)")
    return value


def _int(name: str, default: int, low: int = 0) -> int:
    return int(env_number(name, default, low, 10**9, int))


def _float(name: str, default: float) -> float:
    return env_number(name, default, 0, 1e9)


@dataclass(frozen=True)
class WebConfig:
    """Where the app listens, what it serves and its limits; every field has a WEBUI_* (or SYMBOLS) variable."""

    host: str = field(default_factory=lambda: env("WEBUI_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: _int("WEBUI_PORT", 8000))
    # Processes serving the port (`webui serve --processes`): 1 is this one; N > 1, N workers (webui/workers.py).
    processes: int = field(default_factory=lambda: _int("WEBUI_PROCESSES", 1, 1))
    # Empty means "same host as the page" (the Origin's host:port must equal the Host header).
    allowed_origins: tuple[str, ...] = field(default_factory=_origins)
    symbols: tuple[str, ...] = field(default_factory=_symbols)
    max_points: int = field(default_factory=lambda: _int("WEBUI_MAX_POINTS", 1500))
    client_queue: int = field(default_factory=lambda: _int("WEBUI_CLIENT_QUEUE", 1000))
    # Live ticks are handed to the sockets at most once per this many ms (a lone tick at once, those right after it
    # together at the interval's end): fewer, larger messages under load (webui/live.py Hub). 0: every batch at once.
    push_interval_ms: float = field(default_factory=lambda: _float("WEBUI_PUSH_INTERVAL_MS", 20))
    # Host names the app answers to (the Host header, checked before anything else: DNS rebinding), besides the
    # loopback names, the bind address and the hosts of allowed_origins; "*" turns the check off.
    allowed_hosts: tuple[str, ...] = field(default_factory=_hosts)
    # The largest frame: hypercorn closes a connection that sends a bigger one (1009), the app checks it again.
    max_frame_bytes: int = 4096
    rate_per_second: float = 10.0
    rate_burst: float = 10.0
    # A client over its rate limit this many times (refilled at 1 a second) is closed (1008): it is not slowing down.
    rate_strikes: float = field(default_factory=lambda: _float("WEBUI_RATE_STRIKES", 50))
    # All the sockets of one address share a budget of subscribes: more sockets do not buy more queries.
    address_rate: float = field(default_factory=lambda: _float("WEBUI_ADDRESS_RATE", 20))
    # New WebSockets a second from one address (bursts of twice that): reconnecting is no way around the limits.
    address_connect_rate: float = field(default_factory=lambda: _float("WEBUI_ADDRESS_CONNECT_RATE", 5))
    # After one of its sockets is closed for abuse (rate limit, not reading), an address may not open another
    # for this long.
    penalty_seconds: float = field(default_factory=lambda: _float("WEBUI_PENALTY_SECONDS", 10))
    # Open WebSockets at most, in all and per client address (0: no cap per address, e.g. behind a proxy).
    max_connections: int = field(default_factory=lambda: _int("WEBUI_MAX_CONNECTIONS", 1000))
    max_connections_per_address: int = field(default_factory=lambda: _int("WEBUI_MAX_CONNECTIONS_PER_ADDRESS", 32))
    # Frames received but not yet read by the app, per socket; when full the server stops reading the socket.
    receive_queue: int = field(default_factory=lambda: _int("WEBUI_RECEIVE_QUEUE", 16))
    # A message that cannot be sent within this long (the client stopped reading) closes the socket (1008).
    send_timeout: float = field(default_factory=lambda: _float("WEBUI_SEND_TIMEOUT", 10))
    # WebSocket pings every so often; a socket from which nothing (not even a pong) arrives for 3 intervals goes.
    ping_seconds: float = field(default_factory=lambda: _float("WEBUI_PING_SECONDS", 20))
    # Deepest JSON nesting read from a client (a subscribe is 1 deep).
    max_json_depth: int = 8
    # Windows other than the live ones that the store must read (older than the views hold), built per second, all
    # clients together; more are answered "busy" with retry_ms.
    history_rate: float = field(default_factory=lambda: _float("WEBUI_HISTORY_RATE", 5))
    # No client waits longer than this for a history answer: it is told to ask again (503 busy, or an `error` with
    # retry_ms) and the read goes on, kept for its next ask. Well under the 60 s after which hypercorn drops a
    # connection that sent nothing.
    history_deadline: float = field(default_factory=lambda: _float("WEBUI_HISTORY_DEADLINE_SECONDS", 5))
    # Bytes of encoded snapshots kept for reuse (LRU), besides their 2 s freshness.
    snapshot_cache_bytes: int = field(default_factory=lambda: _int("WEBUI_SNAPSHOT_CACHE_MB", 16) * 2**20)
    # /healthz's detail (host names, pids, errors) goes to loopback clients only, unless this is set.
    health_detail: bool = field(default_factory=lambda: env_flag("WEBUI_HEALTH_DETAIL"))
    # Adding and removing alert rules from the page (webui/rules.py) is for loopback clients no proxy forwarded,
    # unless this is set (WEBUI_ALERT_RULES_REMOTE=1: every client that reaches the dashboard; docs/security.md).
    alert_rules_remote: bool = field(default_factory=lambda: env_flag("WEBUI_ALERT_RULES_REMOTE"))
    # Accounts (docs/security.md, webui/auth.py). auto: every page, the WebSocket and the APIs need a login as soon as
    # an account exists (`control users add`), none before (local mode); on: always (none exists: nobody gets in).
    auth: str = field(default_factory=_auth)
    # Serving an address other than loopback without accounts is refused; this lets it (docker compose publishes
    # the container's port on the host's loopback only, so its clients are the host's).
    allow_open: bool = field(default_factory=lambda: env_flag("WEBUI_ALLOW_OPEN"))
    # Sessions: idle and absolute limits; the secret that signs them (every worker reads it; made on first use).
    session_idle_minutes: float = field(default_factory=lambda: _float("WEBUI_SESSION_IDLE_MINUTES", 30))
    session_absolute_hours: float = field(default_factory=lambda: env_number("WEBUI_SESSION_ABSOLUTE_HOURS", 12,
                                                                             0.01, 31 * 24))
    secret_file: str = field(default_factory=lambda: env("WEBUI_SECRET_FILE", ""))  # "": <state>/webui/session-secret
    # Proxies whose forwarded headers are believed (addresses or networks, comma-separated): a request from one is
    # never "local", its client is the address it forwards (X-Forwarded-For, Forwarded, X-Real-IP) and its scheme
    # the one it says (X-Forwarded-Proto): https makes the cookies Secure. Others' forwarded headers are ignored.
    trusted_proxies: tuple[str, ...] = field(default_factory=lambda: _list("WEBUI_TRUSTED_PROXIES"))
    # TLS served by the dashboard itself (`webui --certfile --keyfile`); empty: plain HTTP (or TLS at a proxy).
    certfile: str = field(default_factory=lambda: env("WEBUI_CERTFILE", ""))
    keyfile: str = field(default_factory=lambda: env("WEBUI_KEYFILE", ""))
    # A request's head (request line and headers) at most this many bytes: 431 beyond it.
    max_head_bytes: int = 16 * 1024
    # Ticks kept per symbol in memory, to fill the seconds the sink has not yet written to MongoDB.
    recent_ticks: int = field(default_factory=lambda: _int("WEBUI_RECENT_TICKS", 600))
    # Concurrent history queries: FerretDB's SQLite pool is small and shared, so few cursors at a time.
    mongo_pool: int = field(default_factory=lambda: _int("WEBUI_MONGO_POOL", 4))
    snapshot_cache_seconds: float = 2.0
    consumer_group_prefix: str = ""  # "": the settings' WEBUI_GROUP_PREFIX
    start_consumer: bool = True
    # Recent candles and ticks held in memory (loaded from their topics and kept by them, webui/views.py):
    # WEBUI_VIEWS=0 reads every chart from MongoDB instead.
    views: bool = field(default_factory=lambda: env_flag("WEBUI_VIEWS", True))
    # Seconds between probes of MongoDB (ping) and the schema registry, so their outages are seen and logged
    # even when nobody asks for a chart; 0 turns the background probe off (/healthz still probes).
    probe_seconds: float = 5.0
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        if not self.consumer_group_prefix:
            object.__setattr__(self, "consumer_group_prefix", self.settings.webui_group_prefix)

    def with_overrides(self, **overrides: Any) -> WebConfig:
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown webui setting(s): {', '.join(sorted(unknown))}")
        if "symbols" in overrides:
            overrides["symbols"] = tuple(s.upper() for s in overrides["symbols"])
        return replace(self, **overrides)
