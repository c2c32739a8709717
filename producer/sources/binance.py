"""Binance spot: the public combined WebSocket stream of `<symbol>usdt@miniTicker`, no key.

miniTicker comes once a second per symbol with the last price and the rolling 24 h window, which
is what a Tick carries; `@trade` would be one message per trade, far more than the dashboard shows.
Prices are in USDT, not USD. The default host is Binance's market-data-only mirror; where Binance
answers HTTP 451 (restricted location) point BINANCE_WS_URL at another mirror.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from producer.sources.base import TransientError
from producer.sources.validation import number, optional_number, pct_change
from producer.sources.ws import WebSocketSource
from producer.tick import Tick

DEFAULT_URL = "wss://data-stream.binance.vision"
QUOTE = "USDT"


class Binance(WebSocketSource):
    """Last price, rolling 24 h quote volume (USDT) and 24 h change, `ts` = Binance's event time."""

    name = "binance"
    url_env = "BINANCE_WS_URL"

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, stall_timeout: float | None = 60.0,
                 **options: Any) -> None:
        base = (base_url or os.environ.get(self.url_env, DEFAULT_URL)).rstrip("/")
        super().__init__(symbols, base, stall_timeout=stall_timeout, **options)
        self.url = f"{base}/stream?streams=" + "/".join(f"{s.lower()}{QUOTE.lower()}@miniTicker" for s in self.symbols)

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
