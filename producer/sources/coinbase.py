"""Coinbase Exchange: the public WebSocket feed, channels `ticker` and `heartbeat`, no key.

`ticker` comes once per match (batched in bursts) with the rolling 24 h window; `heartbeat` comes
every second per product even when nothing trades, so silence means a dead feed: the stall
detector reconnects after `stall_timeout` seconds without any message. Coinbase closes a
connection that has not subscribed within 5 s, so the subscription is sent right after connecting.
An `error` message (e.g. an unknown product) stops the source: reconnecting would only repeat it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection

from producer.sources.base import SourceError
from producer.sources.validation import iso_ms, number, optional_number, pct_change
from producer.sources.ws import WebSocketSource
from producer.tick import Tick

DEFAULT_URL = "wss://ws-feed.exchange.coinbase.com"
QUOTE = "USD"


class Coinbase(WebSocketSource):
    """Last price, rolling 24 h volume in USD (base volume x price) and 24 h change, `ts` = the match time."""

    name = "coinbase"
    url_env = "COINBASE_WS_URL"

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, stall_timeout: float | None = 10.0,
                 **options: Any) -> None:
        url = base_url or os.environ.get(self.url_env, DEFAULT_URL)
        super().__init__(symbols, url, stall_timeout=stall_timeout, **options)
        self.products = [f"{s}-{QUOTE}" for s in self.symbols]

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
