"""Coinbase Exchange: the public WebSocket feed, channels `ticker` and `heartbeat`, no key.

`ticker` comes once per match (batched in bursts) with the rolling 24 h window; `heartbeat` comes
every second per product even when nothing trades, so silence means a dead feed: the stall
detector reconnects after `stall_timeout` seconds without any message. Coinbase closes a
connection that has not subscribed within 5 s, so the subscription is sent right after connecting.
Coinbase's docs say an `error` message comes with its disconnects: a slow consumer (ErrSlowConsume),
a client sending too much (ErrSlowRead), a message too big, network trouble. Those are transient and
reconnect with backoff; a refused subscription (an unknown product or channel) or authentication stops
the source with advice, since reconnecting would only repeat it. An error it does not know reconnects.
History: REST /products/{id}/candles, at most 300 a request (five per product per day of minutes), from
COINBASE_REST_URL; `start` and `end` are both bucket starts and both included, so a request asks for 300
buckets at most. Buckets without trades have no candle. The granularity is one of 60, 300, 900, 3600, 21600 and
86400 seconds only: 1m, 5m, 15m, 1h and 1d are asked as they are; 4h is rolled up from 1h candles and 1w (weeks
from Monday) from 1d candles, with `aggregate` (the cascade's), each request covering whole buckets. Public REST is
limited to 10 requests/s per IP: requests are spaced 0.1 s apart, and a 429 is retried with backoff.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection

from cryptopulse.candle import INTERVAL_MS, Candle, aggregate, bucket_of
from cryptopulse.errors import SourceError, TransientError
from cryptopulse.tick import Tick
from producer.sources.history import HistoryPage, HistoryReach, candle_page, own_symbol, read_rows, windows
from producer.sources.http import JsonClient, OnWait, Reply
from producer.sources.validation import iso_ms, number, optional_number, pct_change
from producer.sources.ws import WebSocketSource

DEFAULT_URL = "wss://ws-feed.exchange.coinbase.com"
REST_URL = "https://api.exchange.coinbase.com"
QUOTE = "USD"
CANDLES_PER_REQUEST = 300  # Coinbase rejects wider ranges
GRANULARITY = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}  # seconds; 21600 (6 h) is none of ours
ROLLED_UP_FROM = {"4h": "1h", "1w": "1d"}  # the intervals Coinbase has no granularity for, and what they are made of
REST_GAP = 0.1  # public REST: 10 requests/s per IP (bursts of 15)
# Words of the error messages Coinbase documents for transient disconnects (ErrSlowConsume, ErrSlowRead,
# "Message too big"), lower case, matched against message and reason
TRANSIENT = ("slowconsume", "slow consume", "slowread", "slow read", "too big")
# ...and of errors that a reconnect would only repeat: a refused subscription, authentication
PERMANENT = ("failed to subscribe", "product", "channel", "auth", "signature", "unauthorized", "forbidden")


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
                               "COINBASE_REST_URL", check=self._check, min_gap=REST_GAP,
                               backoff_base=self.backoff_base, backoff_max=self.backoff_max, sleep=self.sleep,
                               rng=self.rng, on_wait=on_wait)
        self.clock = clock

    async def on_open(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"type": "subscribe", "product_ids": self.products,
                                  "channels": ["ticker", "heartbeat"]}))

    def read(self, message: Any) -> Iterable[Tick]:
        kind = message.get("type")
        if kind == "error":
            raise self._error(message)
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

    def _error(self, message: dict[str, Any]) -> SourceError:
        """An `error` message as TransientError (reconnect) or SourceError (stop), by what it says."""
        what = str(message.get("message"))
        if message.get("reason"):
            what += f" ({message['reason']})"
        text = what.lower()
        if any(word in text for word in TRANSIENT):
            return TransientError(f"dropped the feed: {what}, a transient disconnect (slow consumer, too many "
                                  f"client messages or a message too big)")
        if any(word in text for word in PERMANENT):
            return SourceError(f"coinbase refused the feed: {what}; check the products {','.join(self.products)} "
                               f"and {self.url_env}")
        return TransientError(f"an error Coinbase does not document: {what}")

    def _check(self, reply: Reply) -> None:
        """A 404 on the candles of a product is an unknown product, not a wrong URL."""
        if reply.status == 404 and isinstance(reply.data, dict) and "message" in reply.data:
            raise SourceError(f"coinbase: {reply.describe()}; Coinbase has no such product: check the symbols "
                              f"(and COINBASE_REST_URL)")

    async def history(self, symbol: str, start_ms: int, end_ms: int,
                      interval: str = "1m") -> AsyncIterator[HistoryPage]:
        """Candles of `interval` (USD; volume = base volume x close), one page per request of up to 300 candles of
        the granularity asked (for 4h and 1w, of the finer one they are rolled up from: whole buckets a request)."""
        symbol = own_symbol(self, symbol)
        fetched = ROLLED_UP_FROM.get(interval, interval)
        width, fetched_width = INTERVAL_MS[interval], INTERVAL_MS[fetched]
        for low, high in windows(start_ms, end_ms, CANDLES_PER_REQUEST * fetched_width // width * width):
            first, last = _buckets(low, high, fetched_width)
            if first > last:  # shorter than a bucket, and no bucket starts in it
                yield candle_page(self, symbol, [], low, high, int(self.clock() * 1000), interval)
                continue
            query = {"granularity": str(GRANULARITY[fetched]), "start": _iso(first), "end": _iso(last)}
            rows = await self.rest.get(f"/products/{symbol}-{QUOTE}/candles", query)
            # [time (s), low, high, open, close, volume (base)], newest first: candle_page sorts
            candles = read_rows(self, rows, lambda r: Candle.ohlc(
                symbol, self.name, int(number(r[0]) * 1000), number(r[3]), number(r[2]), number(r[1]), number(r[4]),
                number(r[5]) * number(r[4]), QUOTE, interval=fetched))
            if fetched != interval:
                candles = _rolled_up(candles, interval, fetched)
            yield candle_page(self, symbol, candles, low, high, int(self.clock() * 1000), interval)

    def history_reach(self, interval: str) -> HistoryReach | None:
        """None: candles of every granularity go back to each product's listing."""
        return None


def _rolled_up(candles: list[Candle], interval: str, fetched: str) -> list[Candle]:
    """Coinbase's candles of `fetched` (any order) as candles of the coarser `interval`, one per bucket that has any.
    A row that does not start on a bucket of `fetched` is passed on as it is, for `candle_page` to skip and count."""
    buckets: dict[int, list[Candle]] = {}
    misaligned = []
    for candle in candles:
        if bucket_of(candle.start, fetched) == candle.start:
            buckets.setdefault(bucket_of(candle.start, interval), []).append(candle)
        else:
            misaligned.append(candle)
    return misaligned + [aggregate(children[0].symbol, children[0].source, interval, start, children, final=True)
                         for start, children in buckets.items()]


def _buckets(low: int, high: int, width: int) -> tuple[int, int]:
    """The first and the last start of a bucket of `width` in [low, high): Coinbase's `start` and `end`, both
    included, so a window of 300 buckets asks for 300, not 301."""
    first = -(-low // width) * width
    last = (high - 1) // width * width
    return first, last


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))
