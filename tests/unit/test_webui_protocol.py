"""Client message validation, the rate limiter and the Origin check (pure code, no services)."""

from __future__ import annotations

import json

import pytest

from webui.live import Hub, Subscriber, tick_message
from webui.metrics import Metrics
from webui.protocol import ProtocolError, Subscribe, TokenBucket, origin_allowed, parse_message

SYMBOLS = ("BTC", "ETH", "XRP")


def test_subscribe_is_parsed():
    assert parse_message('{"type":"subscribe","symbol":"eth","range":"24h"}', SYMBOLS) == Subscribe("ETH", "24h")
    assert parse_message(b'{"type":"subscribe","symbol":"BTC","range":"7d","end":5}', SYMBOLS).end == 5


def test_a_subscribe_names_its_bars_or_gets_its_ranges_default():
    default = parse_message('{"type":"subscribe","symbol":"BTC","range":"30d"}', SYMBOLS)
    assert default.interval is None and default.timeframe == "1h"
    chosen = parse_message('{"type":"subscribe","symbol":"BTC","range":"30d","interval":"1d"}', SYMBOLS)
    assert chosen.timeframe == "1d"
    assert parse_message('{"type":"subscribe","symbol":"BTC","range":"all","interval":"1w"}', SYMBOLS).timeframe == "1w"


@pytest.mark.parametrize(("raw", "says"), [
    ("{nope", "malformed JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type":"hello"}', "unknown message type"),
    ('{"type":"subscribe","symbol":"DOGE","range":"1h"}', "unknown symbol 'DOGE'"),
    ('{"type":"subscribe","symbol":7,"range":"1h"}', "unknown symbol"),
    ('{"type":"subscribe","symbol":"BTC","range":"2y"}', "unknown range '2y'"),
    ('{"type":"subscribe","symbol":"BTC","range":"1h","end":"yesterday"}', "end must be"),
    ('{"type":"subscribe","symbol":"BTC","range":"24h","interval":"2m"}', "unknown interval '2m': choose one of 5s"),
    ('{"type":"subscribe","symbol":"BTC","range":"24h","interval":5}', "unknown interval 5"),
    ('{"type":"subscribe","symbol":"BTC","range":"24h","interval":"5s"}',
     "17280 bars of 5s over 24h is more than 2200: choose one of 1m, 5m, 15m, 1h, 4h, 1d"),
    ('{"type":"subscribe","symbol":"BTC","range":"1y","interval":"1h"}', "8760 bars of 1h over 1y"),
    ('{"type":"subscribe","symbol":"BTC","range":"all","interval":"4h"}', "range all is drawn in 1d or 1w bars"),
    (json.dumps({"type": "subscribe", "symbol": "BTC", "pad": "x" * 5000}), "frame too large"),
    (b"\xff\xfe", "UTF-8"),
])
def test_bad_messages_say_what_is_wrong(raw, says):
    with pytest.raises(ProtocolError, match=says):
        parse_message(raw, SYMBOLS)


def test_token_bucket_limits_bursts_and_refills():
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=10, clock=lambda: now[0])
    assert sum(bucket.allow() for _ in range(50)) == 10
    now[0] += 0.5
    assert sum(bucket.allow() for _ in range(50)) == 5


@pytest.mark.parametrize(("origin", "host", "allowed", "ok"), [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", (), True),
    ("http://evil.example", "127.0.0.1:8000", (), False),
    ("null", "127.0.0.1:8000", (), False),
    (None, "127.0.0.1:8000", (), True),
    ("https://dash.example.com", "10.0.0.5:8000", ("https://dash.example.com",), True),
    ("http://127.0.0.1:8000", "127.0.0.1:8000", ("https://dash.example.com",), False),
])
def test_origin_check(origin, host, allowed, ok):
    assert origin_allowed(origin, host, allowed) is ok


def test_hub_drops_oldest_for_a_slow_client_and_routes_by_symbol():
    import asyncio

    metrics = Metrics()
    hub = Hub(metrics, recent_size=3)
    slow, other = Subscriber(2), Subscriber(2)
    hub.subscribe(slow, "BTC")
    hub.subscribe(other, "ETH")
    hub.publish([{"symbol": "BTC", "ts": i} for i in range(5)])
    assert [t["ts"] for t in asyncio.run(slow.take(10))] == [3, 4]
    assert not other.pending and slow.dropped == 3 and metrics.dropped == 3 and metrics.consumed == 5
    assert [t["ts"] for t in hub.recent_ticks("BTC")] == [2, 3, 4]
    hub.unsubscribe(slow)
    hub.publish([{"symbol": "BTC", "ts": 9}])
    assert not slow.pending


def test_hub_hands_ticks_over_at_most_once_per_push_interval():
    """A lone tick goes at once; those right after it wait for the interval's end, then go together, in order;
    every symbol's to its subscribers, all of them to the overview's (ALL)."""
    import asyncio

    from webui.live import ALL

    async def scenario() -> tuple[list[list[int]], list[list[int]], list[int]]:
        hub = Hub(Metrics(), push_interval=0.05)
        btc, everyone = Subscriber(100), Subscriber(100)
        hub.subscribe(btc, "BTC")
        hub.subscribe(everyone, ALL)
        wakes: list[list[int]] = []
        batches_all: list[list[int]] = []

        async def read(sub: Subscriber, into: list[list[int]]) -> None:
            while True:
                into.append([t["ts"] for t in await sub.take(100)])

        readers = [asyncio.create_task(read(btc, wakes)), asyncio.create_task(read(everyone, batches_all))]
        hub.publish([{"symbol": "BTC", "ts": 1}])
        await asyncio.sleep(0.01)
        first = list(wakes)
        for ts in range(2, 6):  # four consumer batches within the interval
            hub.publish([{"symbol": "BTC", "ts": ts}, {"symbol": "ETH", "ts": 100 + ts}])
            await asyncio.sleep(0.005)
        assert wakes == first  # held back until the interval ends
        await asyncio.sleep(0.08)
        for reader in readers:
            reader.cancel()
        return wakes, batches_all, [ts for batch in first for ts in batch]

    wakes, batches_all, first = asyncio.run(scenario())
    assert first == [1]
    assert wakes == [[1], [2, 3, 4, 5]]
    assert batches_all == [[1], [2, 102, 3, 103, 4, 104, 5, 105]]


def test_tick_message_has_epoch_ms_times():
    from datetime import UTC, datetime

    record = {"symbol": "BTC", "source": "simulated", "ts": datetime.fromtimestamp(1.5, UTC), "price": 1.0,
              "volume_24h": None, "change_24h_pct": None, "published_at": datetime.fromtimestamp(2, UTC)}
    assert tick_message(record) == {"type": "tick", "symbol": "BTC", "source": "simulated", "ts": 1500, "price": 1.0,
                                    "volume_24h": None, "change_24h_pct": None, "published_at": 2000}


def test_metrics_render_prometheus_text():
    metrics = Metrics(clients=2, pushed=5)
    metrics.push_latency.observe(0.02)
    metrics.errors["invalid"] += 1
    text = metrics.render()
    assert "webui_connected_clients 2.0\n" in text and "webui_messages_pushed_total 5.0\n" in text
    assert 'webui_push_latency_seconds_bucket{le="0.025"} 1.0\n' in text
    assert 'webui_push_latency_seconds_count 1.0\n' in text
    assert 'webui_client_errors_total{reason="invalid"} 1.0\n' in text


def test_create_app_reads_no_service_and_takes_overrides(monkeypatch):
    from webui.app import create_app
    from webui.state import state

    monkeypatch.setenv("SYMBOLS", "btc, sol")
    monkeypatch.setenv("WEBUI_PORT", "9001")
    app = create_app(start_consumer=False)
    config = state(app).config
    assert config.symbols == ("BTC", "SOL") and config.port == 9001 and config.host == "127.0.0.1"
    with pytest.raises(TypeError, match="unknown webui setting"):
        create_app(colour="red")


def test_the_hub_keeps_and_pushes_only_the_symbols_it_serves():
    # A producer publishing a thousand other coins used to grow the hub's memory by 600 ticks each, and every
    # overview socket received them all (issue 22, item 5).
    from webui.live import ALL, Hub, Subscriber
    from webui.metrics import Metrics

    metrics = Metrics()
    hub = Hub(metrics, recent_size=5, symbols=frozenset({"BTC"}))
    overview = Subscriber()
    hub.subscribe(overview, ALL)
    hub.publish([{"symbol": f"X{i}", "ts": i} for i in range(1000)] + [{"symbol": "BTC", "ts": 1}])
    assert set(hub.recent) == {"BTC"} and [t["symbol"] for t in overview.pending] == ["BTC"]
    assert metrics.unserved == 1000 and metrics.consumed == 1001
