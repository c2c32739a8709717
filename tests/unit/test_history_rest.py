"""History of the REST-backed sources against a local fake HTTP API: parsing, paging, retries, the open minute."""

from __future__ import annotations

import pytest

from cryptopulse.candle import Candle
from cryptopulse.errors import SourceError
from cryptopulse.tick import Tick
from producer.sources.binance import Binance
from producer.sources.coinbase import Coinbase
from producer.sources.coingecko import CoinGecko
from producer.sources.history import HistoryPage, candle_reject_reason, history_source
from producer.sources.validation import reject_reason
from tests.fakes import FakeHttp, Reply, Sleeps, run, sample

NOON = 1_748_865_600_000  # 2025-06-02T12:00:00Z, the samples' reference time
HOUR, MINUTE = 3_600_000, 60_000
CG_PATH = "/api/v3/coins/bitcoin/market_chart/range"
KLINES = "/api/v3/klines"
CANDLES = "/products/BTC-USD/candles"


async def pages(source, symbol: str, start_ms: int, end_ms: int) -> list[HistoryPage]:
    return [page async for page in source.history(symbol, start_ms, end_ms)]


def clock(ms: int):
    return lambda: ms / 1000


class Waits(list):
    """An on_wait callback that records (seconds, why)."""

    def __call__(self, seconds: float, why: str) -> None:
        self.append((seconds, why))


def gecko(http: FakeHttp, sleeps: Sleeps, **options) -> CoinGecko:
    options.setdefault("calls_per_minute", 0)  # unpaced: these tests are about paging and retries
    return CoinGecko(["BTC", "ETH"], base_url=http.url, sleep=sleeps, rng=lambda: 0.5, clock=clock(NOON), **options)


def binance(http: FakeHttp, sleeps: Sleeps, now_ms: int = NOON, **options) -> Binance:
    return Binance(["BTC"], rest_url=http.url, sleep=sleeps, rng=lambda: 0.5, clock=clock(now_ms), **options)


def coinbase(http: FakeHttp, sleeps: Sleeps, now_ms: int = NOON) -> Coinbase:
    return Coinbase(["BTC"], rest_url=http.url, sleep=sleeps, rng=lambda: 0.5, clock=clock(now_ms))


def kline(start_ms: int, close: str = "100.5") -> list:
    return [start_ms, "100.0", "101.0", "99.0", close, "2.0", start_ms + MINUTE - 1, "201.0", 10, "1.0", "100.5", "0"]


# --- CoinGecko -----------------------------------------------------------------------------------

def test_coingecko_history_is_prices_with_the_volume_of_the_same_timestamp(http, sleeps):
    http.reply(CG_PATH, Reply(body=sample("coingecko-market-chart-range.json")))
    (page,) = run(pages(gecko(http, sleeps), "btc", NOON - HOUR, NOON))
    assert page.symbol == "BTC" and page.candles is None and page.covered_until_ms == NOON
    assert len(page.points) == 13
    assert page.points[0] == Tick("BTC", "coingecko", 1_748_862_062_345, 105017.3, "USD", 28312000000.0)
    assert page.points[-1] == Tick("BTC", "coingecko", 1_748_865_583_488, 105241.7, "USD", 28454518518.52)
    assert all(reject_reason(t, NOON) is None for t in page.points)
    (request,) = http.requests
    assert request["query"] == {"vs_currency": "usd", "from": "1748862000", "to": "1748865600"}


def test_coingecko_history_asks_one_day_per_request_and_keeps_each_point_once(http, sleeps):
    body = sample("coingecko-market-chart-range.json")
    http.reply(CG_PATH, Reply(body=body), Reply(body=body))  # both days answer with the same hour
    start = 1_748_862_062_345 - 24 * HOUR  # the second window starts exactly at the sample's first point
    result = run(pages(gecko(http, sleeps), "BTC", start, NOON))
    assert [p.covered_until_ms for p in result] == [start + 24 * HOUR, NOON]
    assert [len(p.points) for p in result] == [0, 13]  # the first day's reply lay outside it, so none twice
    assert [r["query"]["from"] for r in http.requests] == [str(start // 1000), str((start + 24 * HOUR) // 1000)]


def test_coingecko_history_without_a_volume_leaves_it_none_and_skips_unreadable_points(http, sleeps):
    body = {"prices": [[NOON - 2 * MINUTE, 105000.0], [NOON - MINUTE, "n/a"], ["x", 1.0], [NOON - 30_000, -5.0]],
            "total_volumes": []}
    http.reply(CG_PATH, Reply(body=body))
    source = gecko(http, sleeps)
    (page,) = run(pages(source, "BTC", NOON - HOUR, NOON))
    assert page.points == [Tick("BTC", "coingecko", NOON - 2 * MINUTE, 105000.0)]
    assert source.rejected == 3  # "n/a", the bad timestamp, and the negative price


def test_429_waits_for_retry_after_and_says_so_through_on_wait(http, sleeps):
    http.reply(CG_PATH, Reply(429, sample("binance-error-429.json"), {"Retry-After": "7"}),
               Reply(body=sample("coingecko-market-chart-range.json")))
    waits = Waits()
    (page,) = run(pages(gecko(http, sleeps, on_wait=waits), "BTC", NOON - HOUR, NOON))
    assert len(page.points) == 13
    assert sleeps == [7.0]
    ((seconds, why),) = waits
    assert seconds == 7.0 and "HTTP 429" in why


@pytest.mark.parametrize("broken", [
    Reply(200, sample("coingecko-error-page.html"), {"Content-Type": "text/html"}),
    Reply(body='{"prices": [[1748862062345, 105017.3], [17488'),  # truncated JSON
])
def test_an_html_page_or_truncated_json_is_retried(http, sleeps, broken):
    http.reply(CG_PATH, broken, Reply(body=sample("coingecko-market-chart-range.json")))
    waits = Waits()
    (page,) = run(pages(gecko(http, sleeps, on_wait=waits), "BTC", NOON - HOUR, NOON))
    assert len(page.points) == 13
    assert sleeps == [0.5] and waits[0][0] == 0.5 and "not JSON" in waits[0][1]


def test_history_refuses_a_symbol_the_source_was_not_built_for(http, sleeps):
    with pytest.raises(ValueError, match="built for BTC, ETH, not SOL"):
        run(pages(gecko(http, sleeps), "SOL", NOON - HOUR, NOON))


# --- Binance -------------------------------------------------------------------------------------

def test_binance_klines_become_candles_with_the_quote_volume(http, sleeps, monkeypatch):
    monkeypatch.setenv("BINANCE_REST_URL", http.url)
    http.reply(KLINES, Reply(body=sample("binance-klines-1m.json")))
    source = Binance(["BTC"], sleep=sleeps, clock=clock(NOON))
    (page,) = run(pages(source, "BTC", NOON - 5 * MINUTE, NOON))
    assert page.candles is not None and len(page.candles) == 5
    assert page.candles[0] == Candle.ohlc("BTC", "binance", 1_748_865_300_000, 105180.0, 105189.9, 105168.12, 105176.22,
                                     262945.275, "USDT")
    assert [c.start for c in page.candles] == [NOON - k * MINUTE for k in range(5, 0, -1)]
    assert page.points[-1] == Tick("BTC", "binance", 1_748_865_599_999, 105199.34, "USDT")  # the close at close time
    assert page.covered_until_ms == NOON
    assert all(candle_reject_reason(c, NOON) is None for c in page.candles)
    (request,) = http.requests
    assert request["query"] == {"symbol": "BTCUSDT", "interval": "1m", "startTime": str(NOON - 5 * MINUTE),
                                "endTime": str(NOON - 1), "limit": "1000"}


def test_binance_drops_the_still_open_minute(http, sleeps):
    http.reply(KLINES, Reply(body=sample("binance-klines-1m.json")))
    now = NOON - 10_000  # 11:59:50: the 11:59 kline closes at 11:59:59.999
    (page,) = run(pages(binance(http, sleeps, now), "BTC", NOON - 5 * MINUTE, NOON))
    assert [c.start for c in page.candles] == [NOON - k * MINUTE for k in range(5, 1, -1)]
    assert page.covered_until_ms == NOON - MINUTE  # a resume asks for 11:59 again


def test_binance_pages_by_start_time_and_stitches_without_a_duplicate(http, sleeps):
    start = NOON - 1002 * MINUTE
    boundary = start + 1000 * MINUTE
    http.reply(KLINES, Reply(body=[kline(boundary - 2 * MINUTE), kline(boundary - MINUTE), kline(boundary)]),
               Reply(body=[kline(boundary), kline(boundary + MINUTE)]))
    result = run(pages(binance(http, sleeps), "BTC", start, NOON))
    assert [p.covered_until_ms for p in result] == [boundary, NOON]
    starts = [c.start for p in result for c in p.candles]
    assert starts == [boundary - 2 * MINUTE, boundary - MINUTE, boundary, boundary + MINUTE]
    assert [(r["query"]["startTime"], r["query"]["endTime"]) for r in http.requests] == [
        (str(start), str(boundary - 1)), (str(boundary), str(NOON - 1))]


def test_binance_skips_and_counts_unreadable_and_implausible_klines(http, sleeps):
    http.reply(KLINES, Reply(body=[kline(NOON - 4 * MINUTE, close="n/a"), kline(NOON - 3 * MINUTE)[:5],
                                   kline(NOON - 2 * MINUTE, close="-1"), kline(NOON - MINUTE, close="150"),
                                   kline(NOON - 5 * MINUTE)]))
    source = binance(http, sleeps)
    (page,) = run(pages(source, "BTC", NOON - 5 * MINUTE, NOON))
    assert [c.start for c in page.candles] == [NOON - 5 * MINUTE]
    assert source.rejected == 4  # bad close, short row, negative close, close above the high


def test_binance_client_errors_say_what_to_do(http, sleeps):
    http.reply(KLINES, Reply(451, {"code": 0, "msg": "Service unavailable from a restricted location"}))
    with pytest.raises(SourceError, match="point BINANCE_REST_URL at a mirror"):
        run(pages(binance(http, sleeps), "BTC", NOON - HOUR, NOON))


# --- Coinbase ------------------------------------------------------------------------------------

def test_coinbase_candles_come_newest_first_and_leave_oldest_first(http, sleeps):
    http.reply(CANDLES, Reply(body=sample("coinbase-exchange-candles.json")))
    (page,) = run(pages(coinbase(http, sleeps), "BTC", NOON - 5 * MINUTE, NOON))
    assert [c.start for c in page.candles] == [NOON - k * MINUTE for k in range(5, 0, -1)]
    assert page.candles[0] == Candle.ohlc("BTC", "coinbase", 1_748_865_300_000, 105181.4, 105189.65, 105169.3, 105176.8,
                                     5.608 * 105176.8)
    assert page.points[-1] == Tick("BTC", "coinbase", NOON - 1, 105190.0)
    (request,) = http.requests
    # start and end are both bucket starts Coinbase includes: 11:55 to 11:59 is the five minutes asked for
    assert request["query"] == {"granularity": "60", "start": "2025-06-02T11:55:00Z", "end": "2025-06-02T11:59:00Z"}
    assert request["headers"]["User-Agent"] == "cryptopulse-producer"


def test_coinbase_pages_by_300_minutes_and_drops_the_open_minute(http, sleeps, monkeypatch):
    monkeypatch.setenv("COINBASE_REST_URL", http.url)
    start = NOON - 301 * MINUTE
    boundary = start + 300 * MINUTE
    row = [0, 99.0, 101.0, 100.0, 100.5, 2.0]
    http.reply(CANDLES, Reply(body=[[boundary // 1000, *row[1:]], [(boundary - MINUTE) // 1000, *row[1:]]]),
               Reply(body=[[boundary // 1000, *row[1:]]]))
    source = Coinbase(["BTC"], sleep=sleeps, clock=clock(NOON - 30_000))  # 11:59:30: the 11:59 candle is open
    result = run(pages(source, "BTC", start, NOON))
    assert [[c.start for c in p.candles] for p in result] == [[boundary - MINUTE], []]
    assert [p.covered_until_ms for p in result] == [boundary, boundary]
    assert [r["query"]["start"] for r in http.requests] == ["2025-06-02T06:59:00Z", "2025-06-02T11:59:00Z"]


# --- the registry --------------------------------------------------------------------------------

def test_cmc_has_no_history_and_says_so_without_asking_for_a_key(monkeypatch):
    monkeypatch.delenv("COINMARKETCAP_API_KEY", raising=False)
    with pytest.raises(SourceError, match="CoinMarketCap's free plan has no historical quotes"):
        history_source("cmc", ["BTC"])
    with pytest.raises(ValueError, match="unknown source 'kraken'"):
        history_source("kraken", ["BTC"])


@pytest.mark.parametrize("name", ["simulated", "coingecko", "binance", "coinbase"])
def test_every_source_with_history_is_built_by_name_and_takes_on_wait(name):
    waits = Waits()
    source = history_source(name, ["btc"], on_wait=waits)
    assert source.name == name and source.symbols == ["BTC"] and callable(source.history)
    if name != "simulated":
        client = source.client if name == "coingecko" else source.rest
        assert client.on_wait is waits
