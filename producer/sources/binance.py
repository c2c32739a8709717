"""Binance spot: the public combined WebSocket stream of `<symbol>usdt@miniTicker`, no key.

miniTicker comes once a second per symbol with the last price and the rolling 24 h window, which
is what a Tick carries; `@trade` would be one message per trade, far more than the dashboard shows.
Prices are in USDT, not USD. The default host is Binance's market-data-only mirror; where Binance
answers HTTP 451 (restricted location) point BINANCE_WS_URL at another mirror.
History: REST /api/v3/klines at 1 minute (up to 1000 a request, so two per symbol per day), from the
market-data-only host BINANCE_REST_URL; the quote volume of each minute comes with it.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from producer.sources.base import TransientError
from producer.sources.history import MINUTE_MS, Candle, HistoryPage, candle_page, own_symbol, read_rows, windows
from producer.sources.http import JsonClient, OnWait
from producer.sources.validation import number, optional_number, pct_change
from producer.sources.ws import WebSocketSource
from producer.tick import Tick

DEFAULT_URL = "wss://data-stream.binance.vision"
REST_URL = "https://data-api.binance.vision"
QUOTE = "USDT"
KLINES_PER_REQUEST = 1000


class Binance(WebSocketSource):
    """Last price, rolling 24 h quote volume (USDT) and 24 h change, `ts` = Binance's event time."""

    name = "binance"
    url_env = "BINANCE_WS_URL"

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, stall_timeout: float | None = 60.0,
                 rest_url: str | None = None, on_wait: OnWait | None = None, clock: Callable[[], float] = time.time,
                 **options: Any) -> None:
        base = (base_url or os.environ.get(self.url_env, DEFAULT_URL)).rstrip("/")
        super().__init__(symbols, base, stall_timeout=stall_timeout, **options)
        self.url = f"{base}/stream?streams=" + "/".join(f"{s.lower()}{QUOTE.lower()}@miniTicker" for s in self.symbols)
        self.rest = JsonClient(self.name, rest_url or os.environ.get("BINANCE_REST_URL", REST_URL), "BINANCE_REST_URL",
                               backoff_base=self.backoff_base, backoff_max=self.backoff_max, sleep=self.sleep,
                               rng=self.rng, on_wait=on_wait)
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

    async def history(self, symbol: str, start_ms: int, end_ms: int) -> AsyncIterator[HistoryPage]:
        """1-minute candles (USDT, quote volume per minute), one page per request of up to 1000."""
        symbol = own_symbol(self, symbol)
        for low, high in windows(start_ms, end_ms, KLINES_PER_REQUEST * MINUTE_MS):
            rows = await self.rest.get("/api/v3/klines", {
                "symbol": symbol + QUOTE, "interval": "1m", "startTime": str(low), "endTime": str(high - 1),
                "limit": str(KLINES_PER_REQUEST)})
            # [openTime, open, high, low, close, volume (base), closeTime, quoteVolume, trades, ...]
            candles = read_rows(self, rows, lambda r: Candle(symbol, self.name, int(number(r[0])), number(r[1]),
                                                             number(r[2]), number(r[3]), number(r[4]),
                                                             optional_number(r[7]), QUOTE))
            yield candle_page(self, symbol, candles, low, high, int(self.clock() * 1000))
