"""The WebSocket protocol's client side, validated: every bad frame becomes a ProtocolError with a helpful message.

See docs/webui.md for the messages. Pure code: unit tested without a server.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cryptopulse.times import DAY_MS
from webui.timeframes import (
    DEFAULT_TIMEFRAME,
    MAX_BARS,
    RANGES_MS,
    TIMEFRAMES,
    bar_count,
    finest_for,
    refusal,
)


class ProtocolError(ValueError):
    """A client message the server refuses; its text is sent back as {"type": "error", "message": ...}."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    symbol: str
    range: str
    end: int | None = None  # epoch ms; None means "now" (the live view)
    indicators: bool = False  # also send the window's `indicators` message (webui/indicators.py)
    interval: str | None = None  # the bars' timeframe; None: the range's default (webui/timeframes.py)

    @property
    def timeframe(self) -> str:
        return self.interval or DEFAULT_TIMEFRAME[self.range]


@dataclass(frozen=True, slots=True)
class Overview:
    """{"type": "overview"}: every coin's last 24 h in one message, then every coin's live ticks."""


# `end` (epoch ms) must lie in [EARLIEST_END_MS, now + FUTURE_SLACK_MS]: no date arithmetic overflows, and a
# clock a little ahead of the server's is forgiven. The floor is the epoch, not bitcoin's genesis block: the
# integration tests keep their history in 2003, where no real data can collide with it.
EARLIEST_END_MS = 1
FUTURE_SLACK_MS = DAY_MS


def describe(value: Any, limit: int = 40) -> str:
    """A client's value, shown back to it briefly: strings and numbers as they are (cut short), others by kind."""
    if isinstance(value, str | bool | int | float) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return "a JSON object" if isinstance(value, dict) else "a JSON array"


def too_deep(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` deep (brackets inside strings do not count).

    Checked before parsing: the parser would recurse once per level, and a 4 KiB frame holds 4,000 of them.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_message(raw: str | bytes, symbols: Collection[str], max_bytes: int = 4096,
                  now_ms: Callable[[], int] | None = None, max_depth: int = 8) -> Subscribe | Overview:
    """Turn one frame into a Subscribe, or raise ProtocolError saying what to send instead.

    Any frame at all gets one of those two answers: nothing a client sends may raise anything else.
    """
    if isinstance(raw, bytes):
        size = len(raw)
    elif isinstance(raw, str):
        size = len(raw.encode("utf-8", "surrogatepass"))
    else:
        raise ProtocolError("frames must be UTF-8 JSON text")
    if size > max_bytes:
        raise ProtocolError(f"frame too large: {size} bytes, the limit is {max_bytes}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            raise ProtocolError("frames must be UTF-8 JSON text") from None
    if too_deep(raw, max_depth):
        raise ProtocolError(f"malformed JSON: nested more than {max_depth} deep")
    try:
        message: Any = json.loads(raw, parse_constant=_no_constants)  # NaN and Infinity are not JSON
    except json.JSONDecodeError as error:
        raise ProtocolError(f"malformed JSON: {error.msg} at position {error.pos}") from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None
    except ValueError:  # e.g. an integer of more digits than Python converts
        raise ProtocolError("malformed JSON: a value could not be read") from None
    if not isinstance(message, dict):
        raise ProtocolError('a message must be a JSON object such as {"type": "subscribe", "symbol": "BTC", '
                            '"range": "1h"}')
    kind = message.get("type")
    if kind == "overview":
        return Overview()
    if kind != "subscribe":
        raise ProtocolError(f'unknown message type {describe(kind)}: the types are "subscribe" and "overview"')
    symbol = message.get("symbol")
    if not isinstance(symbol, str) or symbol.upper() not in symbols:
        raise ProtocolError(f"unknown symbol {describe(symbol)}: choose one of {', '.join(symbols)}")
    range_ = message.get("range", "1h")
    if not isinstance(range_, str) or range_ not in RANGES_MS:
        raise ProtocolError(f"unknown range {describe(range_)}: choose one of {', '.join(RANGES_MS)}")
    interval = message.get("interval")
    if interval is not None:
        check_timeframe(range_, interval)
    end = message.get("end")
    if end is not None:
        if isinstance(end, bool) or not isinstance(end, int):
            raise ProtocolError("end must be an integer, epoch milliseconds (or left out for now)")
        check_end(end, now_ms)
    indicators = message.get("indicators", False)
    if not isinstance(indicators, bool):
        raise ProtocolError("indicators must be true or false")
    return Subscribe(symbol.upper(), range_, end, indicators, interval)


def check_timeframe(range_: str, interval: Any) -> str:
    """`interval` if it is a timeframe a chart of `range_` may use, else ProtocolError saying which are."""
    if not isinstance(interval, str) or interval not in TIMEFRAMES:
        raise ProtocolError(f"unknown interval {describe(interval)}: choose one of {', '.join(TIMEFRAMES)}")
    reason = refusal(range_, interval)
    if reason is not None:
        raise ProtocolError(reason)
    return interval


def check_end(end: int, now_ms: Callable[[], int] | None = None, name: str = "end") -> int:
    """`end` (or a `start`) if it lies between the epoch and a day from now, else ProtocolError."""
    latest = (now_ms or _now_ms)() + FUTURE_SLACK_MS
    if not EARLIEST_END_MS <= end <= latest:
        raise ProtocolError(f"{name} must be epoch milliseconds from {EARLIEST_END_MS} (1970) to a day from now "
                            f"({latest})" + ("; leave it out for now" if name == "end" else ""))
    return end


def _now_ms() -> int:
    return int(time.time() * 1000)


def error(message: str, retry_ms: int | None = None) -> dict[str, Any]:
    """The error message; `retry_ms` when the same request may succeed if sent again after that long."""
    return {"type": "error", "message": message} if retry_ms is None else \
        {"type": "error", "message": message, "retry_ms": retry_ms}


class TokenBucket:
    """Per-connection rate limit: `rate` messages per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    @property
    def last_used(self) -> float:
        """The clock's time of the last `allow`."""
        return self._last

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


LOOPBACK_NAMES = frozenset({"localhost", "::1"})


def host_name(host: str | None) -> str | None:
    """The name in a Host header, lower-cased, without the port: "[::1]:8000" -> "::1"; None if there is none."""
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        name, bracket, _ = host[1:].partition("]")
        return name if bracket and name else None
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".") or None


def is_loopback(name: str | None) -> bool:
    """A loopback host name or address (localhost, 127.0.0.0/8, ::1)."""
    if name is None:
        return False
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host: str | None, allowed: Collection[str]) -> bool:
    """Refuses DNS rebinding: a page of evil.example whose name now points at this machine still sends
    `Host: evil.example`, so only loopback names and the names the operator configured are answered."""
    if "*" in allowed:
        return True
    name = host_name(host)
    return name is not None and (is_loopback(name) or name in allowed)


def origin_hosts(origins: Collection[str]) -> set[str]:
    """The host names of allowed origins ("https://dash.example.com" -> "dash.example.com")."""
    names = set()
    for origin in origins:
        if "://" in origin and (name := host_name(origin.split("://", 1)[1].split("/", 1)[0])):
            names.add(name)
    return names


# --- the history API's query string (GET /api/v1/history, webui/api.py), checked as strictly as a subscribe ---

FORMATS = ("json", "csv")
PAGE_BARS = 1_000  # a page's bars when `limit` is not given
HISTORY_PARAMETERS = ("symbol", "range", "start", "end", "interval", "before", "limit", "format", "indicators")


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    symbol: str
    range: str | None  # a chart's range, or None for the window start..end or a page
    end: int | None  # epoch ms; None: now (a range only)
    span_ms: int | None  # end - start for a start/end window
    interval: str  # the bars' timeframe
    format: str
    indicators: tuple[str, ...]
    before: int | None = None  # a page: the bars that begin before this time (epoch ms)
    limit: int | None = None  # a page: how many bars it spans

    @property
    def page(self) -> bool:
        return self.limit is not None


def _epoch_ms(name: str, raw: str, now_ms: Callable[[], int] | None) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 16:
        raise ProtocolError(f"{name} must be an integer, epoch milliseconds (got {describe(raw)})")
    return check_end(int(raw), now_ms, name)


def _timeframe(raw: str | None) -> str | None:
    if raw is not None and raw not in TIMEFRAMES:
        raise ProtocolError(f"unknown interval {describe(raw)}: choose one of {', '.join(TIMEFRAMES)}")
    return raw


def parse_history_query(args: Mapping[str, str], symbols: Collection[str], indicator_names: Collection[str],
                        now_ms: Callable[[], int] | None = None) -> HistoryQuery:
    """The history API's parameters (each given once, as a string), or ProtocolError saying what to send.

    Three kinds of request: a chart's `range` (with an optional `end`), a window `start`..`end`, or a page
    (`before` and/or `limit`, with an `interval`): the `limit` bars that begin before `before` (default now)."""
    unknown = [name for name in args if name not in HISTORY_PARAMETERS]
    if unknown:
        raise ProtocolError(f"unknown parameter {describe(unknown[0])}: the parameters are "
                            f"{', '.join(HISTORY_PARAMETERS)}")
    symbol = args.get("symbol")
    if not symbol:
        raise ProtocolError(f"symbol is required: one of {', '.join(symbols)} (for example ?symbol="
                            f"{next(iter(symbols), 'BTC')}&range=24h)")
    if symbol.upper() not in symbols:
        raise ProtocolError(f"unknown symbol {describe(symbol)}: choose one of {', '.join(symbols)}")
    start_raw, end_raw, range_ = args.get("start"), args.get("end"), args.get("range")
    interval = _timeframe(args.get("interval"))
    format_ = args.get("format", "json")
    if format_ not in FORMATS:
        raise ProtocolError(f"unknown format {describe(format_)}: choose one of {', '.join(FORMATS)}")
    wanted = tuple(name.strip().lower() for name in args.get("indicators", "").split(",") if name.strip())
    for name in wanted:
        if name not in indicator_names:
            raise ProtocolError(f"unknown indicator {describe(name)}: choose among {', '.join(indicator_names)}")
    indicators = tuple(dict.fromkeys(wanted))
    symbol = symbol.upper()
    if "before" in args or "limit" in args:
        if start_raw is not None or end_raw is not None or range_ is not None:
            raise ProtocolError("a page is before and/or limit with an interval, without range, start or end")
        if interval is None:
            raise ProtocolError(f"a page needs an interval: one of {', '.join(TIMEFRAMES)}")
        before = None if args.get("before") is None else _epoch_ms("before", args["before"], now_ms)
        limit_raw = args.get("limit", str(PAGE_BARS))
        if not (limit_raw.isascii() and limit_raw.isdigit() and len(limit_raw) <= 6) \
                or not 1 <= int(limit_raw) <= MAX_BARS:
            raise ProtocolError(f"limit must be a whole number of bars from 1 to {MAX_BARS} "
                                f"(got {describe(limit_raw)})")
        return HistoryQuery(symbol, None, None, None, interval, format_, indicators, before, int(limit_raw))
    end = None if end_raw is None else _epoch_ms("end", end_raw, now_ms)
    if start_raw is not None:
        if range_ is not None:
            raise ProtocolError("give either range (with an optional end) or start and end, not both")
        if end is None:
            raise ProtocolError("start needs an end (epoch milliseconds), or use range")
        span = end - _epoch_ms("start", start_raw, now_ms)
        if span <= 0:
            raise ProtocolError("start must be before end")
        interval = interval or finest_for(span)
        if interval is None or bar_count(span, interval) > MAX_BARS:
            bars = f"{bar_count(span, interval)} bars of {interval}" if interval else "more bars than even 1w has"
            raise ProtocolError(f"{bars} from start to end is more than {MAX_BARS} in one answer: choose a wider "
                                "interval, a shorter window, or pages (before, limit)")
        return HistoryQuery(symbol, None, end, span, interval, format_, indicators)
    range_ = "24h" if range_ is None else range_
    if range_ not in RANGES_MS:
        raise ProtocolError(f"unknown range {describe(range_)}: choose one of {', '.join(RANGES_MS)}")
    interval = check_timeframe(range_, interval) if interval is not None else DEFAULT_TIMEFRAME[range_]
    return HistoryQuery(symbol, range_, end, None, interval, format_, indicators)
