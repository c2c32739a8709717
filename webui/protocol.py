"""The WebSocket protocol's client side, validated: every bad frame becomes a ProtocolError with a helpful message.

See docs/webui.md for the messages. Pure code: unit tested without a server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from webui.series import RANGES_MS


class ProtocolError(ValueError):
    """A client message the server refuses; its text is sent back as {"type": "error", "message": ...}."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    symbol: str
    range: str
    end: int | None = None  # epoch ms; None means "now" (the live view)


def parse_message(raw: str | bytes, symbols: Collection[str], max_bytes: int = 4096) -> Subscribe:
    """Turn one text frame into a Subscribe, or raise ProtocolError saying what to send instead."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    if size > max_bytes:
        raise ProtocolError(f"frame too large: {size} bytes, the limit is {max_bytes}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            raise ProtocolError("frames must be UTF-8 JSON text") from None
    try:
        message: Any = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ProtocolError(f"malformed JSON: {error.msg} at position {error.pos}") from None
    if not isinstance(message, dict):
        raise ProtocolError('a message must be a JSON object such as {"type": "subscribe", "symbol": "BTC", '
                            '"range": "1h"}')
    kind = message.get("type")
    if kind != "subscribe":
        raise ProtocolError(f"unknown message type {kind!r}: the only one is \"subscribe\"")
    symbol = message.get("symbol")
    if not isinstance(symbol, str) or symbol.upper() not in symbols:
        raise ProtocolError(f"unknown symbol {symbol!r}: choose one of {', '.join(symbols)}")
    range_ = message.get("range", "1h")
    if range_ not in RANGES_MS:
        raise ProtocolError(f"unknown range {range_!r}: choose one of {', '.join(RANGES_MS)}")
    end = message.get("end")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int) or end <= 0):
        raise ProtocolError("end must be a positive integer, epoch milliseconds (or left out for now)")
    return Subscribe(symbol.upper(), range_, end)


def error(message: str) -> dict[str, str]:
    return {"type": "error", "message": message}


class TokenBucket:
    """Per-connection rate limit: `rate` messages per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def origin_allowed(origin: str | None, host: str | None, allowed: Collection[str]) -> bool:
    """Refuses cross-site WebSocket hijacking: a browser's Origin must be listed, or be the page's own host.

    A missing Origin means a non-browser client (scripts, the benchmark), which the check cannot protect
    against anyway, so it is let in.
    """
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if allowed:
        return origin in allowed or "*" in allowed
    if origin == "null" or "://" not in origin or not host:
        return False
    return origin.split("://", 1)[1].lower() == host.lower()
