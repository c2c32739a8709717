"""Each provider's documented errors and limits, against the local fake servers: what the adapter does with them.

Payloads are in tests/samples (made in the documented shapes, see its README). Waits are recorded by the
injected `sleep` and clocks are fixed, so nothing here actually waits.
"""

from __future__ import annotations

import calendar
import logging
import time

import pytest

from cryptopulse.errors import ConfigError, SourceError
from producer.sources.binance import MIN_BAN, Binance
from producer.sources.coinbase import Coinbase
from producer.sources.coingecko import PRO_URL, CoinGecko, error_code
from producer.sources.coinmarketcap import CoinMarketCap
from producer.sources.http import JsonClient
from tests.fakes import RECV, FakeHttp, FakeWs, Reply, Sleeps, run, sample, take

NOON = 1_748_865_600_000  # 2025-06-02T12:00:00Z
HOUR, MINUTE = 3_600_000, 60_000
CG_PRICE = "/api/v3/simple/price"
CG_CHART = "/api/v3/coins/bitcoin/market_chart/range"
CMC_PATH = "/v1/cryptocurrency/quotes/latest"
KLINES = "/api/v3/klines"
CANDLES = "/products/BTC-USD/candles"


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan a test means, whatever keys the environment running it has."""
    for name in ("COINGECKO_API_KEY", "COINGECKO_PRO_API_KEY", "COINGECKO_URL", "COINGECKO_POLL_SECONDS",
                 "COINGECKO_CALLS_PER_MINUTE", "COINMARKETCAP_POLL_SECONDS", "BINANCE_WEIGHT_BUDGET",
                 "BINANCE_WAF_WAIT_SECONDS"):
        monkeypatch.delenv(name, raising=False)


def clock(ms: int):
    return lambda: ms / 1000


def utc(text: str) -> int:
    """Epoch ms of a UTC time written 2025-06-02T18:00:00."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) * 1000


async def pages(source, symbol: str, start_ms: int, end_ms: int) -> list:
    return [page async for page in source.history(symbol, start_ms, end_ms)]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


class Waits(list):
    def __call__(self, seconds: float, why: str) -> None:
        self.append((seconds, why))


# --- Coinbase: the WebSocket feed's error messages --------------------------------------------------

def coinbase_ws(ws: FakeWs, sleeps: Sleeps) -> Coinbase:
    return Coinbase(["BTC", "ETH", "XRP"], base_url=ws.url, sleep=sleeps, rng=lambda: 0.5)


@pytest.mark.parametrize("error", sample("coinbase-exchange-ws-errors-transient.json"),
                         ids=["slow-consume", "slow-read", "message-too-big"])
def test_coinbase_transient_error_messages_reconnect_with_backoff(ws, sleeps, caplog, error):
    ws.scripts = [[RECV, sample("coinbase-exchange-ws-subscriptions.json"), error],
                  [RECV, sample("coinbase-exchange-ws-ticker.json")]]
    source = coinbase_ws(ws, sleeps)
    assert [t.symbol for t in run(take(source.ticks(), 1))] == ["BTC"]
    assert source.reconnects == 1 and sleeps == [0.5]  # full jitter: rng 0.5 x base 1 s
    (warning,) = warnings(caplog)
    assert f"dropped the feed: {error['message']}, a transient disconnect" in warning


def test_coinbase_repeated_errors_back_off_further_until_a_tick_comes(ws, sleeps, caplog):
    slow = sample("coinbase-exchange-ws-errors-transient.json")[0]
    ws.scripts = [[RECV, sample("coinbase-exchange-ws-subscriptions.json"), slow],
                  [RECV, sample("coinbase-exchange-ws-subscriptions.json"), slow],
                  [RECV, sample("coinbase-exchange-ws-ticker.json"), slow], [RECV, slow]]
    source = coinbase_ws(ws, sleeps)
    assert len(run(take(source.ticks(), 1))) == 1
    assert sleeps == [0.5, 1.0]  # the subscriptions reply between two errors does not reset the backoff
    assert len(warnings(caplog)) == 1  # one warning for the outage; the rest at debug


def test_coinbase_an_undocumented_error_reconnects(ws, sleeps):
    ws.scripts = [[RECV, {"type": "error", "message": "Sample text: something new"}],
                  [RECV, sample("coinbase-exchange-ws-ticker.json")]]
    assert len(run(take(coinbase_ws(ws, sleeps).ticks(), 1))) == 1
    assert sleeps == [0.5]


def test_coinbase_a_refused_subscription_stops_with_advice(ws, sleeps):
    ws.scripts = [[RECV, sample("coinbase-exchange-ws-error.json")]]
    with pytest.raises(SourceError, match=r"refused the feed: Failed to subscribe \(DOGEX-USD is not a valid "
                                          r"product\); check the products BTC-USD,ETH-USD,XRP-USD and COINBASE_WS_URL"):
        run(take(coinbase_ws(ws, sleeps).ticks(), 1))
    assert sleeps == []


# --- Coinbase: REST candles ---------------------------------------------------------------------------

def coinbase_rest(http: FakeHttp, sleeps: Sleeps, now_ms: int = NOON) -> Coinbase:
    return Coinbase(["BTC"], rest_url=http.url, sleep=sleeps, rng=lambda: 0.5, clock=clock(now_ms))


def iso_ms(text: str) -> int:
    return utc(text.removesuffix("Z"))


@pytest.mark.parametrize("start", [NOON - 24 * HOUR, NOON - 24 * HOUR + 30_000], ids=["aligned", "unaligned"])
def test_coinbase_candle_requests_ask_for_at_most_300_buckets_and_miss_none(http, sleeps, start):
    http.reply(CANDLES, Reply(body=[]))
    result = run(pages(coinbase_rest(http, sleeps), "BTC", start, NOON))
    asked = [(iso_ms(r["query"]["start"]), iso_ms(r["query"]["end"])) for r in http.requests]
    assert len(asked) == len(result) == 5  # a day in windows of 300 minutes
    assert all((end - first) // MINUTE + 1 <= 300 for first, end in asked)  # start and end both included
    assert all(later[0] == earlier[1] + MINUTE for earlier, later in zip(asked, asked[1:], strict=False))
    assert asked[0][0] == -(-start // MINUTE) * MINUTE and asked[-1][1] == NOON - MINUTE


def test_coinbase_429_is_retried_with_backoff(http, sleeps, caplog):
    http.reply(CANDLES, Reply(429, sample("coinbase-exchange-error-429.json")),
               Reply(body=sample("coinbase-exchange-candles.json")))
    (page,) = run(pages(coinbase_rest(http, sleeps), "BTC", NOON - 5 * MINUTE, NOON))
    assert len(page.candles) == 5 and sleeps == [0.5]
    assert "HTTP 429" in warnings(caplog)[0]


def test_coinbase_404_on_candles_is_an_unknown_product(http, sleeps):
    http.reply(CANDLES, Reply(404, sample("coinbase-exchange-error-404.json")))
    with pytest.raises(SourceError, match="Coinbase has no such product: check the symbols"):
        run(pages(coinbase_rest(http, sleeps), "BTC", NOON - 5 * MINUTE, NOON))
    assert len(http.requests) == 1


def test_coinbase_rest_requests_are_spaced_for_10_per_second(http):
    sleeps = Sleeps()
    client = Coinbase(["BTC"], rest_url=http.url, sleep=sleeps).rest
    assert client.min_gap == 0.1


# --- the pacing every REST client shares ------------------------------------------------------------------

def test_requests_are_spaced_by_min_gap_counting_the_waits_between_them(http, sleeps):
    http.reply("/x", Reply(500, "oops"), Reply(body={}), Reply(body={}))
    client = JsonClient("fake", http.url, "FAKE_URL", min_gap=12.0, sleep=sleeps, rng=lambda: 0.5,
                        monotonic=lambda: 100.0)
    run(client.get("/x"))  # a 500, a 0.5 s backoff, then 11.5 s more to make the 12 s gap
    run(client.get("/x"))  # 12 s after the last one
    assert sleeps == [0.5, 11.5, 12.0]


# --- Binance --------------------------------------------------------------------------------------------

def binance(http: FakeHttp, sleeps: Sleeps, now_ms: int = NOON, **options) -> Binance:
    return Binance(["BTC"], rest_url=http.url, sleep=sleeps, rng=lambda: 0.5, clock=clock(now_ms), **options)


def kline(start_ms: int) -> list:
    return [start_ms, "100.0", "101.0", "99.0", "100.5", "2.0", start_ms + MINUTE - 1, "201.0", 10, "1.0", "100.5",
            "0"]


def test_binance_403_is_the_firewall_and_waits_instead_of_stopping(http, sleeps, caplog):
    http.reply(KLINES, Reply(403, sample("binance-error-403.html"), {"Content-Type": "text/html"}),
               Reply(body=sample("binance-klines-1m.json")))
    waits = Waits()
    (page,) = run(pages(binance(http, sleeps, on_wait=waits), "BTC", NOON - 5 * MINUTE, NOON))
    assert len(page.candles) == 5
    assert sleeps == [300.0]  # BINANCE_WAF_WAIT_SECONDS' default
    (warning,) = warnings(caplog)
    assert "HTTP 403" in warning and "web application firewall" in warning and "BINANCE_REST_URL" in warning
    assert waits[0][0] == 300.0


def test_binance_firewall_wait_is_configurable(http, sleeps, monkeypatch):
    monkeypatch.setenv("BINANCE_WAF_WAIT_SECONDS", "30")
    http.reply(KLINES, Reply(403, sample("binance-error-403.html")), Reply(body=[]))
    run(pages(binance(http, sleeps), "BTC", NOON - 5 * MINUTE, NOON))
    assert sleeps == [30.0]


@pytest.mark.parametrize(("headers", "wait"), [
    ({"Retry-After": "90"}, 90.0),  # documented: Retry-After says how long the ban lasts
    ({}, 300.0),  # no header: the ban's end in msg, 5 minutes after the clock
])
def test_binance_418_waits_until_the_ban_ends(http, sleeps, headers, wait):
    http.reply(KLINES, Reply(418, sample("binance-error-418.json"), headers), Reply(body=[]))
    run(pages(binance(http, sleeps), "BTC", NOON - 5 * MINUTE, NOON))
    assert sleeps == [wait]


def test_binance_418_without_any_time_waits_the_shortest_ban(http, sleeps):
    http.reply(KLINES, Reply(418, {"code": -1003, "msg": "Sample text: banned"}), Reply(body=[]))
    run(pages(binance(http, sleeps), "BTC", NOON - 5 * MINUTE, NOON))
    assert sleeps == [MIN_BAN]


@pytest.mark.parametrize(("headers", "wait"), [({"Retry-After": "7"}, 7.0), ({}, 41.0)])
def test_binance_429_waits_for_retry_after_or_the_next_minute(http, sleeps, headers, wait):
    http.reply(KLINES, Reply(429, sample("binance-error-429.json"), headers), Reply(body=[]))
    run(pages(binance(http, sleeps, now_ms=NOON + 20_000), "BTC", NOON - 5 * MINUTE, NOON))
    assert sleeps == [wait]  # 12:00:20: the minute's weight resets at 12:01:00, one second to spare


def test_binance_invalid_symbol_stops(http, sleeps):
    http.reply(KLINES, Reply(400, sample("binance-error-400-invalid-symbol.json")))
    with pytest.raises(SourceError, match="Binance has no such market: check the symbols"):
        run(pages(binance(http, sleeps), "BTC", NOON - 5 * MINUTE, NOON))


def test_binance_holds_the_next_request_when_the_minutes_weight_nears_the_budget(http, sleeps, caplog):
    caplog.set_level(logging.INFO)
    start = NOON - 2000 * MINUTE  # two requests of 1000 klines
    http.reply(KLINES, Reply(body=[kline(start)], headers={"X-MBX-USED-WEIGHT-1M": "4799"}),
               Reply(body=[kline(start + 1000 * MINUTE)], headers={"X-MBX-USED-WEIGHT-1M": "2"}))
    waits = Waits()
    source = binance(http, sleeps, now_ms=NOON + 20_000, on_wait=waits)
    source.rest.monotonic = lambda: 100.0  # no time passes between the two requests
    assert len(run(pages(source, "BTC", start, NOON))) == 2
    assert sleeps == [41.0]  # after the first page only: 4799 + 2 is over 4800
    assert waits == [(41.0, "request weight 4799 used this minute, budget 4800 of the limit 6000; waiting for the "
                            "next minute")]
    assert any("holding the next request 41.0 s" in r.getMessage() for r in caplog.records)


def test_binance_weight_budget_is_configurable(http, sleeps, monkeypatch):
    monkeypatch.setenv("BINANCE_WEIGHT_BUDGET", "6000")
    http.reply(KLINES, Reply(body=[], headers={"X-MBX-USED-WEIGHT-1M": "4799"}))
    run(pages(binance(http, sleeps), "BTC", NOON - 2000 * MINUTE, NOON))
    assert sleeps == []


def test_binance_websocket_refused_by_the_firewall_waits(ws, sleeps):
    ws.reject = [403]
    ws.scripts = [[{"stream": "btcusdt@miniTicker", "data": sample("binance-ws-miniticker.json")}]]
    source = Binance(["BTC"], base_url=ws.url, sleep=sleeps, rng=lambda: 0.5, waf_wait=45)
    assert [t.symbol for t in run(take(source.ticks(), 1))] == ["BTC"]
    assert sleeps == [45.0]


def test_binance_websocket_refused_with_418_waits_the_shortest_ban(ws, sleeps):
    ws.reject = [418]
    ws.scripts = [[{"stream": "btcusdt@miniTicker", "data": sample("binance-ws-miniticker.json")}]]
    source = Binance(["BTC"], base_url=ws.url, sleep=sleeps, rng=lambda: 0.5)
    assert len(run(take(source.ticks(), 1))) == 1
    assert sleeps == [MIN_BAN]  # the fake sends no Retry-After


# --- CoinGecko -----------------------------------------------------------------------------------------

def gecko(http: FakeHttp, sleeps: Sleeps, **options) -> CoinGecko:
    options.setdefault("calls_per_minute", 0)
    return CoinGecko(["BTC", "ETH"], base_url=http.url, sleep=sleeps, rng=lambda: 0.5, clock=clock(NOON), **options)


def test_coingecko_history_beyond_365_days_says_so_and_not_key_missing(http, sleeps):
    http.reply(CG_CHART, Reply(401, sample("coingecko-error-10012.json")))
    with pytest.raises(SourceError) as error:
        run(pages(gecko(http, sleeps), "BTC", NOON - 400 * 24 * HOUR, NOON))
    message = str(error.value)
    assert "the public plan serves history for the last 365 days only (error 10012" in message
    assert "control backfill --hours 8760 or less" in message and "COINGECKO_PRO_API_KEY" in message
    assert "missing" not in message and len(http.requests) == 1 and sleeps == []


@pytest.mark.parametrize(("code", "advice"), [
    (10002, "the API key is missing (error 10002"),
    (10005, "is not on the public plan (error 10005"),
    (10010, "a paid key on the public host (error 10010: Sample text: if you are using a Pro API key"),
    (10011, "a Demo key on the paid host (error 10011"),
])
def test_coingecko_key_and_plan_errors_stop_with_what_to_change(http, sleeps, code, advice):
    body = sample("coingecko-error-10010.json")
    body["status"]["error_code"] = code
    http.reply(CG_PRICE, Reply(401 if code != 10005 else 403, body))
    with pytest.raises(SourceError, match=advice.replace("(", r"\(")):
        run(take(gecko(http, sleeps).ticks(), 1))
    assert len(http.requests) == 1


def test_coingecko_429_waits_for_retry_after_and_names_the_pacing(http, sleeps, caplog):
    http.reply(CG_PRICE, Reply(429, sample("coingecko-error-429.json"), {"Retry-After": "119"}),
               Reply(body=sample("coingecko-simple-price.json")))
    assert len(run(take(gecko(http, sleeps).ticks(), 2))) == 2
    assert sleeps == [119.0]
    assert "rate limited on the public plan" in warnings(caplog)[0]


def test_coingecko_error_bodies_are_read_in_every_documented_shape():
    assert error_code(sample("coingecko-error-10012.json"))[0] == 10012
    assert error_code(sample("coingecko-error-429.json"))[0] == 429
    assert error_code({"error": "coin not found"}) == (None, "coin not found")
    assert error_code(sample("coingecko-simple-price.json")) == (None, "")


def test_coingecko_pro_key_uses_the_pro_host_and_header(http, sleeps, monkeypatch):
    monkeypatch.setenv("COINGECKO_PRO_API_KEY", "pro-key")
    monkeypatch.setenv("COINGECKO_API_KEY", "demo-key")  # the paid key wins
    assert CoinGecko(["BTC"]).client.base_url == PRO_URL
    monkeypatch.setenv("COINGECKO_URL", http.url + "/api/v3/")  # the root as CoinGecko's docs write it
    http.reply(CG_PRICE, Reply(body=sample("coingecko-simple-price.json")))
    source = CoinGecko(["BTC"], sleep=sleeps)
    assert source.plan == "pro" and len(run(take(source.ticks(), 1))) == 1
    (request,) = http.requests
    assert request["path"] == CG_PRICE  # /api/v3 once
    assert request["headers"]["x-cg-pro-api-key"] == "pro-key" and "x-cg-demo-api-key" not in request["headers"]


@pytest.mark.parametrize(("env", "plan", "poll", "gap"), [
    ({}, "public", 60.0, 12.0),
    ({"COINGECKO_API_KEY": "demo-key"}, "demo", 300.0, 2.0),
    ({"COINGECKO_PRO_API_KEY": "pro-key"}, "pro", 60.0, 0.24),
])
def test_coingecko_paces_by_plan(monkeypatch, env, plan, poll, gap):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    source = CoinGecko(["BTC", "ETH", "XRP"])
    assert (source.plan, source.interval, source.client.min_gap) == (plan, poll, pytest.approx(gap))
    if plan == "demo":  # one call per poll for all symbols: a 31-day month stays under the 10,000 calls
        assert 31 * 86_400 / source.interval < 10_000


def test_coingecko_pacing_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("COINGECKO_POLL_SECONDS", "120")
    monkeypatch.setenv("COINGECKO_CALLS_PER_MINUTE", "10")
    source = CoinGecko(["BTC"])
    assert (source.interval, source.client.min_gap) == (120.0, 6.0)
    monkeypatch.setenv("COINGECKO_POLL_SECONDS", "soon")
    with pytest.raises(ConfigError, match="COINGECKO_POLL_SECONDS='soon' is not a number of seconds"):
        CoinGecko(["BTC"])


def test_coingecko_public_plan_spaces_its_requests_12_s_apart(http, sleeps):
    http.reply(CG_CHART, Reply(body={"prices": [], "total_volumes": []}))
    source = CoinGecko(["BTC"], base_url=http.url, sleep=sleeps, clock=clock(NOON))
    source.client.monotonic = lambda: 100.0
    run(pages(source, "BTC", NOON - 48 * HOUR, NOON))  # two days: two requests
    assert sleeps == [12.0]


# --- CoinMarketCap ------------------------------------------------------------------------------------

def cmc(http: FakeHttp, sleeps: Sleeps, now_ms: int = NOON) -> CoinMarketCap:
    return CoinMarketCap(["BTC", "ETH", "XRP"], base_url=http.url, api_key="test-key", sleep=sleeps,
                         rng=lambda: 0.5, clock=clock(now_ms))


def test_cmc_daily_cap_waits_for_the_daily_reset_and_says_so_once(http, sleeps, caplog):
    caplog.set_level(logging.INFO)
    http.reply(CMC_PATH, Reply(429, sample("coinmarketcap-error-1009.json")),
               Reply(body=sample("coinmarketcap-quotes-latest.json")))
    source = cmc(http, sleeps, now_ms=utc("2025-06-02T18:00:00"))
    assert len(run(take(source.ticks(), 3))) == 3
    assert sleeps == [6 * 3600 + 60.0]  # to 00:00 UTC, and a minute more
    (warning,) = warnings(caplog)
    assert "the daily credits are used up (error 1009: You've exceeded your API Key's daily rate limit.)" in warning
    assert "waiting 6.0 h for the daily reset at 00:00 UTC, retrying at 2025-06-03 00:01 UTC" in warning
    assert any(r.getMessage() == "cmc: recovered after 2 attempts" for r in caplog.records)


def test_cmc_daily_cap_just_after_midnight_waits_minutes_not_a_day(http, sleeps):
    http.reply(CMC_PATH, Reply(429, sample("coinmarketcap-error-1009.json")),
               Reply(body=sample("coinmarketcap-quotes-latest.json")))
    run(take(cmc(http, sleeps, now_ms=utc("2025-06-03T00:02:00")).ticks(), 1))
    assert sleeps == [300.0]


@pytest.mark.parametrize(("code", "status", "advice"), [
    (1001, 401, "the key is invalid; check COINMARKETCAP_API_KEY"),
    (1002, 401, "no key was sent; set COINMARKETCAP_API_KEY"),
    (1003, 402, "not activated"),
    (1004, 402, "has expired"),
    (1005, 403, "this endpoint needs a key"),
    (1006, 403, "does not include /v1/cryptocurrency/quotes/latest"),
    (1007, 403, "the key is disabled"),
    (1010, 429, "the monthly credits are used up"),
])
def test_cmc_key_plan_and_monthly_errors_stop_with_what_to_do(http, sleeps, code, status, advice):
    body = sample("coinmarketcap-error-429.json")
    body["status"].update(error_code=code, error_message="Sample text: refused")
    http.reply(CMC_PATH, Reply(status, body))
    with pytest.raises(SourceError, match=f"HTTP {status}, error {code}: Sample text: refused; .*{advice}"):
        run(take(cmc(http, sleeps).ticks(), 1))
    assert sleeps == [] and len(http.requests) == 1


def test_cmc_poll_interval_fits_the_free_plan_and_comes_from_the_environment(monkeypatch):
    source = CoinMarketCap(["BTC"], api_key="test-key")
    assert source.interval == 300.0 and 31 * 86_400 / source.interval < 10_000
    monkeypatch.setenv("COINMARKETCAP_POLL_SECONDS", "900")
    assert CoinMarketCap(["BTC"], api_key="test-key").interval == 900.0
