"""CoinMarketCap: REST polling of /v1/cryptocurrency/quotes/latest, every symbol in one request.

Needs a key (COINMARKETCAP_API_KEY). One poll of up to 100 coins in USD costs 1 credit; CMC
updates quotes every 60 s, the default interval. Mind the free plan's monthly credits (about
10,000): at 60 s they last about a week, at 300 s (`interval=300`) a whole month.
CMC reports errors in `status.error_code`, sometimes with HTTP 200, so every answer is checked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from producer.sources.base import PAYLOAD_ERRORS, SourceError, TransientError
from producer.sources.http import JsonClient, PollingSource
from producer.sources.validation import iso_ms, number, optional_number
from producer.tick import Tick

log = logging.getLogger(__name__)

DEFAULT_URL = "https://pro-api.coinmarketcap.com"
RATE_LIMIT_WAIT = 60.0  # 1008 (per minute) and 1011 (per IP) reset within a minute


def check(status: int, data: Any, retry_after: float | None) -> None:
    """Turn CMC's `status.error_code` into stop (credits gone) or retry (rate limit, odd 200s)."""
    body = data.get("status") if isinstance(data, dict) else None
    if not isinstance(body, dict):
        return
    code, message = str(body.get("error_code") or 0), body.get("error_message")
    if code in ("1009", "1010"):
        period = "daily" if code == "1009" else "monthly"
        raise SourceError(f"cmc: {period} API credits exhausted (error {code}: {message}); wait for the next "
                          f"period, poll less often (interval), or use a plan with more credits")
    if code in ("1008", "1011"):
        raise TransientError(f"cmc: rate limited (error {code}: {message})",
                             RATE_LIMIT_WAIT if retry_after is None else retry_after)
    if status == 200 and code != "0":
        raise TransientError(f"cmc: HTTP 200 with error {code}: {message}")


class CoinMarketCap(PollingSource):
    """USD prices, rolling 24 h USD volume and 24 h change, with the quote's `last_updated` as `ts`."""

    name = "cmc"

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, api_key: str | None = None,
                 interval: float = 60.0, **client_options: Any) -> None:
        key = api_key or os.environ.get("COINMARKETCAP_API_KEY")
        if not key:
            raise SourceError("cmc needs an API key: set COINMARKETCAP_API_KEY (a free one is at "
                              "https://coinmarketcap.com/api/)")
        client = JsonClient(self.name, base_url or os.environ.get("COINMARKETCAP_URL", DEFAULT_URL),
                            "COINMARKETCAP_URL", key_env="COINMARKETCAP_API_KEY", check=check,
                            headers={"X-CMC_PRO_API_KEY": key}, **client_options)
        super().__init__(symbols, client, interval)

    async def poll(self) -> list[Tick]:
        data = await self.client.get("/v1/cryptocurrency/quotes/latest",
                                     {"symbol": ",".join(self.symbols), "convert": "USD"})
        coins = data.get("data") if isinstance(data, dict) else None
        if not isinstance(coins, dict):
            self._skip(data, TypeError("expected data: an object keyed by symbol"))
            return []
        ticks = []
        for symbol in self.symbols:
            coin = coins.get(symbol)
            if coin is None:
                log.warning("cmc: the reply has no %s; CMC may have changed or dropped that symbol", symbol)
                continue
            try:
                usd = coin["quote"]["USD"]
                ticks.append(Tick(
                    symbol=symbol,
                    source=self.name,
                    ts=iso_ms(usd.get("last_updated") or coin["last_updated"]),
                    price=number(usd["price"]),
                    volume_24h=optional_number(usd.get("volume_24h")),
                    change_24h_pct=optional_number(usd.get("percent_change_24h")),
                ))
            except PAYLOAD_ERRORS as e:
                self._skip(coin, e)
        return ticks
