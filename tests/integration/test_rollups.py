"""Ticks → `streams` → crypto-candles-1m → candles sink → crypto_db.candles_1m, and retention, on the real stack.

Each test uses its own symbols, a random minute of 2004 (no other test or demo uses that year) and its own
consumer group that starts at the end of the prices topic, so it neither sees nor disturbs anyone's data.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer, TopicPartition

from cryptopulse import kafka, topics
from cryptopulse.avro import AvroCodec
from cryptopulse.candle import Candle
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.settings import PROJECT_DIR
from cryptopulse.tick import Tick
from producer.sources.coingecko import IDS
from streams.candles import CandleBook
from streams.history import CandlePublisher
from streams.processor import Processor, ProcessorOptions
from tests import children
from tests.fakes import FakeHttp, Reply
from tests.integration.conftest import wait_for
from tests.integration.test_backfill import backfill, klines

M = 60_000
FIELDS = ("symbol", "source", "interval", "open", "high", "low", "close", "ticks", "volume", "origin", "final")


def window_2004() -> int:
    start = int(datetime(2004, 1, 1, tzinfo=UTC).timestamp() * 1000) + random.randrange(365 * 1440) * M
    return start - start % M


def unique_symbol() -> str:
    return "R" + uuid.uuid4().hex[:7].upper()


class TickWriter:
    """Publishes ticks like the producer does (Avro, key = symbol) and remembers each one's offset."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.codec = AvroCodec(settings, settings.prices_topic, "tick")
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
                                  "enable.idempotence": True})
        self.offsets: dict[int, int] = {}

    def publish(self, symbol: str, ticks: list[tuple[int, float]], source: str = "simulated") -> None:
        for ts, price in ticks:
            value = self.codec.encode(Tick(symbol, source, ts, price).to_record())
            self.producer.produce(self.settings.prices_topic, key=symbol.encode(), value=value,
                                  on_delivery=lambda err, msg, ts=ts: self.offsets.__setitem__(ts, msg.offset()))
        assert self.producer.flush(30) == 0


class StreamsProcess:
    """`python -m streams.cli run` as a subprocess, its log in a file."""

    def __init__(self, group: str, log: Path, symbol: str, *args: str) -> None:
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = children.start(
            [sys.executable, "-m", "streams.cli", "run", "--group", group, "--from-end", "--no-retention",
             "--only-symbols", symbol, *args],
            log, cwd=PROJECT_DIR, env=env)
        assignments = self.log.read_text().count("assigned ")
        try:  # the roll-up (the prices topic) and the cascade (the candle topics) each say "assigned"
            wait_for(lambda: self.log.read_text().count("assigned ") >= assignments + 2
                     or self.process.poll() is not None, 60, "the roll-up and the cascade to be assigned their topics")
            assert self.process.poll() is None, self.log.read_text()[-3000:]
        except BaseException:
            self.process.kill()  # never left running for the tests after this one
            self.process.wait(30)
            raise

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.process.send_signal(sig)
        try:
            self.process.wait(90)  # a graceful stop commits and leaves the group; slow on a loaded machine
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the processor did not stop within 90 s:\n{self.log.read_text()[-6000:]}") from None


def expected_candles(symbol: str, ticks: list[tuple[int, float]]) -> dict[int, Candle]:
    book = CandleBook()
    out = []
    for ts, price in ticks:
        book.add(symbol, "simulated", ts, price)
        out += [c for c in book.poll(0.0) if c.final]
    out += book.close_all()
    return {c.start: c for c in out}


def stored(mongo, settings, symbol: str) -> dict[int, dict]:
    docs = mongo[settings.database]["candles_1m"].find({"symbol": symbol})
    return {int(d["start"].timestamp() * 1000): d for d in docs}


def matches(docs: dict[int, dict], expected: dict[int, Candle]) -> bool:
    if set(docs) != set(expected):
        return False
    for start, candle in expected.items():
        doc, record = docs[start], candle.to_record()
        if doc["_id"] != candle.id or any(doc.get(f) != record[f] for f in FIELDS):
            return False
    return True


def test_known_ticks_become_exactly_the_expected_candles(settings, mongo, tmp_path):
    symbol, w = unique_symbol(), window_2004()
    ticks = [(w, 100.0), (w + 15_000, 105.0), (w + 30_000, 95.0), (w + 59_999, 101.0),
             (w + 61_000, 102.0),
             (w + 50_000, 110.0),   # out of order, within the grace period: updates minute 0
             (w + 90_000, 103.0),   # closes minute 0 (its end is now more than 10 s behind)
             (w + 185_000, 99.0),   # minute 2 has no ticks: no candle; this closes minutes 0 and 1
             (w + 70_000, 500.0),   # late: minute 1 closed already, dropped
             (w + 600_000, 1.0)]    # much later: closes minute 3; its own minute closes when the key goes idle
    expected = expected_candles(symbol, ticks)
    assert sorted(expected) == [w, w + M, w + 3 * M, w + 10 * M]
    assert (expected[w].high, expected[w].close, expected[w].ticks) == (110.0, 101.0, 5)
    assert (expected[w + M].high, expected[w + M].ticks) == (103.0, 2)

    streams = StreamsProcess(f"test-rollups-{uuid.uuid4()}", tmp_path / "streams.log", symbol,
                             "--idle-close-seconds", "3")
    try:
        TickWriter(settings).publish(symbol, ticks)
        wait_for(lambda: matches(stored(mongo, settings, symbol), expected), 120,
                 f"the expected candles of {symbol} in candles_1m")
    finally:
        streams.kill(signal.SIGTERM)
    assert "late tick dropped" in (tmp_path / "streams.log").read_text()


def test_killed_mid_minute_and_restarted_it_produces_the_same_candles(settings, mongo, tmp_path):
    symbol, w = unique_symbol(), window_2004()
    rng = random.Random(w)
    ticks = [(w + s * 2_000 + rng.randrange(2_000), round(50 + rng.random(), 4)) for s in range(90)]
    ticks.append((w + 900_000, 1.0))
    expected = expected_candles(symbol, ticks)
    first_half = [t for t in ticks if t[0] < w + 100_000]  # minute 0 closes; minute 1 is open at the kill
    group, log = f"test-rollups-{uuid.uuid4()}", tmp_path / "streams.log"
    writer = TickWriter(settings)

    streams = StreamsProcess(group, log, symbol, "--idle-close-seconds", "600")
    writer.publish(symbol, first_half)
    wait_for(lambda: stored(mongo, settings, symbol).get(w, {}).get("final"), 60, "minute 0's final candle")
    first_of_minute_1 = writer.offsets[min(ts for ts, _ in first_half if ts >= w + M)]
    tp = TopicPartition(settings.prices_topic, 0)
    wait_for(lambda: topics.committed_offsets(settings, group, tp.topic, [0])[0] == first_of_minute_1, 30,
             "the processor to commit up to the first tick of the open minute")
    wait_for(lambda: stored(mongo, settings, symbol).get(w + M), 30, "an update of the open minute")
    streams.kill()  # SIGKILL: no goodbye

    streams = StreamsProcess(group, log, symbol, "--idle-close-seconds", "3")
    try:
        writer.publish(symbol, ticks[len(first_half):])
        wait_for(lambda: matches(stored(mongo, settings, symbol), expected), 120,
                 f"the expected candles of {symbol} after the restart")
    finally:
        streams.kill(signal.SIGTERM)
    assert expected[w + M].ticks == 30  # every tick of the minute open at the kill counted once


def test_an_ohlc_candle_is_never_replaced_by_one_rolled_up_from_ticks(settings, mongo, tmp_path):
    symbol, w = unique_symbol(), window_2004()
    ohlc = Candle(symbol, "simulated", w, 10.0, 12.0, 9.0, 11.0, 0, volume=1234.5, origin="ohlc", final=True)
    codec = AvroCodec(settings, settings.candles_topic, "candle")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    producer.produce(settings.candles_topic, key=ohlc.id.encode(), value=codec.encode(ohlc.to_record()))
    assert producer.flush(30) == 0

    ticks = [(w + 1_000, 50.0), (w + 30_000, 60.0), (w + M + 1_000, 70.0), (w + 10 * M, 80.0)]
    streams = StreamsProcess(f"test-rollups-{uuid.uuid4()}", tmp_path / "streams.log", symbol,
                             "--idle-close-seconds", "3")
    try:
        TickWriter(settings).publish(symbol, ticks)
        wait_for(lambda: len(stored(mongo, settings, symbol)) == 3, 120, "three candles")
    finally:
        streams.kill(signal.SIGTERM)
    doc = stored(mongo, settings, symbol)[w]
    assert (doc["origin"], doc["open"], doc["volume"]) == ("ohlc", 10.0, 1234.5)


def test_backfilled_ohlc_candles_are_left_alone_by_the_processor(settings, mongo, tmp_path):
    # What `control backfill` does for an OHLC source, page by page: the candles (delivered), then their closes
    # as ticks. The binance/coinbase back-fill only accepts its known symbols, so this drives the same
    # publisher directly with a symbol of its own.
    symbol, w = unique_symbol(), window_2004()
    rows = klines(w, 30)
    history = [Candle.ohlc(symbol, "binance", r[0], *(float(x) for x in r[1:5]), float(r[7]), quote="USDT")
               for r in rows]
    streams = StreamsProcess(f"test-rollups-{uuid.uuid4()}", tmp_path / "streams.log", symbol,
                             "--idle-close-seconds", "2")
    try:
        CandlePublisher(settings).publish(history)
        writer = TickWriter(settings)
        for c in history:  # marked as the back-fill marks its ticks: history, never rolled up again
            value = writer.codec.encode(c.tick().to_record())
            writer.producer.produce(settings.prices_topic, key=symbol.encode(), value=value,
                                    headers=[(kafka.ORIGIN_HEADER, kafka.BACKFILL)])
        assert writer.producer.flush(30) == 0
        wait_for(lambda: len(stored(mongo, settings, symbol)) == 30, 120, "the ohlc candles in candles_1m")
        time.sleep(5)  # the processor has read the ticks long ago and is past its idle close
    finally:
        streams.kill(signal.SIGTERM)
    docs = stored(mongo, settings, symbol)
    assert {d["origin"] for d in docs.values()} == {"ohlc"} and all(d["ticks"] == 0 for d in docs.values())
    first = docs[w]
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (150.0, 150.5, 149.5,
                                                                                             150.1, 1500.0)
    (stopped,) = [line for line in (tmp_path / "streams.log").read_text().splitlines() if "roll-up stopped:" in line]
    assert "published=0," in stopped  # nothing rolled up for this symbol: every minute was ohlc already
    assert "BookStats(ticks=0," in stopped or "suppressed_ohlc=0," not in stopped  # the ticks were seen, and held


def market_chart(start_ms: int, end_ms: int, step_ms: int = 5 * M) -> dict:
    """CoinGecko's market_chart/range in the API's shape: [ms, value] rows every `step_ms`."""
    times = range(start_ms - start_ms % step_ms, end_ms, step_ms)
    return {"prices": [[t, 0.5 + (t // step_ms) % 97 / 1000] for t in times],
            "market_caps": [[t, 1.8e10] for t in times], "total_volumes": [[t, 6.1e8] for t in times]}


def test_a_point_history_back_filled_after_live_ticks_still_becomes_candles(settings, mongo, tmp_path):
    # Live ticks move the processor's event time to now, so the back-fill's older ticks are late to it: the
    # back-fill rolls its point history (CoinGecko: a price every 5 minutes) up itself, and a minute that had
    # live ticks keeps the processor's candle.
    symbol, source = "ADA", "coingecko"  # CoinGecko knows only real coins: ADA from coingecko is this test's own
    now = int(time.time() * 1000)
    db = mongo[settings.database]
    mine = {"symbol": symbol, "source": source}
    db["prices"].delete_many(mine)  # an earlier run's, so that the back-fill finds its gap again
    db["candles_1m"].delete_many(mine)
    live = [(now - 20_000 + i * 1_000, 0.61 + i / 1000) for i in range(15)]
    fake = FakeHttp()
    fake.reply(f"/api/v3/coins/{IDS[symbol]}/market_chart/range", Reply(200, market_chart(now - 3 * 3_600_000, now)))
    streams = StreamsProcess(f"test-rollups-{uuid.uuid4()}", tmp_path / "streams.log", symbol,
                             "--idle-close-seconds", "3")
    try:
        TickWriter(settings).publish(symbol, live, source)
        wait_for(lambda: db["prices"].count_documents(mine) == len(live), 60, "the live ticks in MongoDB")
        live_minutes = {ts - ts % M for ts, _ in live}
        wait_for(lambda: live_minutes <= set(stored(mongo, settings, symbol)), 60, "the live candles")
        result = backfill("--hours", "2", "--symbols", symbol, "--source", source, env={"COINGECKO_URL": fake.url})
        history = sorted((int(d["ts"].timestamp() * 1000), d["price"]) for d in db["prices"].find(mine)
                         if int(d["ts"].timestamp() * 1000) < now - 20_000)
        assert len(history) >= 20, result.stdout + result.stderr  # 2 h of 5-minute points
        expected = {ts - ts % M for ts, _ in history} - live_minutes
        wait_for(lambda: expected | live_minutes <= set(stored(mongo, settings, symbol)), 120,
                 "a candle for every back-filled minute")
        time.sleep(3)  # let the processor see every back-filled tick
    finally:
        fake.close()
        streams.kill(signal.SIGTERM)
    docs = stored(mongo, settings, symbol)
    assert set(docs) == expected | live_minutes
    for ts, price in history:
        doc = docs[ts - ts % M]
        if ts - ts % M not in live_minutes:
            assert (doc["origin"], doc["ticks"], doc["close"], doc["final"]) == ("ticks", 1, price, True)
    for minute in live_minutes:  # rolled up from the live ticks by the processor, not replaced by the back-fill
        assert docs[minute]["ticks"] == len([ts for ts, _ in live if ts - ts % M == minute])
    (stopped,) = [line for line in (tmp_path / "streams.log").read_text().splitlines() if "roll-up stopped:" in line]
    assert "late=0," in stopped  # every back-filled tick was found decided, none dropped as late


def test_a_registry_outage_makes_the_processor_wait_before_the_tick_and_go_on_when_it_is_back(settings, mongo):
    # The registry "goes down" for the processor's tick decoder (injected: the real registry stays up for
    # everyone else). A tick it cannot decode is not skipped as undecodable: the processor waits before it,
    # commits no further, keeps running, and rolls it up once the registry answers again.
    symbol, w = unique_symbol(), window_2004()
    group = f"test-rollups-{uuid.uuid4()}"
    options = dict(group=group, from_end=True, retention_every=None, only_symbols=frozenset({symbol}),
                   close_on_stop=True)
    processor = Processor(settings, ProcessorOptions(**options))
    decode = processor._ticks.decode
    calls = {"refused": 0}

    def registry_down(data: bytes) -> dict:
        calls["refused"] += 1
        raise RegistryUnavailable("schema registry http://127.0.0.1:8081 did not answer: ConnectTimeout()")

    stop = threading.Event()
    thread = threading.Thread(target=processor.run, kwargs={"stop": stop.is_set})
    thread.start()
    try:
        assert processor.ready.wait(60)
        processor._ticks.decode = registry_down
        writer = TickWriter(settings)
        ticks = [(w + 1_000, 10.0), (w + 20_000, 12.0), (w + 40_000, 11.0)]
        writer.publish(symbol, ticks)
        wait_for(lambda: calls["refused"] >= 3, 60, "the processor to retry the tick it cannot decode")
        assert thread.is_alive() and processor.registry.is_down
        offset = writer.offsets[ticks[0][0]]
        assert topics.committed_offsets(settings, group, settings.prices_topic, [0])[0] <= offset  # not past it
        assert processor.stats.undecodable == 0 and processor.book.stats.ticks == 0

        processor._ticks.decode = decode  # the registry is back
        wait_for(lambda: processor.book.stats.ticks >= len(ticks), 60, "the three ticks rolled up")
        assert not processor.registry.is_down and processor.stats.undecodable == 0
    finally:
        stop.set()
        thread.join(90)
    wait_for(lambda: stored(mongo, settings, symbol).get(w, {}).get("ticks") == 3, 60, "the candle of all three ticks")
    doc = stored(mongo, settings, symbol)[w]
    assert (doc["open"], doc["high"], doc["low"], doc["close"], doc["final"]) == (10.0, 12.0, 10.0, 11.0, True)
