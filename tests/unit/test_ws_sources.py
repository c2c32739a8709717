"""Binance and Coinbase against a local fake WebSocket server: parsing, reconnects, stalls, errors."""

from __future__ import annotations

import copy
import logging

import pytest

from cryptopulse.errors import SourceError, UnknownSymbol
from cryptopulse.tick import Tick
from producer.sources.binance import Binance
from producer.sources.coinbase import Coinbase
from producer.sources.validation import pct_change, reject_reason
from tests.fakes import CLOSE, RECV, FakeWs, Sleeps, run, sample, take

NOW = 1_748_865_600_000


def mini(symbol: str = "ETH", **changes: str) -> dict:
    """A combined-stream miniTicker message for `symbol` (the ETH sample, or the BTC one wrapped)."""
    if symbol == "ETH":
        message = sample("binance-ws-combined-miniticker.json")
    else:
        message = {"stream": "btcusdt@miniTicker", "data": sample("binance-ws-miniticker.json")}
    message["data"].update(changes)
    return message


def ticker(**changes: str) -> dict:
    return sample("coinbase-exchange-ws-ticker.json") | changes


def binance(ws: FakeWs, sleeps: Sleeps, symbols: tuple[str, ...] = ("BTC", "ETH"), **options) -> Binance:
    return Binance(list(symbols), base_url=ws.url, sleep=sleeps, rng=lambda: 0.5, **options)


def coinbase(ws: FakeWs, sleeps: Sleeps, symbols: tuple[str, ...] = ("BTC", "ETH", "XRP"), **options) -> Coinbase:
    return Coinbase(list(symbols), base_url=ws.url, sleep=sleeps, rng=lambda: 0.5, **options)


# --- Binance -------------------------------------------------------------------------------------

def test_binance_reads_the_combined_miniticker_stream(ws, sleeps):
    ws.scripts = [[{"result": None, "id": 1}, mini("ETH"), mini("BTC")]]
    ticks = run(take(binance(ws, sleeps).ticks(), 2))
    assert ticks == [
        Tick("ETH", "binance", 1_748_865_600_789, 2612.41, "USDT", 789012345.6789, (2612.41 / 2635.52 - 1) * 100),
        Tick("BTC", "binance", 1_748_865_600_456, 105231.45, "USDT", 1290123445.12345678,
             (105231.45 / 103950 - 1) * 100),
    ]
    assert ws.connections[0]["path"] == "/stream?streams=btcusdt@miniTicker/ethusdt@miniTicker"


def test_binance_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BINANCE_WS_URL", "wss://mirror.example/")
    assert Binance(["xrp"]).url == "wss://mirror.example/stream?streams=xrpusdt@miniTicker"


def test_binance_refuses_a_symbol_it_has_no_market_for():
    with pytest.raises(UnknownSymbol, match="binance has no market for DOGEX; known: BTC, ETH, XRP, SOL, ADA, DOGE"):
        Binance(["DOGEX"])


def test_binance_reconnects_when_the_server_drops_the_connection(ws, sleeps, caplog):
    caplog.set_level(logging.INFO)
    ws.scripts = [[mini("ETH"), CLOSE], [mini("BTC")]]
    source = binance(ws, sleeps)
    assert [t.symbol for t in run(take(source.ticks(), 2))] == ["ETH", "BTC"]
    assert source.reconnects == 1 and len(ws.connections) == 2
    assert sleeps == [0.5]  # full jitter: rng 0.5 x base 1 s
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert any("reconnected after 2 attempts" in r.getMessage() for r in caplog.records)


def test_binance_backs_off_while_the_handshake_fails(ws, sleeps):
    ws.reject = [503, 502, 429]
    ws.scripts = [[mini("BTC")]]
    source = binance(ws, sleeps)
    assert [t.symbol for t in run(take(source.ticks(), 1))] == ["BTC"]
    assert sleeps == [0.5, 1.0, 2.0] and source.reconnects == 0  # never connected before: not a re-connect


SHUTDOWN = sample("binance-ws-server-shutdown.json")


@pytest.mark.parametrize("shutdown", [SHUTDOWN, {"stream": "btcusdt@miniTicker", "data": SHUTDOWN}])
def test_binance_reconnects_at_once_on_server_shutdown(ws, sleeps, shutdown):
    ws.scripts = [[mini("ETH"), shutdown, mini("ETH", c="9999")], [mini("BTC")]]
    source = binance(ws, sleeps)
    assert [t.price for t in run(take(source.ticks(), 2))] == [2612.41, 105231.45]
    assert source.reconnects == 1 and sleeps == [0]


def test_binance_reconnects_before_the_connection_gets_too_old(ws, sleeps, caplog):
    caplog.set_level(logging.INFO)
    ws.scripts = [[mini("ETH")], [mini("BTC")]]  # the first connection then stays open and quiet
    source = binance(ws, sleeps, max_lifetime=0.3)
    assert [t.symbol for t in run(take(source.ticks(), 2))] == ["ETH", "BTC"]
    assert source.reconnects == 1 and sleeps == [0.0]
    assert any("reconnecting before the server cuts it" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_binance_geo_block_stops_with_advice(ws, sleeps):
    ws.reject = [451]
    with pytest.raises(SourceError, match="HTTP 451; binance refuses this location; point BINANCE_WS_URL at a mirror"):
        run(take(binance(ws, sleeps).ticks(), 1))
    assert sleeps == []


def test_binance_passes_implausible_prices_on_and_skips_unreadable_messages(ws, sleeps):
    broken = copy.deepcopy(mini("BTC"))
    del broken["data"]["c"]
    ws.scripts = [["not json", broken, mini("BTC", c="NaN"), mini("ETH", c="-1"), mini("BTC", c="0"), mini("ETH")]]
    source = binance(ws, sleeps)
    ticks = run(take(source.ticks(), 4))
    assert [reject_reason(t, NOW) for t in ticks] == ["nan price", "negative price", "zero price", None]
    assert source.rejected == 2


# --- Coinbase ------------------------------------------------------------------------------------

def test_coinbase_subscribes_and_reads_tickers(ws, sleeps):
    ws.scripts = [[RECV, sample("coinbase-exchange-ws-subscriptions.json"),
                   sample("coinbase-exchange-ws-heartbeat.json"), ticker()]]
    (tick,) = run(take(coinbase(ws, sleeps).ticks(), 1))
    price = 105240.17
    assert tick == Tick("BTC", "coinbase", 1_748_865_600_214, price, "USD", 8123.45678901 * price,
                        pct_change(price, 103961.02))
    assert ws.connections[0]["received"] == [sample("coinbase-exchange-ws-subscribe.json")]


def test_coinbase_error_message_stops_with_its_reason(ws, sleeps):
    ws.scripts = [[RECV, sample("coinbase-exchange-ws-error.json")]]
    with pytest.raises(SourceError, match=r"Failed to subscribe \(DOGEX-USD is not a valid product\)"):
        run(take(coinbase(ws, sleeps).ticks(), 1))


def test_coinbase_reconnects_when_the_feed_stalls(ws, sleeps, caplog):
    subscribed = sample("coinbase-exchange-ws-subscriptions.json")
    ws.scripts = [[RECV, subscribed, sample("coinbase-exchange-ws-heartbeat.json")], [RECV, ticker()]]
    source = coinbase(ws, sleeps, stall_timeout=0.3)
    assert [t.symbol for t in run(take(source.ticks(), 1))] == ["BTC"]
    assert source.reconnects == 1 and sleeps == [0.5]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "no message for 0.3 s: the feed stalled" in warning
    assert [c["received"] for c in ws.connections] == [[sample("coinbase-exchange-ws-subscribe.json")]] * 2


def test_coinbase_reconnects_when_the_server_drops_the_connection(ws, sleeps):
    ws.scripts = [[RECV, ticker(), CLOSE], [RECV, ticker(product_id="ETH-USD", price="2612.5")]]
    source = coinbase(ws, sleeps)
    assert [(t.symbol, t.price) for t in run(take(source.ticks(), 2))] == [("BTC", 105240.17), ("ETH", 2612.5)]
    assert source.reconnects == 1


def test_coinbase_passes_implausible_prices_on_and_skips_unreadable_messages(ws, sleeps):
    ws.scripts = [[RECV, ticker(price="NaN"), ticker(time="yesterday"), ticker(price="-3"), ticker(price="0"),
                   ticker()]]
    source = coinbase(ws, sleeps)
    ticks = run(take(source.ticks(), 4))
    assert [reject_reason(t, NOW) for t in ticks] == ["nan price", "negative price", "zero price", None]
    assert source.rejected == 1
