"""CoinGecko: REST polling of /api/v3/simple/price, every symbol in one request; history from market_chart/range.

No key needed; a free Demo key (COINGECKO_API_KEY) gets a higher rate limit. CoinGecko caches this
answer for about 60 s, so polling more often than every 30 s only earns 429s.
History has no public 1-minute data: a day within 24 h of now comes as ~5-minute points, older days hourly,
so it is one request per symbol per day, and the points are `Tick`s (no OHLC).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from producer.sources.base import PAYLOAD_ERRORS
from producer.sources.history import HistoryPage, own_symbol, read_rows, tick_page, windows
from producer.sources.http import JsonClient, PollingSource
from producer.sources.validation import number, optional_number
from producer.tick import Tick

log = logging.getLogger(__name__)

DEFAULT_URL = "https://api.coingecko.com"
DAY_MS = 86_400_000
IDS = {"BTC": "bitcoin", "ETH": "ethereum", "XRP": "ripple", "SOL": "solana", "ADA": "cardano", "DOGE": "dogecoin"}


class CoinGecko(PollingSource):
    """USD prices, rolling 24 h USD volume and 24 h change, with CoinGecko's own update time as `ts`."""

    name = "coingecko"
    known = tuple(IDS)

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, api_key: str | None = None,
                 interval: float = 30.0, clock: Callable[[], float] = time.time, **client_options: Any) -> None:
        key = api_key if api_key is not None else os.environ.get("COINGECKO_API_KEY")
        client = JsonClient(self.name, base_url or os.environ.get("COINGECKO_URL", DEFAULT_URL), "COINGECKO_URL",
                            key_env="COINGECKO_API_KEY", headers={"x-cg-demo-api-key": key} if key else None,
                            **client_options)
        super().__init__(symbols, client, interval)
        self.clock = clock

    async def poll(self) -> list[Tick]:
        data = await self.client.get("/api/v3/simple/price", {
            "ids": ",".join(IDS[s] for s in self.symbols),
            "vs_currencies": "usd",
            "include_24hr_vol": "true",
            "include_24hr_change": "true",
            "include_last_updated_at": "true",
        })
        if not isinstance(data, dict):
            self._skip(data, TypeError("expected an object keyed by coin id"))
            return []
        ticks = []
        for symbol in self.symbols:
            coin = data.get(IDS[symbol])
            if coin is None:
                log.warning("coingecko: the reply has no %s (id %s); delisted or renamed?", symbol, IDS[symbol])
                continue
            try:
                ticks.append(Tick(
                    symbol=symbol,
                    source=self.name,
                    ts=int(number(coin["last_updated_at"]) * 1000),
                    price=number(coin["usd"]),
                    volume_24h=optional_number(coin.get("usd_24h_vol")),
                    change_24h_pct=optional_number(coin.get("usd_24h_change")),
                ))
            except PAYLOAD_ERRORS as e:
                self._skip(coin, e)
        return ticks

    async def history(self, symbol: str, start_ms: int, end_ms: int) -> AsyncIterator[HistoryPage]:
        """USD prices with the rolling 24 h volume at each point, one page per day (one request each)."""
        symbol = own_symbol(self, symbol)
        for low, high in windows(start_ms, end_ms, DAY_MS):
            data = await self.client.get(f"/api/v3/coins/{IDS[symbol]}/market_chart/range", {
                "vs_currency": "usd", "from": str(low // 1000), "to": str(math.ceil(high / 1000))})
            yield tick_page(self, symbol, self._chart(symbol, data), low, high, int(self.clock() * 1000))

    def _chart(self, symbol: str, data: Any) -> list[Tick]:
        """market_chart's prices as ticks, each with the total_volumes entry of the same timestamp."""
        data = data if isinstance(data, dict) else {"prices": data}  # read_rows skips and counts a non-object
        volumes = dict(read_rows(self, data.get("total_volumes") or [], lambda r: (int(number(r[0])), number(r[1]))))

        def point(row: Any) -> Tick:
            ts = int(number(row[0]))
            return Tick(symbol, self.name, ts, number(row[1]), volume_24h=volumes.get(ts))

        return read_rows(self, data.get("prices"), point)
