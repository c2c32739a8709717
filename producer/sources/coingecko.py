"""CoinGecko: REST polling of /api/v3/simple/price, every symbol in one request.

No key needed; a free Demo key (COINGECKO_API_KEY) gets a higher rate limit. CoinGecko caches this
answer for about 60 s, so polling more often than every 30 s only earns 429s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from producer.sources.base import PAYLOAD_ERRORS
from producer.sources.http import JsonClient, PollingSource
from producer.sources.validation import number, optional_number
from producer.tick import Tick

log = logging.getLogger(__name__)

DEFAULT_URL = "https://api.coingecko.com"
IDS = {"BTC": "bitcoin", "ETH": "ethereum", "XRP": "ripple", "SOL": "solana", "ADA": "cardano", "DOGE": "dogecoin"}


class CoinGecko(PollingSource):
    """USD prices, rolling 24 h USD volume and 24 h change, with CoinGecko's own update time as `ts`."""

    name = "coingecko"
    known = tuple(IDS)

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, api_key: str | None = None,
                 interval: float = 30.0, **client_options: Any) -> None:
        key = api_key if api_key is not None else os.environ.get("COINGECKO_API_KEY")
        client = JsonClient(self.name, base_url or os.environ.get("COINGECKO_URL", DEFAULT_URL), "COINGECKO_URL",
                            key_env="COINGECKO_API_KEY", headers={"x-cg-demo-api-key": key} if key else None,
                            **client_options)
        super().__init__(symbols, client, interval)

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
