"""Binance spot: the public combined WebSocket stream of `<symbol>usdt@miniTicker`, no key.

miniTicker comes once a second per symbol with the last price and the rolling 24 h window, which
is what a Tick carries; `@trade` would be one message per trade, far more than the dashboard shows.
Prices are in USDT, not USD. The default host is Binance's market-data-only mirror; where Binance
answers HTTP 451 (restricted location) point BINANCE_WS_URL at another mirror.
History: REST /api/v3/klines at any interval of ours (Binance names them alike, 1m to 1w; weekly klines open on
Monday 00:00 UTC, as our weeks do), up to 1000 a request (two per symbol per day of minutes, one for 2.7 years of
days), from the market-data-only host BINANCE_REST_URL; the quote volume of each kline comes with it. Klines go
back to each market's listing; no plan limits them.

Limits (Binance spot docs, "LIMITS" and "HTTP Return Codes"): request weight is 6000 per minute per IP
(a klines request weighs 2) and every reply says the minute's use in X-MBX-USED-WEIGHT-1M: the back-fill
stops asking before it reaches BINANCE_WEIGHT_BUDGET (default 4800, room for other clients on the IP)
and waits for the next minute. 429 (limit broken) and 418 (IP banned, 2 minutes to 3 days) carry
Retry-After, which is obeyed; a 403 is the web application firewall, which can mean a rate-limit
violation, so it waits (BINANCE_WAF_WAIT_SECONDS, default 300) and retries instead of stopping. The
same rules apply to a refused WebSocket handshake.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from cryptopulse.candle import INTERVAL_MS, Candle
from cryptopulse.errors import SourceError, TransientError
from cryptopulse.retries import retry_after_seconds
from cryptopulse.settings import env_number
from cryptopulse.tick import Tick
from producer.sources.history import HistoryPage, HistoryReach, candle_page, own_symbol, read_rows, windows
from producer.sources.http import JsonClient, OnWait, Reply
from producer.sources.validation import number, optional_number, pct_change
from producer.sources.ws import WebSocketSource

DEFAULT_URL = "wss://data-stream.binance.vision"
REST_URL = "https://data-api.binance.vision"
QUOTE = "USDT"
KLINES_PER_REQUEST = 1000
KLINES_WEIGHT = 2  # /api/v3/klines, any limit
WEIGHT_LIMIT = 6000  # REQUEST_WEIGHT per minute per IP
WEIGHT_BUDGET = 4800  # what the back-fill lets itself use of it
WAF_WAIT = 300.0  # 403: the docs give no duration; five minutes keeps a blocked IP from making it worse
MIN_BAN = 120.0  # 418 without Retry-After: bans last from 2 minutes to 3 days
BANNED_UNTIL = re.compile(r"banned until (\d{13})")


class Binance(WebSocketSource):
    """Last price, rolling 24 h quote volume (USDT) and 24 h change, `ts` = Binance's event time."""

    name = "binance"
    url_env = "BINANCE_WS_URL"

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, stall_timeout: float | None = 60.0,
                 rest_url: str | None = None, on_wait: OnWait | None = None, clock: Callable[[], float] = time.time,
                 weight_budget: int | None = None, waf_wait: float | None = None, **options: Any) -> None:
        base = (base_url or os.environ.get(self.url_env, DEFAULT_URL)).rstrip("/")
        super().__init__(symbols, base, stall_timeout=stall_timeout, **options)
        self.url = f"{base}/stream?streams=" + "/".join(f"{s.lower()}{QUOTE.lower()}@miniTicker" for s in self.symbols)
        self.weight_budget = weight_budget or int(env_number("BINANCE_WEIGHT_BUDGET", WEIGHT_BUDGET, 1, 1e9,
                                                             unit="weight units"))
        self.waf_wait = waf_wait if waf_wait is not None else env_number("BINANCE_WAF_WAIT_SECONDS", WAF_WAIT, 0.001,
                                                                         1e6, unit="seconds")
        self.rest = JsonClient(self.name, rest_url or os.environ.get("BINANCE_REST_URL", REST_URL), "BINANCE_REST_URL",
                               check=self._check, pace=self._pace, backoff_base=self.backoff_base,
                               backoff_max=self.backoff_max, sleep=self.sleep, rng=self.rng, on_wait=on_wait)
        self.clock = clock

    def read(self, message: Any) -> Iterable[Tick]:
        data = message.get("data", message)  # combined streams wrap each event in {"stream", "data"}
        event = data.get("e")
        if event == "serverShutdown":
            raise TransientError("binance announced a server shutdown", retry_after=0)
        if event != "24hrMiniTicker":
            return []  # e.g. the {"result": null, "id": 1} reply to a (un)subscribe
        symbol = data["s"].removesuffix(QUOTE)
        if symbol not in self.symbols:
            return []
        price = number(data["c"])
        return [Tick(
            symbol=symbol,
            source=self.name,
            ts=int(number(data["E"])),
            price=price,
            quote=QUOTE,
            volume_24h=optional_number(data.get("q")),
            change_24h_pct=pct_change(price, optional_number(data.get("o"))),
        )]

    def refused(self, status: int, headers: Mapping[str, str]) -> TransientError | None:
        """403 and 418 as for REST; a 429 (over the 300 connections per 5 minutes) is the generic Retry-After
        or backoff, as the minute's request weight has nothing to do with it."""
        if status == 429:
            return None
        return self._limited(status, None, retry_after_seconds(headers.get("Retry-After")), self.url_env,
                             f"{self.url} refused the WebSocket with HTTP {status}")

    def _check(self, reply: Reply) -> None:
        """Binance's documented REST errors: rate limits and the firewall wait, an unknown symbol stops."""
        wait = self._limited(reply.status, reply.data, reply.retry_after, "BINANCE_REST_URL", reply.describe())
        if wait is not None:
            raise wait
        code = reply.data.get("code") if isinstance(reply.data, dict) else None
        if reply.status == 400 and code == -1121:
            raise SourceError(f"binance: {reply.describe()}; Binance has no such market: check the symbols")

    def _limited(self, status: int, data: Any, retry_after: float | None, url_env: str,
                 what: str) -> TransientError | None:
        """The wait for a 403 (firewall), 418 (IP ban) or 429 (weight over the limit); None for other statuses."""
        if status == 403:
            wait = self.waf_wait if retry_after is None else retry_after
            return TransientError(f"{what}: Binance's web application firewall refused the request (a rate-limit "
                                  f"violation or a security block); waiting {wait:.0f} s before retrying. If it "
                                  f"persists, this IP is blocked: point {url_env} at another host", wait)
        if status == 418:
            until = BANNED_UNTIL.search(str(data.get("msg"))) if isinstance(data, dict) else None
            if retry_after is None and until:
                retry_after = max(0.0, int(until.group(1)) / 1000 - self.clock())
            wait = MIN_BAN if retry_after is None else retry_after
            return TransientError(f"{what}: this IP is banned for ignoring rate limits; waiting "
                                  f"{wait:.0f} s until the ban ends", wait)
        if status == 429:
            wait = self._to_next_minute() if retry_after is None else retry_after
            return TransientError(f"{what}: request weight over the limit of {WEIGHT_LIMIT}/min; waiting "
                                  f"{wait:.0f} s, as Binance asks, so it does not ban the IP", wait)
        return None

    def _pace(self, reply: Reply) -> tuple[float, str] | None:
        """Hold the next request until the next minute when this minute's weight nears the budget."""
        try:
            used = int(reply.headers.get("X-MBX-USED-WEIGHT-1M") or 0)
        except ValueError:
            return None
        if used + KLINES_WEIGHT <= self.weight_budget:
            return None
        return self._to_next_minute(), (f"request weight {used} used this minute, budget "
                                        f"{self.weight_budget} of the limit {WEIGHT_LIMIT}; waiting for the next "
                                        f"minute")

    def _to_next_minute(self) -> float:
        """Seconds until the next minute starts (Binance's weight counters reset on the minute), plus one."""
        return 60 - self.clock() % 60 + 1

    async def history(self, symbol: str, start_ms: int, end_ms: int,
                      interval: str = "1m") -> AsyncIterator[HistoryPage]:
        """Klines of `interval` (USDT, quote volume per kline), one page per request of up to 1000."""
        symbol = own_symbol(self, symbol)
        for low, high in windows(start_ms, end_ms, KLINES_PER_REQUEST * INTERVAL_MS[interval]):
            rows = await self.rest.get("/api/v3/klines", {
                "symbol": symbol + QUOTE, "interval": interval, "startTime": str(low), "endTime": str(high - 1),
                "limit": str(KLINES_PER_REQUEST)})
            # [openTime, open, high, low, close, volume (base), closeTime, quoteVolume, trades, ...]
            candles = read_rows(self, rows, lambda r: Candle.ohlc(symbol, self.name, int(number(r[0])), number(r[1]),
                                                             number(r[2]), number(r[3]), number(r[4]),
                                                             optional_number(r[7]), QUOTE, interval=interval))
            yield candle_page(self, symbol, candles, low, high, int(self.clock() * 1000), interval)

    def history_reach(self, interval: str) -> HistoryReach | None:
        """None: klines of every interval go back to each market's listing."""
        return None
