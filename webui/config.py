"""The dashboard's own settings, read from the environment when the app is created (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cryptopulse.settings import DEFAULT_SYMBOLS, Settings, env, symbols


def _symbols() -> tuple[str, ...]:
    return tuple(symbols(env("SYMBOLS", DEFAULT_SYMBOLS)))


def _origins() -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in env("WEBUI_ALLOWED_ORIGINS", "").split(",") if o.strip())


def _int(name: str, default: int) -> int:
    raw = env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


@dataclass(frozen=True)
class WebConfig:
    """Where the app listens, what it serves and its limits; every field has a WEBUI_* (or SYMBOLS) variable."""

    host: str = field(default_factory=lambda: env("WEBUI_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: _int("WEBUI_PORT", 8000))
    # Empty means "same host as the page" (the Origin's host:port must equal the Host header).
    allowed_origins: tuple[str, ...] = field(default_factory=_origins)
    symbols: tuple[str, ...] = field(default_factory=_symbols)
    max_points: int = field(default_factory=lambda: _int("WEBUI_MAX_POINTS", 1500))
    client_queue: int = field(default_factory=lambda: _int("WEBUI_CLIENT_QUEUE", 1000))
    max_frame_bytes: int = 4096
    rate_per_second: float = 10.0
    rate_burst: float = 10.0
    # Ticks kept per symbol in memory, to fill the seconds the sink has not yet written to MongoDB.
    recent_ticks: int = field(default_factory=lambda: _int("WEBUI_RECENT_TICKS", 600))
    # Concurrent history queries: FerretDB's SQLite pool is small and shared, so few cursors at a time.
    mongo_pool: int = field(default_factory=lambda: _int("WEBUI_MONGO_POOL", 4))
    snapshot_cache_seconds: float = 2.0
    consumer_group_prefix: str = field(default_factory=lambda: env("WEBUI_GROUP_PREFIX", "cryptopulse-webui"))
    start_consumer: bool = True
    # Recent candles and ticks held in memory (loaded from MongoDB, kept by their topics, webui/views.py):
    # WEBUI_VIEWS=0 reads every chart from MongoDB instead.
    views: bool = field(default_factory=lambda: env("WEBUI_VIEWS", "1") != "0")
    # Seconds between probes of MongoDB (ping) and the schema registry, so their outages are seen and logged
    # even when nobody asks for a chart; 0 turns the background probe off (/healthz still probes).
    probe_seconds: float = 5.0
    settings: Settings = field(default_factory=Settings)

    def with_overrides(self, **overrides: Any) -> WebConfig:
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown webui setting(s): {', '.join(sorted(unknown))}")
        if "symbols" in overrides:
            overrides["symbols"] = tuple(s.upper() for s in overrides["symbols"])
        return replace(self, **overrides)
