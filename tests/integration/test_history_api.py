"""The history API on the real stack: a day of 2003 in 1-minute candles, published on the candles topic and stored
by the test namespace's sink, read back through /api/v1/history (CSV and JSON, with indicators) and compared
with MongoDB, with a plain reference computation of each indicator, and with the WebSocket's chart of the same
window."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import string
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer

from cryptopulse.avro import AvroCodec
from cryptopulse.times import DAY_MS, MINUTE_MS
from producer.sources.simulated import simulated_history
from tests.integration.conftest import wait_for
from tests.integration.test_webui import receive
from webui.app import create_app

SYMBOL = "ZA" + "".join(random.choices(string.ascii_uppercase, k=4))


@pytest.fixture(scope="module")
def day(settings, mongo) -> dict[str, Any]:
    """1,440 candles of a day of 2003 no one else uses, in candles_1m; `end` is the last candle's start."""
    first = int(datetime(2003, 1, 1, tzinfo=UTC).timestamp() * 1000) + random.randrange(300) * DAY_MS
    candles = simulated_history(SYMBOL, first // 1000, first, first + DAY_MS)
    assert len(candles) == 1440
    codec = AvroCodec(settings, settings.candles_topic, "candle")
    kafka = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    for candle in candles:
        kafka.produce(settings.candles_topic, key=candle.id.encode(), value=codec.encode(candle.to_record()))
    assert kafka.flush(60) == 0
    collection = mongo[settings.database]["candles_1m"]
    wait_for(lambda: collection.count_documents({"symbol": SYMBOL}) == 1440, 180, "a day of candles in candles_1m")
    docs = sorted(collection.find({"symbol": SYMBOL}), key=lambda d: d["start"])
    return {"end": first + DAY_MS - MINUTE_MS, "docs": docs}


def get(settings, paths: list[str]) -> list[tuple[int, str, str]]:
    async def scenario() -> list[tuple[int, str, str]]:
        app = create_app(settings, start_consumer=False, symbols=("BTC", SYMBOL))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            answers = []
            for path in paths:
                response = await client.get(path)
                answers.append((response.status_code, response.headers["content-type"],
                                await response.get_data(as_text=True)))
            return answers

    return asyncio.run(scenario())


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def test_the_csv_of_a_24h_window_equals_the_candles_in_mongodb(settings, day):
    (status, kind, body), = get(settings, [f"/api/v1/history?symbol={SYMBOL}&range=24h&end={day['end']}&format=csv"])
    assert status == 200 and kind.startswith("text/csv"), body
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["time", "time_iso", "open", "high", "low", "close", "volume"]
    stored = [[ms(d["start"]), d["open"], d["high"], d["low"], d["close"], d["volume"]] for d in day["docs"]]
    assert [[int(r[0]), *map(float, r[2:])] for r in rows[1:]] == stored  # one line per candle, every number equal
    assert rows[1][1] == day["docs"][0]["start"].strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --- plain reference computations, written independently of webui/indicators.py ---

def ref_sma(closes: list[float], n: int) -> list[float | None]:
    return [None if i < n - 1 else sum(closes[i - n + 1:i + 1]) / n for i in range(len(closes))]


def ref_ema(closes: list[float], n: int) -> list[float | None]:
    out: list[float | None] = []
    previous = None
    for i, close in enumerate(closes):
        if i == n - 1:
            previous = sum(closes[:n]) / n
        elif i >= n:
            previous = previous + 2 / (n + 1) * (close - previous)
        out.append(previous)
    return out


def ref_vwap(docs: list[dict[str, Any]]) -> list[float | None]:
    return [sum((d["high"] + d["low"] + d["close"]) / 3 * d["volume"] for d in docs[:i + 1])
            / sum(d["volume"] for d in docs[:i + 1]) for i in range(len(docs))]


def ref_rsi(closes: list[float], n: int) -> list[float | None]:
    gains = [max(b - a, 0) for a, b in zip(closes, closes[1:], strict=False)]
    losses = [max(a - b, 0) for a, b in zip(closes, closes[1:], strict=False)]
    out: list[float | None] = [None] * len(closes)
    avg_gain, avg_loss = sum(gains[:n]) / n, sum(losses[:n]) / n
    for i in range(n, len(closes)):
        if i > n:
            avg_gain = (avg_gain * (n - 1) + gains[i - 1]) / n
            avg_loss = (avg_loss * (n - 1) + losses[i - 1]) / n
        out[i] = 100 - 100 / (1 + avg_gain / avg_loss)
    return out


def test_each_indicator_equals_a_reference_computation_over_the_stored_candles(settings, day):
    names = "sma20,sma50,ema20,ema50,vwap,rsi14"
    (status, _, body), = get(settings, [f"/api/v1/history?symbol={SYMBOL}&range=24h&end={day['end']}"
                                        f"&indicators={names}"])
    assert status == 200, body
    answer = json.loads(body)
    assert answer["columns"] == ["time", "open", "high", "low", "close", "volume", *names.split(",")]
    docs = day["docs"]
    closes = [d["close"] for d in docs]
    expected = {"sma20": ref_sma(closes, 20), "sma50": ref_sma(closes, 50), "ema20": ref_ema(closes, 20),
                "ema50": ref_ema(closes, 50), "vwap": ref_vwap(docs), "rsi14": ref_rsi(closes, 14)}
    for column, name in enumerate(names.split(","), start=6):
        got = [row[column] for row in answer["rows"]]
        assert [v is None for v in got] == [v is None for v in expected[name]], name
        assert [v for v in got if v is not None] == pytest.approx([v for v in expected[name] if v is not None],
                                                                  rel=1e-9), name


def test_the_api_answers_what_the_chart_shows(settings, day):
    """The 24 h chart of the same window over the WebSocket, its `indicators` message, and the API's JSON."""
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        app = create_app(settings, start_consumer=False, symbols=("BTC", SYMBOL))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            async with client.websocket("/ws") as ws:
                await ws.send(json.dumps({"type": "subscribe", "symbol": SYMBOL, "range": "24h", "end": day["end"],
                                          "indicators": True}))
                snap = await receive(ws, "snapshot")
                indicators = await receive(ws, "indicators")
            response = await client.get(f"/api/v1/history?symbol={SYMBOL}&range=24h&end={day['end']}"
                                        "&indicators=sma20,ema50,vwap,rsi14")
            return snap, indicators, json.loads(await response.get_data(as_text=True))

    snap, indicators, answer = asyncio.run(scenario())
    assert snap["basis"] == answer["basis"] == "candles_1m" and snap["stats"] == answer["stats"]
    assert [r[:5] for r in answer["rows"]] == snap["candles"]
    assert [[r[0], r[5]] for r in answer["rows"]] == snap["volume"]
    for column, name in enumerate(("sma20", "ema50", "vwap", "rsi14"), start=6):
        assert [[r[0], r[column]] for r in answer["rows"] if r[column] is not None] == indicators["series"][name]


def test_bad_parameters_get_400_with_a_reason(settings):
    answers = get(settings, ["/api/v1/history?symbol=DOGE", "/api/v1/history?symbol=BTC&range=2d",
                             "/api/v1/history?symbol=BTC&end=soon", "/api/v1/history?symbol=BTC&interval=1s",
                             "/api/v1/history?symbol=BTC&indicators=sma20,bollinger"])
    reasons = [json.loads(body)["error"] for _, _, body in answers]
    assert [status for status, _, _ in answers] == [400] * 5
    for reason, says in zip(reasons, ["unknown symbol 'DOGE'", "unknown range '2d'", "end must be an integer",
                                      "unknown interval '1s'", "unknown indicator 'bollinger'"], strict=True):
        assert says in reason
