"""CoinGecko: REST polling of /api/v3/simple/price, every symbol in one request; history from market_chart/range.

Three plans, chosen by the key given (CoinGecko docs, "Authentication" and "Errors & Rate Limits"):
- public, no key: https://api.coingecko.com, rate-limited per IP (no number documented; about 5 calls/min
  observed), no monthly quota documented;
- Demo, a free key in COINGECKO_API_KEY: same host, header `x-cg-demo-api-key`, 100 calls/min now (30 in
  older docs) and 10,000 calls a month;
- paid, COINGECKO_PRO_API_KEY: https://pro-api.coingecko.com, header `x-cg-pro-api-key`.
COINGECKO_URL overrides the host (with or without its /api/v3). The plan sets the defaults: polling every
60 s (CoinGecko caches the answer ~60 s, so faster gains nothing), every 300 s on Demo so the monthly quota
lasts (8,928 calls in a 31-day month, leaving ~1,000 for back-fills), and the spacing of requests
(public 5/min, Demo 30/min, paid 250/min); COINGECKO_POLL_SECONDS and COINGECKO_CALLS_PER_MINUTE
override them.
CoinGecko's error codes are read from the body whatever the HTTP status: 10012 (history older than 365
days on public/Demo plans, sent with HTTP 401) stops the back-fill saying so, not "key missing"; 10002,
10005, 10010 and 10011 stop with what to change; 429 waits for Retry-After or backs off.
History is points, `Tick`s (no OHLC), rolled up into candles by the back-fill. market_chart/range picks their
spacing by the span asked (docs): ~5-minute points for a range within a day of now, hourly for up to 90 days,
daily (00:00 UTC) beyond. So each interval is asked in windows that give points at least as fine as it: a day a
request for 1m to 15m (5-minute points, which exist for the last 24 h only: `history_reach`), 90 days for 1h and
4h (hourly), 364 days for 1d and 1w (daily: one request per symbol-year). There are no public 1-minute points: a
1-minute candle from them is one point's price. Public and Demo plans reach back 365 days.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from cryptopulse.errors import SourceError, TransientError
from cryptopulse.settings import env_number
from cryptopulse.tick import Tick
from cryptopulse.times import DAY_MS
from producer.sources.base import PAYLOAD_ERRORS
from producer.sources.history import HistoryPage, HistoryReach, own_symbol, read_rows, tick_page, windows
from producer.sources.http import JsonClient, PollingSource, Reply
from producer.sources.validation import number, optional_number

log = logging.getLogger(__name__)

DEFAULT_URL = "https://api.coingecko.com"
PRO_URL = "https://pro-api.coingecko.com"
HISTORY_DAYS = 365  # how far back public and Demo keys may ask
FIVE_MINUTE_POINTS_DAYS = 1  # 5-minute points come for a range within a day of now only; older ones are hourly
# Days a market_chart/range request covers, per interval: short enough for points as fine as the interval needs
WINDOW_DAYS = {"1m": 1, "5m": 1, "15m": 1, "1h": 90, "4h": 90, "1d": 364, "1w": 364}
IDS = {"BTC": "bitcoin", "ETH": "ethereum", "XRP": "ripple", "SOL": "solana", "ADA": "cardano", "DOGE": "dogecoin"}
POLL_SECONDS = {"public": 60.0, "demo": 300.0, "pro": 60.0}
CALLS_PER_MINUTE = {"public": 5.0, "demo": 30.0, "pro": 250.0}
KEY_ENV = {"public": "COINGECKO_API_KEY", "demo": "COINGECKO_API_KEY", "pro": "COINGECKO_PRO_API_KEY"}


class CoinGecko(PollingSource):
    """USD prices, rolling 24 h USD volume and 24 h change, with CoinGecko's own update time as `ts`."""

    name = "coingecko"
    known = tuple(IDS)

    def __init__(self, symbols: Iterable[str], *, base_url: str | None = None, api_key: str | None = None,
                 pro_api_key: str | None = None, interval: float | None = None,
                 calls_per_minute: float | None = None, clock: Callable[[], float] = time.time,
                 **client_options: Any) -> None:
        pro = pro_api_key if pro_api_key is not None else os.environ.get("COINGECKO_PRO_API_KEY")
        demo = api_key if api_key is not None else os.environ.get("COINGECKO_API_KEY")
        if pro:
            self.plan, headers, default_url = "pro", {"x-cg-pro-api-key": pro}, PRO_URL
        elif demo:
            self.plan, headers, default_url = "demo", {"x-cg-demo-api-key": demo}, DEFAULT_URL
        else:
            self.plan, headers, default_url = "public", {}, DEFAULT_URL
        url = (base_url or os.environ.get("COINGECKO_URL") or default_url).rstrip("/").removesuffix("/api/v3")
        if calls_per_minute is None:
            calls_per_minute = env_number("COINGECKO_CALLS_PER_MINUTE", CALLS_PER_MINUTE[self.plan], 0.001, 1e6,
                                          unit="calls")
        client = JsonClient(self.name, url, "COINGECKO_URL", key_env=KEY_ENV[self.plan], headers=headers,
                            check=self._check, min_gap=60 / calls_per_minute if calls_per_minute else 0.0,
                            **client_options)
        super().__init__(symbols, client, interval or env_number(
            "COINGECKO_POLL_SECONDS", POLL_SECONDS[self.plan], 0.001, 1e6, unit="seconds"))
        self.calls_per_minute = calls_per_minute
        self.clock = clock

    def _check(self, reply: Reply) -> None:
        """CoinGecko's own error codes (in the body, whatever the HTTP status) to stop-with-advice or retry."""
        code, message = error_code(reply.data)
        what = f"error {code}: {message}" if code is not None else reply.describe()
        if code == 10012:
            raise SourceError(f"coingecko: the {self.plan} plan serves history for the last {HISTORY_DAYS} days only "
                              f"({what}); back-fill at most {HISTORY_DAYS} days (control backfill --hours "
                              f"{HISTORY_DAYS * 24} or less), or use a paid key in COINGECKO_PRO_API_KEY")
        if code == 10002:
            raise SourceError(f"coingecko: the API key is missing ({what}); set COINGECKO_API_KEY (Demo) or "
                              f"COINGECKO_PRO_API_KEY (paid)")
        if code == 10010:
            raise SourceError(f"coingecko: a paid key on the public host ({what}); set it as COINGECKO_PRO_API_KEY, "
                              f"which uses {PRO_URL}, and leave COINGECKO_URL unset")
        if code == 10011:
            raise SourceError(f"coingecko: a Demo key on the paid host ({what}); set it as COINGECKO_API_KEY, which "
                              f"uses {DEFAULT_URL}, and leave COINGECKO_URL unset")
        if code == 10005:
            raise SourceError(f"coingecko: {reply.url} is not on the {self.plan} plan ({what}); use a plan that has it")
        if reply.status == 403:
            raise SourceError(f"coingecko: {reply.describe()}; CoinGecko's firewall blocked this client (its CDN "
                              f"rule 1020); use a key (COINGECKO_API_KEY) or another network, or point COINGECKO_URL "
                              f"at a mirror")
        if reply.status == 429:
            raise TransientError(f"{reply.describe()}; rate limited on the {self.plan} plan (pacing at "
                                 f"{self.calls_per_minute:g} calls/min; COINGECKO_CALLS_PER_MINUTE sets it)",
                                 reply.retry_after)

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

    async def history(self, symbol: str, start_ms: int, end_ms: int,
                      interval: str = "1m") -> AsyncIterator[HistoryPage]:
        """USD prices with the rolling 24 h volume at each point, as fine as `interval` needs, one page per request
        (`WINDOW_DAYS` each)."""
        symbol = own_symbol(self, symbol)
        for low, high in windows(start_ms, end_ms, WINDOW_DAYS[interval] * DAY_MS):
            data = await self.client.get(f"/api/v3/coins/{IDS[symbol]}/market_chart/range", {
                "vs_currency": "usd", "from": str(low // 1000), "to": str(math.ceil(high / 1000))})
            yield tick_page(self, symbol, self._chart(symbol, data), low, high, int(self.clock() * 1000))

    def history_reach(self, interval: str) -> HistoryReach | None:
        """Minutes need 5-minute points, which reach back a day; the public and Demo plans reach back 365 days."""
        if WINDOW_DAYS[interval] == FIVE_MINUTE_POINTS_DAYS:
            return HistoryReach(FIVE_MINUTE_POINTS_DAYS, f"its points are 5 minutes apart for the last 24 hours only "
                                f"(hourly before, then daily), too sparse for {interval} candles further back",
                                "use --interval 1h (hourly points)")
        if self.plan == "pro":
            return None
        return HistoryReach(HISTORY_DAYS, f"the {self.plan} plan serves the last {HISTORY_DAYS} days of history only",
                            "set a paid key in COINGECKO_PRO_API_KEY")

    def _chart(self, symbol: str, data: Any) -> list[Tick]:
        """market_chart's prices as ticks, each with the total_volumes entry of the same timestamp."""
        data = data if isinstance(data, dict) else {"prices": data}  # read_rows skips and counts a non-object
        volumes = dict(read_rows(self, data.get("total_volumes") or [], lambda r: (int(number(r[0])), number(r[1]))))

        def point(row: Any) -> Tick:
            ts = int(number(row[0]))
            return Tick(symbol, self.name, ts, number(row[1]), volume_24h=volumes.get(ts))

        return read_rows(self, data.get("prices"), point)


def error_code(data: Any) -> tuple[int | None, str]:
    """CoinGecko's error code and message from an error body: `{"status": {"error_code", "error_message"}}`,
    the same nested in `{"error": ...}` (10012), or `{"error": "text"}`; (None, "") for anything else."""
    body = data.get("error", data) if isinstance(data, dict) else None
    status = body.get("status") if isinstance(body, dict) else None
    if isinstance(status, dict):
        code, message = status.get("error_code"), str(status.get("error_message"))
        return (code if isinstance(code, int) and not isinstance(code, bool) else None), message
    return (None, body) if isinstance(body, str) else (None, "")
