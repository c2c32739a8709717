"""Coinbase Exchange: the public WebSocket feed, channels `ticker` and `heartbeat`, no key.

`ticker` comes once per match (batched in bursts) with the rolling 24 h window; `heartbeat` comes
every second per product even when nothing trades, so silence means a dead feed: the stall
detector reconnects after `stall_timeout` seconds without any message. Coinbase closes a
connection that has not subscribed within 5 s, so the subscription is sent right after connecting.
An `error` message (e.g. an unknown product) stops the source: reconnecting would only repeat it.
History: REST /products/{id}/candles at 1 minute, at most 300 a request (five per product per day), from
COINBASE_REST_URL; minutes without trades have no candle.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection

from producer.sources.base import SourceError
from producer.sources.history import MINUTE_MS, Candle, HistoryPage, candle_page, own_symbol, read_rows, windows
from producer.sources.http import JsonClient, OnWait
from producer.sources.validation import iso_ms, number, optional_number, pct_change
from producer.sources.ws import WebSocketSource
from producer.tick import Tick

DEFAULT_URL = "wss://ws-feed.exchange.coinbase.com"
REST_URL = "https://api.exchange.coinbase.com"
QUOTE = "USD"
CANDLES_PER_REQUEST = 300  # Coinbase rejects wider ranges


class Coinbase(WebSocketSource):
    """Last price, rolling 24 h volume in USD (base volume x price) and 24 h change, `ts` = the match time."""

    name = "coinbase"
    url_env = "COINBASE_WS_URL"

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, stall_timeout: float | None = 10.0,
                 rest_url: str | None = None, on_wait: OnWait | None = None, clock: Callable[[], float] = time.time,
                 **options: Any) -> None:
        url = base_url or os.environ.get(self.url_env, DEFAULT_URL)
        super().__init__(symbols, url, stall_timeout=stall_timeout, **options)
        self.products = [f"{s}-{QUOTE}" for s in self.symbols]
        # JsonClient sends a User-Agent, which Coinbase's REST API is said to require
        self.rest = JsonClient(self.name, rest_url or os.environ.get("COINBASE_REST_URL", REST_URL),
                               "COINBASE_REST_URL", backoff_base=self.backoff_base, backoff_max=self.backoff_max,
                               sleep=self.sleep, rng=self.rng, on_wait=on_wait)
        self.clock = clock

    async def on_open(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"type": "subscribe", "product_ids": self.products,
                                  "channels": ["ticker", "heartbeat"]}))

    def read(self, message: Any) -> Iterable[Tick]:
        kind = message.get("type")
        if kind == "error":
            raise SourceError(f"coinbase refused the feed: {message.get('message')} ({message.get('reason')}); "
                              f"check the products {','.join(self.products)} and {self.url_env}")
        if kind != "ticker":
            return []  # subscriptions, heartbeat (it only keeps the stall detector quiet), unknown types
        symbol, _, quote = message["product_id"].partition("-")
        if symbol not in self.symbols or quote != QUOTE:
            return []
        price = number(message["price"])
        volume = optional_number(message.get("volume_24h"))
        return [Tick(
            symbol=symbol,
            source=self.name,
            ts=iso_ms(message["time"]),
            price=price,
            quote=QUOTE,
            volume_24h=None if volume is None else volume * price,
            change_24h_pct=pct_change(price, optional_number(message.get("open_24h"))),
        )]

    async def history(self, symbol: str, start_ms: int, end_ms: int) -> AsyncIterator[HistoryPage]:
        """1-minute candles (USD; volume = base volume x close), one page per request of up to 300 minutes."""
        symbol = own_symbol(self, symbol)
        for low, high in windows(start_ms, end_ms, CANDLES_PER_REQUEST * MINUTE_MS):
            rows = await self.rest.get(f"/products/{symbol}-{QUOTE}/candles",
                                       {"granularity": "60", "start": _iso(low), "end": _iso(high)})
            # [time (s), low, high, open, close, volume (base)], newest first: candle_page sorts
            candles = read_rows(self, rows, lambda r: Candle(symbol, self.name, int(number(r[0]) * 1000), number(r[3]),
                                                             number(r[2]), number(r[1]), number(r[4]),
                                                             number(r[5]) * number(r[4]), QUOTE))
            yield candle_page(self, symbol, candles, low, high, int(self.clock() * 1000))


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))
