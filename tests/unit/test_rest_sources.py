"""CoinGecko and CoinMarketCap against a local fake HTTP API: parsing, dedupe, retries, errors."""

from __future__ import annotations

import copy
import logging

import pytest

from cryptopulse.errors import SourceError, UnknownSymbol
from cryptopulse.tick import Tick
from producer.sources.coingecko import CoinGecko
from producer.sources.coinmarketcap import CoinMarketCap
from producer.sources.validation import reject_reason
from tests.fakes import FakeHttp, Reply, Sleeps, run, sample, take

CG_PATH = "/api/v3/simple/price"
CMC_PATH = "/v1/cryptocurrency/quotes/latest"
NOW = 1_748_865_600_000


def gecko(http: FakeHttp, sleeps: Sleeps, symbols: tuple[str, ...] = ("BTC", "ETH", "XRP"), **options) -> CoinGecko:
    options.setdefault("calls_per_minute", 0)  # unpaced: these tests are about retries (test_source_errors paces)
    return CoinGecko(list(symbols), base_url=http.url, sleep=sleeps, rng=lambda: 0.5, **options)


def cmc(http: FakeHttp, sleeps: Sleeps, symbols: tuple[str, ...] = ("BTC", "ETH", "XRP")) -> CoinMarketCap:
    return CoinMarketCap(list(symbols), base_url=http.url, api_key="test-key", sleep=sleeps, rng=lambda: 0.5)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the sources warned of (not a thread another test left behind, sharing this process under xdist)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("producer.")]


# --- CoinGecko -----------------------------------------------------------------------------------

def test_coingecko_turns_simple_price_into_ticks(http, sleeps, monkeypatch):
    monkeypatch.setenv("COINGECKO_URL", http.url)
    monkeypatch.setenv("COINGECKO_API_KEY", "demo-key")
    http.reply(CG_PATH, Reply(body=sample("coingecko-simple-price.json")))
    ticks = run(take(CoinGecko(["BTC", "ETH", "XRP"], sleep=sleeps).ticks(), 3))
    assert ticks == [
        Tick("BTC", "coingecko", 1_748_865_583_000, 105234.12, "USD", 28456123456.78, 1.2345678),
        Tick("ETH", "coingecko", 1_748_865_586_000, 2612.45, "USD", 14523678901.23, -0.8765432),
        Tick("XRP", "coingecko", 1_748_865_581_000, 2.2134, "USD", 2134567890.12, 3.1234567),
    ]
    (request,) = http.requests  # every symbol in one request
    assert request["query"] == {"ids": "bitcoin,ethereum,ripple", "vs_currencies": "usd", "include_24hr_vol": "true",
                                "include_24hr_change": "true", "include_last_updated_at": "true"}
    assert request["headers"]["x-cg-demo-api-key"] == "demo-key"
    assert sleeps == []


def test_coingecko_yields_only_what_changed_since_the_last_poll(http, sleeps):
    first = sample("coingecko-simple-price.json")
    second = copy.deepcopy(first)
    second["bitcoin"].update(usd=105300.5, last_updated_at=first["bitcoin"]["last_updated_at"] + 30)
    http.reply(CG_PATH, Reply(body=first), Reply(body=second))
    ticks = run(take(gecko(http, sleeps, interval=45).ticks(), 4))
    assert [(t.symbol, t.price) for t in ticks] == [("BTC", 105234.12), ("ETH", 2612.45), ("XRP", 2.2134),
                                                    ("BTC", 105300.5)]
    assert sleeps[0] == 45


def test_coingecko_skips_a_coin_missing_from_the_reply(http, sleeps, caplog):
    http.reply(CG_PATH, Reply(body=sample("coingecko-simple-price.json")))
    ticks = run(take(gecko(http, sleeps, ("BTC", "SOL", "ETH")).ticks(), 2))
    assert [t.symbol for t in ticks] == ["BTC", "ETH"]
    assert any("no SOL (id solana)" in m for m in warnings(caplog))
    assert http.requests[0]["query"]["ids"] == "bitcoin,solana,ethereum"


def test_coingecko_refuses_a_symbol_it_has_no_id_for():
    with pytest.raises(UnknownSymbol, match=r"coingecko has no market for DOGEX; known: BTC, ETH, XRP, SOL, ADA, DOGE"):
        CoinGecko(["BTC", "DOGEX"])


def test_coingecko_passes_implausible_prices_on_and_skips_unreadable_ones(http, sleeps):
    body = ('{"bitcoin": {"usd": NaN, "last_updated_at": 1748865583},'
            ' "ethereum": {"usd": -2612.45, "last_updated_at": 1748865586},'
            ' "ripple": {"usd": 0, "usd_24h_vol": -5, "last_updated_at": 1748865581},'
            ' "solana": {"usd": "n/a", "last_updated_at": 1748865581}}')
    http.reply(CG_PATH, Reply(body=body))
    source = gecko(http, sleeps, ("BTC", "ETH", "XRP", "SOL"))
    ticks = run(take(source.ticks(), 3))
    assert [reject_reason(t, NOW) for t in ticks] == ["nan price", "negative price", "zero price"]
    assert source.rejected == 1  # SOL: the price is not a number at all


def test_an_html_page_instead_of_json_is_retried_and_explained(http, sleeps, caplog):
    caplog.set_level(logging.INFO)
    http.reply(CG_PATH, Reply(200, sample("coingecko-error-page.html"), {"Content-Type": "text/html"}),
               Reply(body=sample("coingecko-simple-price.json")))
    source = gecko(http, sleeps)
    assert len(run(take(source.ticks(), 3))) == 3
    assert sleeps == [0.5]  # full jitter: rng 0.5 x base 1 s
    (warning,) = warnings(caplog)
    assert f"GET {http.url}{CG_PATH}?" in warning and "HTTP 200" in warning and "not JSON" in warning
    assert "<!DOCTYPE html>" in warning
    assert any(r.getMessage() == "coingecko: recovered after 2 attempts" for r in caplog.records)
    assert source.reconnects == 1


def test_429_waits_as_long_as_retry_after_says(http, sleeps):
    http.reply(CG_PATH, Reply(429, sample("binance-error-429.json"), {"Retry-After": "7"}),
               Reply(body=sample("coingecko-simple-price.json")))
    assert len(run(take(gecko(http, sleeps).ticks(), 3))) == 3
    assert sleeps == [7.0]


@pytest.mark.parametrize("status", [418, 503])
def test_retry_after_is_honoured_on_418_and_503(http, sleeps, status):
    http.reply(CG_PATH, Reply(status, "<html>busy</html>", {"Retry-After": "3"}),
               Reply(body=sample("coingecko-simple-price.json")))
    run(take(gecko(http, sleeps).ticks(), 3))
    assert sleeps == [3.0]


def test_5xx_backs_off_exponentially_logs_once_and_recovers(http, sleeps, caplog):
    caplog.set_level(logging.INFO)
    http.reply(CG_PATH, Reply(500, "oops"), Reply(502, ""), Reply(500, "oops"),
               Reply(body=sample("coingecko-simple-price.json")))
    run(take(gecko(http, sleeps).ticks(), 3))
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(warnings(caplog)) == 1 and "HTTP 500" in warnings(caplog)[0]
    assert any(r.getMessage() == "coingecko: recovered after 4 attempts" for r in caplog.records)


@pytest.mark.parametrize("broken", [
    Reply(body='{"bitcoin": {"usd": 105234.12, "usd_24h'),  # truncated JSON
    Reply(body='{"bitcoin": {}}', cut=True),  # transfer cut short (Content-Length not reached)
    Reply(body="{}", delay=1.0),  # slower than the client's timeout
])
def test_truncated_or_slow_replies_are_retried(http, sleeps, broken):
    http.reply(CG_PATH, broken, Reply(body=sample("coingecko-simple-price.json")))
    source = gecko(http, sleeps, timeout=0.3)
    assert [t.symbol for t in run(take(source.ticks(), 3))] == ["BTC", "ETH", "XRP"]
    assert sleeps == [0.5]


@pytest.mark.parametrize(("status", "advice"), [
    (400, "check the symbols"),
    (401, "check COINGECKO_API_KEY"),
    (403, "point COINGECKO_URL at a mirror"),
    (404, "check COINGECKO_URL"),
    (451, "coingecko refuses this location; point COINGECKO_URL at a mirror"),
])
def test_client_errors_stop_at_once_and_say_what_to_do(http, sleeps, status, advice):
    http.reply(CG_PATH, Reply(status, {"error": "sample"}))
    with pytest.raises(SourceError, match=f"HTTP {status}") as error:
        run(take(gecko(http, sleeps).ticks(), 1))
    assert advice in str(error.value)
    assert len(http.requests) == 1 and sleeps == []


# --- CoinMarketCap -------------------------------------------------------------------------------

def cmc_error(code: int, status: int = 429) -> Reply:
    body = sample("coinmarketcap-error-429.json")
    body["status"]["error_code"] = code
    return Reply(status, body)


def test_cmc_turns_quotes_latest_into_ticks(http, sleeps):
    http.reply(CMC_PATH, Reply(body=sample("coinmarketcap-quotes-latest.json")))
    ticks = run(take(cmc(http, sleeps).ticks(), 3))
    ts = 1_748_865_540_000  # 2025-06-02T11:59:00.000Z
    assert ticks == [
        Tick("BTC", "cmc", ts, 105210.44712345, "USD", 28765432109.12345, 1.21876543),
        Tick("ETH", "cmc", ts, 2611.98765432, "USD", 14876543210.98765, -0.88123456),
        Tick("XRP", "cmc", ts, 2.21337654, "USD", 2198765432.123456, 3.12012345),
    ]
    (request,) = http.requests
    assert request["query"] == {"symbol": "BTC,ETH,XRP", "convert": "USD", "skip_invalid": "true"}
    assert request["headers"]["X-CMC_PRO_API_KEY"] == "test-key"


def test_cmc_without_a_key_fails_at_start(monkeypatch):
    monkeypatch.delenv("COINMARKETCAP_API_KEY", raising=False)
    with pytest.raises(SourceError, match="set COINMARKETCAP_API_KEY"):
        CoinMarketCap(["BTC"])


def test_cmc_dedupes_by_last_updated_and_skips_missing_coins(http, sleeps, caplog):
    first = sample("coinmarketcap-quotes-latest.json")
    later = copy.deepcopy(first)
    later["data"]["ETH"]["quote"]["USD"].update(price=2615.0, last_updated="2025-06-02T12:00:00.000Z")
    http.reply(CMC_PATH, Reply(body=first), Reply(body=first), Reply(body=later))
    ticks = run(take(cmc(http, sleeps, ("BTC", "ETH", "DOGE")).ticks(), 3))
    assert [(t.symbol, t.price) for t in ticks] == [("BTC", 105210.44712345), ("ETH", 2611.98765432), ("ETH", 2615.0)]
    assert sleeps == [300.0, 300.0]  # the default interval; the second poll gave nothing new
    assert any("no DOGE" in m for m in warnings(caplog))


@pytest.mark.parametrize(("code", "headers", "wait"), [(1008, {}, 60.0), (1011, {}, 60.0),
                                                      (1008, {"Retry-After": "12"}, 12.0)])
def test_cmc_rate_limits_wait_a_minute_or_retry_after(http, sleeps, code, headers, wait):
    limited = cmc_error(code)
    limited.headers = headers
    http.reply(CMC_PATH, limited, Reply(body=sample("coinmarketcap-quotes-latest.json")))
    assert len(run(take(cmc(http, sleeps).ticks(), 3))) == 3
    assert sleeps == [wait]


def test_cmc_monthly_credits_exhausted_stop_with_a_clear_error(http, sleeps):
    http.reply(CMC_PATH, cmc_error(1010))
    with pytest.raises(SourceError, match="error 1010: .*the monthly credits are used up; they come back on the plan"):
        run(take(cmc(http, sleeps).ticks(), 1))
    assert sleeps == []


def test_cmc_checks_error_code_even_on_200(http, sleeps, caplog):
    http.reply(CMC_PATH, cmc_error(500, status=200), Reply(body=sample("coinmarketcap-quotes-latest.json")))
    assert len(run(take(cmc(http, sleeps).ticks(), 3))) == 3
    assert sleeps == [0.5]
    assert "HTTP 200 with error 500" in warnings(caplog)[0]


def test_cmc_bad_key_stops_with_the_api_message(http, sleeps):
    http.reply(CMC_PATH, Reply(401, sample("coinmarketcap-error-401.json")))
    with pytest.raises(SourceError) as error:
        run(take(cmc(http, sleeps).ticks(), 1))
    assert "HTTP 401" in str(error.value) and "COINMARKETCAP_API_KEY" in str(error.value)
    assert sample("coinmarketcap-error-401.json")["status"]["error_message"] in str(error.value)
