"""History at every interval of the REST-backed sources against a local fake HTTP API: how each provider is asked
for an interval (Binance's klines as they are, Coinbase's granularities and what it rolls up, CoinGecko's windows by
the spacing of its points), paging, the open bucket, misaligned rows, pacing, and how far back each reaches."""

from __future__ import annotations

import pytest

from cryptopulse.candle import INTERVAL_MS, INTERVALS, Candle, aggregate, bucket_of
from producer.sources.binance import Binance
from producer.sources.coinbase import Coinbase
from producer.sources.coingecko import CoinGecko
from producer.sources.history import HistoryPage, HistoryReach
from tests.fakes import FakeHttp, Reply, Sleeps, run, sample

NOON = 1_748_865_600_000  # 2025-06-02T12:00:00Z, the samples' reference time, a Monday
MIDNIGHT = NOON - 12 * 3_600_000
HOUR, DAY, WEEK = 3_600_000, 86_400_000, 7 * 86_400_000
KLINES = "/api/v3/klines"
CANDLES = "/products/BTC-USD/candles"
CG_PATH = "/api/v3/coins/bitcoin/market_chart/range"


async def pages(source, start_ms: int, end_ms: int, interval: str) -> list[HistoryPage]:
    return [page async for page in source.history("BTC", start_ms, end_ms, interval)]


def clock(ms: int):
    return lambda: ms / 1000


def binance(http: FakeHttp, sleeps: Sleeps, now_ms: int = NOON, **options) -> Binance:
    return Binance(["BTC"], rest_url=http.url, sleep=sleeps, rng=lambda: 0.5, clock=clock(now_ms), **options)


def coinbase(http: FakeHttp, sleeps: Sleeps, now_ms: int = NOON) -> Coinbase:
    return Coinbase(["BTC"], rest_url=http.url, sleep=sleeps, rng=lambda: 0.5, clock=clock(now_ms))


def gecko(http: FakeHttp, sleeps: Sleeps, **options) -> CoinGecko:
    options.setdefault("calls_per_minute", 0)
    return CoinGecko(["BTC"], base_url=http.url, sleep=sleeps, rng=lambda: 0.5, clock=clock(NOON), **options)


def kline(start_ms: int, interval: str, close: str = "100.5") -> list:
    end = start_ms + INTERVAL_MS[interval] - 1
    return [start_ms, "100.0", "101.0", "99.0", close, "2.0", end, "201.0", 10, "1.0", "100.5", "0"]


# --- Binance: klines at the interval asked ---------------------------------------------------------------

def test_binance_daily_klines_are_1d_candles_asked_by_their_interval(http, sleeps):
    http.reply(KLINES, Reply(body=sample("binance-klines-1d.json")))
    (page,) = run(pages(binance(http, sleeps), MIDNIGHT - 5 * DAY, MIDNIGHT, "1d"))
    assert [c.start for c in page.candles] == [MIDNIGHT - k * DAY for k in range(5, 0, -1)]
    assert page.candles[0] == Candle.ohlc("BTC", "binance", MIDNIGHT - 5 * DAY, 109022.32, 109280.0, 106800.0,
                                          107780.56, 15250.2135 * (109022.32 + 107780.56) / 2, "USDT", interval="1d")
    assert page.points[-1].ts == MIDNIGHT - 1 and page.points[-1].price == 105642.93  # the close at the day's end
    (request,) = http.requests
    assert request["query"] == {"symbol": "BTCUSDT", "interval": "1d", "startTime": str(MIDNIGHT - 5 * DAY),
                                "endTime": str(MIDNIGHT - 1), "limit": "1000"}


def test_binance_weekly_klines_open_on_monday_as_our_weeks_do(http, sleeps):
    http.reply(KLINES, Reply(body=sample("binance-klines-1w.json")))
    (page,) = run(pages(binance(http, sleeps), MIDNIGHT - 3 * WEEK, MIDNIGHT, "1w"))
    assert [c.start for c in page.candles] == [MIDNIGHT - k * WEEK for k in (3, 2, 1)]
    assert all(bucket_of(c.start, "1w") == c.start and c.interval == "1w" for c in page.candles)
    assert (page.candles[-1].open, page.candles[-1].close) == (109012.0, 105642.93)
    assert http.requests[0]["query"]["interval"] == "1w"


@pytest.mark.parametrize("interval", INTERVALS)
def test_binance_pages_by_1000_klines_of_the_interval(http, sleeps, interval):
    width = INTERVAL_MS[interval]
    end = bucket_of(NOON, interval)
    start = end - 1500 * width
    http.reply(KLINES, Reply(body=[]))
    result = run(pages(binance(http, sleeps), start, end, interval))
    assert [p.covered_until_ms for p in result] == [start + 1000 * width, end]
    assert [(r["query"]["interval"], r["query"]["startTime"], r["query"]["endTime"]) for r in http.requests] == [
        (interval, str(start), str(start + 1000 * width - 1)), (interval, str(start + 1000 * width), str(end - 1))]


def test_binance_leaves_the_day_still_open_and_skips_a_kline_off_the_grid(http, sleeps):
    rows = [kline(MIDNIGHT - 2 * DAY, "1d"), kline(MIDNIGHT - DAY + HOUR, "1d"),  # a mirror on UTC+1
            kline(MIDNIGHT - DAY, "1d"), kline(MIDNIGHT, "1d")]  # today's is still open at noon
    http.reply(KLINES, Reply(body=rows))
    source = binance(http, sleeps)
    (page,) = run(pages(source, MIDNIGHT - 2 * DAY, MIDNIGHT + DAY, "1d"))
    assert [c.start for c in page.candles] == [MIDNIGHT - 2 * DAY, MIDNIGHT - DAY]
    assert page.covered_until_ms == MIDNIGHT  # a resume asks for today again
    assert source.rejected == 1


def test_binance_paces_daily_klines_by_the_weight_used_as_for_minutes(http, sleeps):
    start = MIDNIGHT - 1500 * DAY
    http.reply(KLINES, Reply(body=[], headers={"X-MBX-USED-WEIGHT-1M": "4799"}), Reply(body=[]))
    run(pages(binance(http, sleeps, now_ms=NOON + 15_000), start, MIDNIGHT, "1d"))
    assert len(http.requests) == 2 and sleeps == [pytest.approx(46.0)]  # to the next minute, plus one second


def test_binance_has_no_reach_limit():
    assert Binance(["BTC"]).history_reach("1m") is None


# --- Coinbase: its granularities, and 4h and 1w rolled up ------------------------------------------------

def test_coinbase_daily_candles_are_asked_at_86400(http, sleeps):
    http.reply(CANDLES, Reply(body=sample("coinbase-exchange-candles-86400.json")))
    (page,) = run(pages(coinbase(http, sleeps), MIDNIGHT - 5 * DAY, MIDNIGHT, "1d"))
    assert [c.start for c in page.candles] == [MIDNIGHT - k * DAY for k in range(5, 0, -1)]
    oldest = sample("coinbase-exchange-candles-86400.json")[-1]  # [time, low, high, open, close, volume]
    assert page.candles[0] == Candle.ohlc("BTC", "coinbase", MIDNIGHT - 5 * DAY, 109025.52, 109271.9, 106812.3,
                                          107784.96, oldest[5] * 107784.96, interval="1d")
    (request,) = http.requests
    assert request["query"] == {"granularity": "86400", "start": "2025-05-28T00:00:00Z",
                                "end": "2025-06-01T00:00:00Z"}


def test_coinbase_rolls_4h_up_from_its_hourly_candles(http, sleeps):
    http.reply(CANDLES, Reply(body=sample("coinbase-exchange-candles-3600.json")))
    (page,) = run(pages(coinbase(http, sleeps), MIDNIGHT, MIDNIGHT + 8 * HOUR, "4h"))
    hours = [Candle.ohlc("BTC", "coinbase", int(r[0]) * 1000, r[3], r[2], r[1], r[4], r[5] * r[4], interval="1h")
             for r in sample("coinbase-exchange-candles-3600.json")]
    expected = [aggregate("BTC", "coinbase", "4h", start, [h for h in hours if bucket_of(h.start, "4h") == start],
                          final=True) for start in (MIDNIGHT, MIDNIGHT + 4 * HOUR)]
    assert page.candles == expected
    assert all(c.origin == "ohlc" and c.interval == "4h" and c.final for c in page.candles)
    (request,) = http.requests
    assert request["query"] == {"granularity": "3600", "start": "2025-06-02T00:00:00Z",
                                "end": "2025-06-02T07:00:00Z"}


def test_coinbase_rolls_weeks_up_from_days_and_asks_for_whole_weeks(http, sleeps):
    monday = MIDNIGHT
    start = monday - 50 * WEEK
    days = [[(monday - k * DAY) // 1000, 99.0, 101.0 + k, 100.0, 100.5, 2.0] for k in range(1, 15)]  # two weeks
    http.reply(CANDLES, Reply(body=[]), Reply(body=days))
    result = run(pages(coinbase(http, sleeps), start, monday, "1w"))
    # 300 days a request at most: 42 whole weeks, then the other 8
    assert [p.covered_until_ms for p in result] == [start + 42 * WEEK, monday]
    assert [(r["query"]["granularity"], r["query"]["start"], r["query"]["end"]) for r in http.requests] == [
        ("86400", "2024-06-17T00:00:00Z", "2025-04-06T00:00:00Z"),
        ("86400", "2025-04-07T00:00:00Z", "2025-06-01T00:00:00Z")]
    weeks = result[1].candles
    assert [c.start for c in weeks] == [monday - 2 * WEEK, monday - WEEK]
    assert [(c.high, c.volume) for c in weeks] == [(101.0 + 14, 7 * 2.0 * 100.5), (101.0 + 7, 7 * 2.0 * 100.5)]


def test_coinbase_skips_a_candle_off_the_hourly_grid_when_it_rolls_up(http, sleeps):
    rows = [[(MIDNIGHT + HOUR) // 1000, 99.0, 101.0, 100.0, 100.5, 2.0],
            [(MIDNIGHT + HOUR // 2) // 1000, 1.0, 900.0, 100.0, 100.5, 2.0]]  # 00:30: not an hour
    http.reply(CANDLES, Reply(body=rows))
    source = coinbase(http, sleeps)
    (page,) = run(pages(source, MIDNIGHT, MIDNIGHT + 4 * HOUR, "4h"))
    assert [(c.start, c.high, c.low) for c in page.candles] == [(MIDNIGHT, 101.0, 99.0)]
    assert source.rejected == 1


@pytest.mark.parametrize(("interval", "granularity"), [("1m", "60"), ("5m", "300"), ("15m", "900"), ("1h", "3600")])
def test_coinbase_asks_300_buckets_of_its_own_granularities(http, sleeps, interval, granularity):
    width = INTERVAL_MS[interval]
    end = bucket_of(NOON, interval)
    http.reply(CANDLES, Reply(body=[]))
    result = run(pages(coinbase(http, sleeps), end - 301 * width, end, interval))
    assert [p.covered_until_ms for p in result] == [end - width, end]
    assert {r["query"]["granularity"] for r in http.requests} == {granularity}


# --- CoinGecko: points as fine as the interval needs -----------------------------------------------------

def test_coingecko_daily_points_for_1d_come_in_one_request_a_year(http, sleeps):
    http.reply(CG_PATH, Reply(body=sample("coingecko-market-chart-range-daily.json")))
    (page,) = run(pages(gecko(http, sleeps), MIDNIGHT - 14 * DAY, MIDNIGHT, "1d"))
    assert page.candles is None and page.covered_until_ms == MIDNIGHT
    assert [t.ts for t in page.points] == [MIDNIGHT - k * DAY for k in range(14, 0, -1)]  # not today's latest
    assert page.points[0].price == 106030.64 and page.points[0].volume_24h == 38e9
    (request,) = http.requests
    assert request["query"] == {"vs_currency": "usd", "from": str((MIDNIGHT - 14 * DAY) // 1000),
                                "to": str(MIDNIGHT // 1000)}


@pytest.mark.parametrize(("interval", "days"), [("1m", 1), ("15m", 1), ("1h", 90), ("4h", 90), ("1d", 364),
                                                ("1w", 364)])
def test_coingecko_asks_in_windows_short_enough_for_the_points_the_interval_needs(http, sleeps, interval, days):
    http.reply(CG_PATH, Reply(body={"prices": [], "total_volumes": []}))
    end = bucket_of(NOON, interval)
    result = run(pages(gecko(http, sleeps), end - days * DAY - DAY, end, interval))
    assert [p.covered_until_ms for p in result] == [end - DAY, end]
    assert [int(r["query"]["to"]) - int(r["query"]["from"]) for r in http.requests] == [days * 86_400, 86_400]


@pytest.mark.parametrize("plan", [{}, {"api_key": "demo-key"}])
def test_coingecko_reaches_back_365_days_on_the_public_and_demo_plans_and_a_day_for_minutes(http, sleeps, plan):
    source = gecko(http, sleeps, pro_api_key="", **plan)
    for interval in ("1h", "4h", "1d", "1w"):
        reach = source.history_reach(interval)
        assert reach.days == 365 and f"the {source.plan} plan serves the last 365 days" in reach.why
        assert "COINGECKO_PRO_API_KEY" in reach.instead
    for interval in ("1m", "5m", "15m"):
        reach = source.history_reach(interval)
        assert reach == HistoryReach(1, reach.why, "use --interval 1h (hourly points)")
        assert "5 minutes apart for the last 24 hours only" in reach.why


def test_coingecko_on_a_paid_plan_reaches_as_far_as_it_has_data_except_for_minutes(http, sleeps):
    source = gecko(http, sleeps, pro_api_key="pro-key")
    assert source.plan == "pro" and source.history_reach("1d") is None and source.history_reach("1h") is None
    assert source.history_reach("5m").days == 1
