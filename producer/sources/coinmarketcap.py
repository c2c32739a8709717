"""CoinMarketCap: REST polling of /v1/cryptocurrency/quotes/latest, every symbol in one request.

Needs a key (COINMARKETCAP_API_KEY). One poll of up to 100 coins in USD costs 1 credit; CMC updates
quotes every 60 s. The free Basic plan has about 10,000 credits a month (some 2026 summaries say 15,000)
and 30 requests a minute, so the default interval is 300 s: 8,928 credits in a 31-day month
(COINMARKETCAP_POLL_SECONDS changes it; 60 s spends ~44,600).
CMC reports errors in `status.error_code`, sometimes with HTTP 200, so every answer is checked (CMC docs,
"Errors and rate limits"): 1008 (per-minute limit) and 1011 (per-IP limit) wait a minute or Retry-After;
1009 (the daily credits) waits until the daily reset at 00:00 UTC, saying so once; 1010 (the monthly
credits) and the key and plan errors 1001-1007 stop with what to do. A symbol CMC cannot resolve is
skipped (`skip_invalid`), with a warning, instead of failing the whole request.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from cryptopulse.errors import SourceError, TransientError
from cryptopulse.settings import env_number
from cryptopulse.tick import Tick
from producer.sources.base import PAYLOAD_ERRORS
from producer.sources.http import JsonClient, PollingSource, Reply
from producer.sources.validation import iso_ms, number, optional_number

log = logging.getLogger(__name__)

DEFAULT_URL = "https://pro-api.coinmarketcap.com"
POLL_SECONDS = 300.0  # the free plan's monthly credits last the month
RATE_LIMIT_WAIT = 60.0  # 1008 (per minute) and 1011 (per IP) reset within a minute
DAY = 86_400
RESET_SLACK = 60.0  # wait this long past 00:00 UTC, for clocks that disagree
PORTAL = "https://pro.coinmarketcap.com/account"
ADVICE = {
    "1001": "the key is invalid; check COINMARKETCAP_API_KEY",
    "1002": "no key was sent; set COINMARKETCAP_API_KEY",
    "1003": f"the key's plan is not activated; activate it at {PORTAL}",
    "1004": f"the key's plan has expired; renew it at {PORTAL}",
    "1005": "this endpoint needs a key; set COINMARKETCAP_API_KEY",
    "1006": "the key's plan does not include /v1/cryptocurrency/quotes/latest; use a plan that does",
    "1007": "the key is disabled; create another key or contact CMC support",
    "1010": (f"the monthly credits are used up; they come back on the plan's monthly reset (see {PORTAL}); "
             f"poll less often (COINMARKETCAP_POLL_SECONDS) or use a plan with more credits"),
}


class CoinMarketCap(PollingSource):
    """USD prices, rolling 24 h USD volume and 24 h change, with the quote's `last_updated` as `ts`."""

    name = "cmc"

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, api_key: str | None = None,
                 interval: float | None = None, clock: Callable[[], float] = time.time,
                 **client_options: Any) -> None:
        key = api_key or os.environ.get("COINMARKETCAP_API_KEY")
        if not key:
            raise SourceError("cmc needs an API key: set COINMARKETCAP_API_KEY (a free one is at "
                              "https://coinmarketcap.com/api/)")
        self.clock = clock
        client = JsonClient(self.name, base_url or os.environ.get("COINMARKETCAP_URL", DEFAULT_URL),
                            "COINMARKETCAP_URL", key_env="COINMARKETCAP_API_KEY", check=self._check,
                            headers={"X-CMC_PRO_API_KEY": key}, **client_options)
        super().__init__(symbols, client, interval or env_number("COINMARKETCAP_POLL_SECONDS", POLL_SECONDS, 0.001, 1e6,
                                                                              unit="seconds"))

    def _check(self, reply: Reply) -> None:
        """CMC's `status.error_code` to stop with advice, wait for a reset, or retry."""
        body = reply.data.get("status") if isinstance(reply.data, dict) else None
        if not isinstance(body, dict):
            return
        code, message = str(body.get("error_code") or 0), body.get("error_message")
        what = f"error {code}: {message}"
        if code == "1009":
            wait = self.until_daily_reset()
            at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.clock() + wait))
            raise TransientError(f"the daily credits are used up ({what}); waiting {wait / 3600:.1f} h for the "
                                 f"daily reset at 00:00 UTC, retrying at {at}; poll less often "
                                 f"(COINMARKETCAP_POLL_SECONDS) to stay under it", wait)
        if code in ("1008", "1011"):
            limit = "per-minute" if code == "1008" else "per-IP"
            raise TransientError(f"{limit} rate limit ({what})",
                                 RATE_LIMIT_WAIT if reply.retry_after is None else reply.retry_after)
        if code in ADVICE:
            raise SourceError(f"cmc: GET {reply.url} -> HTTP {reply.status}, {what}; {ADVICE[code]}")
        if reply.status == 200 and code != "0":
            raise TransientError(f"HTTP 200 with {what}")

    def until_daily_reset(self) -> float:
        """Seconds until CMC's daily credits come back: the next 00:00 UTC, plus a minute. Just after midnight
        the reset may not have reached CMC's counters yet, so then only a few minutes."""
        into_day = self.clock() % DAY
        if into_day < 10 * 60:
            return 5 * RATE_LIMIT_WAIT
        return DAY - into_day + RESET_SLACK

    async def poll(self) -> list[Tick]:
        data = await self.client.get("/v1/cryptocurrency/quotes/latest",
                                     {"symbol": ",".join(self.symbols), "convert": "USD", "skip_invalid": "true"})
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
