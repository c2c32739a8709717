"""The dashboard's WebSocket protocol through Quart's test client, on the real stack (Kafka, registry, FerretDB).

Each test publishes its own ticks with the producer CLI: into an hour of 2003 no one
else uses (history checks), or under a symbol made up for this run (live checks).
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from quart.testing import WebsocketResponseError

from cryptopulse import kafka
from cryptopulse.candle import Candle
from cryptopulse.tick import Tick
from cryptopulse.times import DAY_MS
from producer.publisher import TickPublisher
from streams.history import CandlePublisher
from tests import children
from tests.integration.conftest import wait_for
from tests.integration.history_data import roll_up
from tests.namespace import PREFIX
from webui.app import create_app
from webui.state import state
from webui.views import WindowView, tick_spec

RUN_SYMBOL = "ZT" + "".join(random.choices(string.ascii_uppercase, k=4))  # live ticks only this run publishes


def producer(*args: str, timeout: float = 300) -> None:
    result = children.run(["producer", "run", *args], timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return asyncio.run(coro_fn(*args))


async def receive(ws, kind: str | tuple[str, ...], timeout: float = 90,
                  skipping: tuple[str, ...] = ("tick", "ticks", "snapshot")) -> dict[str, Any]:
    """The next message of type `kind` (or of one of them), skipping live ticks of anyone else's producer and the
    other types in `skipping`."""
    kinds = (kind,) if isinstance(kind, str) else kind
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {kind!r} message within {timeout:.0f}s")
        message = json.loads(await asyncio.wait_for(ws.receive(), left))
        if message["type"] in kinds:
            return message
        assert message["type"] in skipping, message


async def receive_ticks(ws, count: int, timeout: float = 90) -> tuple[list[dict[str, Any]], int]:
    """`count` live ticks, whether they come one per `tick` message or batched in `ticks`; and how many messages."""
    ticks, messages = [], 0
    while len(ticks) < count:
        deadline = time.monotonic() + timeout
        message = json.loads(await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.monotonic())))
        if message["type"] in ("tick", "ticks"):
            ticks += message["ticks"] if message["type"] == "ticks" else [message]
            messages += 1
    return ticks, messages


@pytest.fixture(scope="module")
def window(settings, mongo) -> dict[str, Any]:
    """One hour of 2003 with 800 ticks per symbol, 4.5 s apart, in MongoDB."""
    start = int(datetime(2003, 1, 1, tzinfo=UTC).timestamp() * 1000) + random.randrange(360) * DAY_MS
    count, interval = 2400, 4500
    end = start + (count // 3 - 1) * interval
    query = {"ts": {"$gte": datetime.fromtimestamp(start / 1000, UTC), "$lte": datetime.fromtimestamp(end / 1000, UTC)}}
    prices = mongo[settings.database]["prices"]
    assert prices.count_documents(query) == 0
    producer("--fast", "--count", str(count), "--start-ms", str(start), "--interval-ms", str(interval),
             "--symbols", "BTC,ETH,XRP", "--seed", str(start))
    wait_for(lambda: prices.count_documents(query) >= count, 300, f"{count} ticks of 2003 in the prices collection")
    return {"start": start, "end": end, "query": query}


def stored(mongo, settings, window, symbol: str) -> list[dict[str, Any]]:
    docs = list(mongo[settings.database]["prices"].find({**window["query"], "symbol": symbol}))
    return sorted(docs, key=lambda d: d["ts"])


def expected_volume(docs: list[dict[str, Any]], bucket_ms: int) -> float:
    """docs/webui.md: sum over buckets of (last volume_24h in the bucket) * bucket width / 24 h."""
    last: dict[int, float] = {}
    for d in docs:
        ts = int(d["ts"].timestamp() * 1000)
        if d.get("volume_24h") is not None:
            last[ts - ts % bucket_ms] = d["volume_24h"]
    return sum(v * bucket_ms / DAY_MS for v in last.values())


@pytest.mark.parametrize(("symbol", "range_", "bucket_ms"), [("BTC", "1h", 5_000), ("ETH", "24h", 60_000)])
def test_snapshot_numbers_equal_what_mongodb_holds(settings, mongo, window, symbol, range_, bucket_ms):
    docs = stored(mongo, settings, window, symbol)
    assert len(docs) == 800

    async def scenario() -> dict[str, Any]:
        app = create_app(settings)
        async with app.test_app() as test_app, test_app.test_client().websocket("/ws") as ws:
            await ws.send(json.dumps({"type": "subscribe", "symbol": symbol, "range": range_, "end": window["end"]}))
            return await receive(ws, "snapshot")

    snap = run(scenario)
    stats = snap["stats"]
    prices = [d["price"] for d in docs]
    assert (snap["symbol"], snap["range"], snap["basis"], snap["bucket_ms"]) == (symbol, range_, "ticks", bucket_ms)
    assert snap["source"] == "simulated" and snap["simulated"] is True
    assert stats["count"] == 800
    assert stats["price"] == prices[-1] and stats["first"] == prices[0]
    assert stats["min"] == min(prices) and stats["max"] == max(prices)
    assert stats["change"] == pytest.approx(prices[-1] - prices[0])
    assert stats["change_pct"] == pytest.approx((prices[-1] - prices[0]) / prices[0] * 100)
    assert stats["volume"] == pytest.approx(expected_volume(docs, bucket_ms))
    assert stats["last_update"] == int(docs[-1]["ts"].timestamp() * 1000)
    assert [p[1] for p in snap["line"]] == prices  # 800 points: under the cap, every tick is on the line
    assert len(snap["candles"]) <= 1500 and len(snap["volume"]) == len(snap["candles"])
    assert max(c[2] for c in snap["candles"]) == max(prices) and min(c[3] for c in snap["candles"]) == min(prices)
    assert snap["candles"][0][1] == prices[0] and snap["candles"][-1][4] == prices[-1]


def test_live_ticks_are_pushed_to_subscribers_of_their_symbol(settings):
    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], int, str]:
        app = create_app(settings, symbols=("BTC", RUN_SYMBOL))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            consumer = state(app).consumer
            deadline = time.monotonic() + 60
            while not consumer.status()["ok"]:  # subscribed only once partitions are assigned (offset = latest)
                assert time.monotonic() < deadline, f"consumer never became ready: {consumer.status()}"
                await asyncio.sleep(0.2)
            async with client.websocket("/ws") as ws:
                await ws.send(json.dumps({"type": "subscribe", "symbol": RUN_SYMBOL, "range": "1h"}))
                snap = await receive(ws, "snapshot")
                publishing = asyncio.create_task(asyncio.to_thread(
                    producer, "--count", "5", "--symbols", RUN_SYMBOL, "--seed", "5", timeout=120))
                ticks, _ = await receive_ticks(ws, 5, 60)
                await publishing
                # a burst: what queues up while a message is being sent goes out batched, nothing lost
                await asyncio.to_thread(producer, "--fast", "--count", "300", "--interval-ms", "100",
                                        "--symbols", RUN_SYMBOL, "--seed", "6", timeout=120)
                burst, messages = await receive_ticks(ws, 300, 60)
            metrics = await (await client.get("/metrics")).get_data(as_text=True)
        return snap, ticks, burst, messages, metrics

    snap, ticks, burst, messages, metrics = run(scenario)
    assert len(burst) == 300 and messages < 300, messages
    assert [t["ts"] for t in burst] == sorted(t["ts"] for t in burst) and len({t["ts"] for t in burst}) == 300
    assert snap["stats"]["count"] == 0 and snap["line"] == []  # a brand-new symbol has no history
    assert [t["symbol"] for t in ticks] == [RUN_SYMBOL] * 5
    assert all(t["source"] == "simulated" and t["published_at"] and t["price"] > 0 for t in ticks)
    assert [t["ts"] for t in ticks] == sorted(t["ts"] for t in ticks)
    assert "webui_messages_pushed_total 305" in metrics and "webui_push_latency_seconds_count 305" in metrics


def test_every_invalid_message_gets_an_error_and_the_connection_survives(settings):
    async def scenario() -> tuple[list[str], list[str], dict[str, Any]]:
        app = create_app(settings, start_consumer=False)
        async with app.test_app() as test_app, test_app.test_client().websocket("/ws") as ws:
            errors = []
            for bad in ["{not json", json.dumps({"type": "subscribe", "symbol": "DOGE", "range": "1h"}),
                        json.dumps({"type": "subscribe", "symbol": "BTC", "range": "2y"}),
                        json.dumps({"type": "subscribe", "symbol": "BTC", "range": "1h", "pad": "x" * 5000}),
                        json.dumps({"type": "unsubscribe"})]:
                await ws.send(bad)
                errors.append((await receive(ws, "error", 10))["message"])
            await asyncio.sleep(1.1)  # refill the rate limiter
            for _ in range(30):
                await ws.send('{"type":"ping"}')
            flood = [(await receive(ws, "error", 10))["message"] for _ in range(30)]
            await asyncio.sleep(1.1)
            await ws.send(json.dumps({"type": "subscribe", "symbol": "BTC", "range": "1h", "end": 1_000_000}))
            snap = await receive(ws, "snapshot")
        return errors, flood, snap

    errors, flood, snap = run(scenario)
    for error, says in zip(errors, ["malformed JSON", "unknown symbol 'DOGE'", "unknown range '2y'",
                                    "frame too large", "unknown message type 'unsubscribe'"], strict=True):
        assert says in error
    limited = [m for m in flood if m.startswith("rate limit")]
    assert 15 <= len(limited) <= 25, flood  # ~10 allowed by the bucket (plus what refills while sending)
    assert snap["symbol"] == "BTC" and snap["stats"]["count"] == 0


def test_a_foreign_origin_is_refused_and_the_own_host_accepted(settings):
    async def scenario() -> tuple[int, dict[str, Any]]:
        app = create_app(settings, start_consumer=False)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            try:
                async with client.websocket("/ws", headers={"Origin": "http://evil.example"}) as ws:
                    await ws.send("{}")
                    await ws.receive()
                refused = 0
            except WebsocketResponseError as exc:
                refused = exc.response.status_code
            async with client.websocket("/ws", headers={"Origin": "http://localhost"}) as ws:
                await ws.send('{"type":"nope"}')
                answer = await receive(ws, "error", 10)
        return refused, answer

    refused, answer = run(scenario)
    assert refused == 403
    assert "unknown message type" in answer["message"]


def test_healthz_and_metrics(settings):
    async def scenario() -> tuple[int, dict[str, Any], str]:
        app = create_app(settings)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            deadline = time.monotonic() + 60
            while True:
                response = await client.get("/healthz")
                body = await response.get_json()
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            text = await (await client.get("/metrics")).get_data(as_text=True)
        return response.status_code, body, text

    status, body, text = run(scenario)
    assert status == 200, body
    assert body["kafka"]["ok"] and body["mongo"]["ok"]
    assert body["kafka"]["group_id"].startswith(f"{PREFIX}cryptopulse-webui-")  # the tests' own (tests/namespace.py)
    for name in ("webui_connected_clients", "webui_messages_pushed_total", "webui_push_latency_seconds_bucket"):
        assert name in text


def test_24h_and_7d_come_from_the_views_and_equal_mongodb(settings, mongo):
    """Candles published before the app starts are loaded from their topics; later ones arrive by them. The 24 h
    chart is the 1m candles, the 7 d chart the 5m ones, from memory as from the store."""
    symbol = "ZV" + "".join(random.choices(string.ascii_uppercase, k=4))
    now = int(time.time() * 1000) // 60_000 * 60_000
    rng = random.Random(now)
    candles, price = [], 100.0
    for start in range(now - 3 * 3_600_000, now - 3_600_000, 60_000):  # 120 minutes, 3 to 1 hours ago
        moves = [price * (1 + rng.gauss(0, 0.002)) for _ in range(3)]
        candles.append(Candle(symbol, "simulated", start, price, max(price, *moves), min(price, *moves), moves[-1], 4,
                              final=True))
        price = moves[-1]
    fives = roll_up(candles, "5m", now)
    publisher = CandlePublisher(settings)
    database = mongo[settings.database]
    publisher.publish(candles[:60] + [c for c in fives if c.start < candles[60].start])

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        app = create_app(settings, start_consumer=False)
        async with app.test_app():
            shared = state(app)
            views, history = shared.views, shared.history
            for name in ("1m", "5m"):
                assert await asyncio.to_thread(views[name].ready.wait, 120), views[name].status()
            # the first hour came from the topics, published before the app started
            assert len(views["1m"].window(symbol, now - DAY_MS, now)[1]) == 60
            later = candles[60:] + [c for c in fives if c.start >= candles[60].start]
            await asyncio.to_thread(publisher.publish, later)
            deadline = time.monotonic() + 60
            while len(views["1m"].window(symbol, now - DAY_MS, now)[1]) < 120:
                assert time.monotonic() < deadline, f"the second hour never reached the view: {views['1m'].status()}"
                await asyncio.sleep(0.2)
            from_view = [await history.snapshot(symbol, r, now) for r in ("24h", "7d")]
            for interval, made in (("1m", candles), ("5m", fives)):
                await asyncio.to_thread(wait_for, lambda i=interval, m=made: database[f"candles_{i}"].count_documents(
                    {"symbol": symbol}) == len(m), 120, f"the {interval} candles in MongoDB")
            history.views = {}
            from_mongo = [await history.snapshot(symbol, r, now + 1) for r in ("24h", "7d")]  # + 1: not the cache
            health = await (await app.test_client().get("/healthz")).get_json()
        return [*from_view, *from_mongo], health

    (view_24h, view_7d, mongo_24h, mongo_7d), health = run(scenario)
    assert health["views"]["1m"]["ready"] is True and health["views"]["1m"]["read"] >= 120
    for from_view, from_mongo, interval, made in ((view_24h, mongo_24h, "1m", candles),
                                                  (view_7d, mongo_7d, "5m", fives)):
        assert from_view["basis"] == from_mongo["basis"] == f"candles_{interval}"
        assert from_view["interval"] == interval and from_view["stats"]["count"] == len(made)
        assert from_view["stats"]["first"] == candles[0].open and from_view["stats"]["price"] == candles[-1].close
        assert from_view["stats"]["max"] == max(c.high for c in candles)
        for field in ("line", "candles", "volume"):
            assert from_view[field] == from_mongo[field]
        assert from_view["stats"] == from_mongo["stats"]


def test_1h_comes_from_the_tick_view_and_equals_mongodb(settings, mongo):
    """The last hour of ticks: loaded from the prices topic at start, then followed on it."""
    symbol = "ZH" + "".join(random.choices(string.ascii_uppercase, k=4))
    now = int(time.time() * 1000) // 1000 * 1000
    prices = mongo[settings.database]["prices"]

    def publish(start: int, count: int) -> None:
        producer("--fast", "--count", str(count), "--start-ms", str(start), "--interval-ms", "1000",
                 "--symbols", symbol, "--seed", str(start))

    publish(now - 40 * 60_000, 30)  # published before the app starts

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        app = create_app(settings, start_consumer=False)
        async with app.test_app():
            shared = state(app)
            view, history = shared.views["ticks"], shared.history
            assert await asyncio.to_thread(view.ready.wait, 120), view.status()
            assert len(view.window(symbol, now - 3_600_000, now)[1]) == 30  # from the topic
            await asyncio.to_thread(publish, now - 10 * 60_000, 20)
            deadline = time.monotonic() + 60
            while len(view.window(symbol, now - 3_600_000, now)[1]) < 50:
                assert time.monotonic() < deadline, f"the later ticks never reached the view: {view.status()}"
                await asyncio.sleep(0.2)
            from_view = await history.snapshot(symbol, "1h", now)
            await asyncio.to_thread(wait_for, lambda: prices.count_documents({"symbol": symbol}) == 50, 120,
                                    "the ticks in MongoDB")
            history.views = {}
            from_mongo = await history.snapshot(symbol, "1h", now + 1)  # + 1: not the cache
            health = await (await app.test_client().get("/healthz")).get_json()
        return from_view, from_mongo, health

    from_view, from_mongo, health = run(scenario)
    assert health["views"]["ticks"]["ready"] is True and health["views"]["ticks"]["read"] >= 30
    assert from_view["basis"] == from_mongo["basis"] == "ticks" and from_view["stats"]["count"] == 50
    for field in ("line", "candles", "volume", "stats", "source"):
        assert from_view[field] == from_mongo[field]


def test_a_backfills_older_ticks_are_skipped_by_their_event_time_unread(settings):
    """A back-fill publishes its history's ticks all at once, now, so they are what the ticks view finds in its hour
    by publish time: it skips those older than the hour by their header (kafka.EVENT_TIME_HEADER), never decoding
    them, and keeps the recent ones."""
    symbol = "ZB" + "".join(random.choices(string.ascii_uppercase, k=4))
    now = int(time.time() * 1000) // 1000 * 1000

    async def publish() -> None:
        publisher = TickPublisher(settings, origin=kafka.BACKFILL)
        for i in range(300):  # three hours ago
            await publisher.publish(Tick(symbol, "simulated", now - 3 * 3_600_000 + i * 1000, 100.0))
        for i in range(20):  # ten minutes ago
            await publisher.publish(Tick(symbol, "simulated", now - 600_000 + i * 1000, 101.0))
        assert publisher.flush(30) == 0

    run(publish)
    view = WindowView(settings, tick_spec(settings))
    view.start()
    try:
        assert view.ready.wait(120), view.status()
        source, rows = view.window(symbol, now - 3_600_000, now)
        assert source == "simulated" and [r.price for r in rows] == [101.0] * 20
        assert view.skipped >= 300, view.status()  # the old ones by their header: without it, decoded and dropped
    finally:
        view.stop()
