"""Every interval through the real stack: ticks -> `streams run` (the 1-minute roll-up and the cascade) -> the candle
topics -> the candles sink -> candles_1m ... candles_1w. Each stored candle of a coarser interval must equal the
reference aggregation of the stored 1-minute candles it covers (streams/cascade.py `aggregate`), the minutes
themselves those of one uninterrupted `CandleBook` over the ticks — late ticks and exchange-OHLC minutes included —
and a `streams run` killed with -9 mid-stream and started again must change nothing."""

from __future__ import annotations

import math
import random
import signal
import uuid

from cryptopulse import kafka, topics
from cryptopulse.avro import AvroCodec
from cryptopulse.candle import INTERVALS, Candle, bucket_of, child_of
from cryptopulse.store import candle_collection
from cryptopulse.times import HOUR_MS, MINUTE_MS
from streams.cascade import aggregate
from streams.history import CandlePublisher
from tests.integration.conftest import wait_for
from tests.integration.test_rollups import (
    StreamsProcess,
    TickWriter,
    expected_candles,
    matches,
    stored,
    unique_symbol,
    window_2004,
)

M = MINUTE_MS
FIELDS = ("open", "high", "low", "close", "ticks", "volume", "origin")


def ticks_of(w: int, hours: int, seed: int) -> list[tuple[int, float]]:
    """A tick every ~20 s for `hours`, some out of order within the grace period, one late, then a last one much
    later that closes everything before it by event time."""
    rng = random.Random(seed)
    ticks = [(w + i * 20_000 + rng.randrange(5_000), round(100 + rng.random() * 5, 4)) for i in range(hours * 180)]
    for i in range(30, len(ticks) - 1, 97):  # out of order within the grace: swapped neighbours
        ticks[i], ticks[i + 1] = ticks[i + 1], ticks[i]
    ticks.insert(400, (ticks[399][0] - 70_000, 999.0))  # late: its minute closed already, dropped
    ticks.append((w + 24 * HOUR_MS + 8 * 24 * HOUR_MS, 1.0))  # days later: every bucket before it closes
    return ticks


def stored_of(mongo, settings, symbol: str, interval: str) -> dict[int, dict]:
    docs = mongo[settings.database][candle_collection(interval)].find({"symbol": symbol})
    return {int(d["start"].timestamp() * 1000): d for d in docs}


def as_candle(doc: dict) -> Candle:
    return Candle.from_record({**doc, "start": doc["start"]})


def every_interval_agrees(mongo, settings, symbol: str) -> bool:
    """Each stored candle of 5m..1w is the aggregation of the stored candles of the interval below in its bucket,
    and every bucket of stored children has its candle (what holds when the stream has settled)."""
    below = stored_of(mongo, settings, symbol, "1m")
    for interval in INTERVALS[1:]:
        mine = stored_of(mongo, settings, symbol, interval)
        groups: dict[int, list[Candle]] = {}
        for start, doc in below.items():
            groups.setdefault(bucket_of(start, interval), []).append(as_candle(doc))
        if set(mine) != set(groups):
            return False
        for start, children in groups.items():
            want = aggregate(symbol, "simulated", interval, start, children, final=True)
            got = mine[start]
            for name in FIELDS:
                a, b = got.get(name), getattr(want, name)
                if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12):
                    continue
                if a != b:
                    return False
        below = mine
    return True


def test_every_interval_equals_the_aggregation_of_its_minutes_through_a_kill(settings, mongo, tmp_path):
    symbol, w = unique_symbol(), window_2004()
    w -= w % (4 * HOUR_MS)  # a whole 4-hour bucket to start with
    ticks = ticks_of(w, hours=3, seed=w)
    # an exchange's OHLC minute among them, published as a foreign producer would, before its ticks: it stays,
    # and the coarser candles count its volume only where every minute has one
    ohlc = Candle.ohlc(symbol, "simulated", w + 50 * M, 101.0, 109.0, 99.0, 102.0, 1234.5)
    expected = expected_candles(symbol, [t for t in ticks if not w + 50 * M <= t[0] < w + 51 * M])
    expected[ohlc.start] = ohlc
    group, log = f"test-cascade-{uuid.uuid4()}", tmp_path / "streams.log"
    writer = TickWriter(settings)
    options = ("--idle-close-seconds", "3", "--cascade-update-seconds", "1")

    streams = StreamsProcess(group, log, symbol, *options)
    try:
        codec = AvroCodec(settings, settings.candles_topic, "candle")  # an exchange feed's, not a back-fill: no header
        writer.producer.produce(settings.candles_topic, codec.encode(ohlc.to_record()), ohlc.id.encode())
        half = len(ticks) // 2
        writer.publish(symbol, ticks[:half])
        wait_for(lambda: len(stored_of(mongo, settings, symbol, "15m")) >= 3, 120, "some 15-minute candles")
        wait_for(lambda: topics.committed_offsets(settings, f"{group}-cascade", settings.candles_topic, [0])[0] > 0,
                 60, "a commit (and checkpoint) of the cascade")
    finally:
        streams.kill()  # SIGKILL mid-stream: no goodbye, no last commit

    streams = StreamsProcess(group, log, symbol, *options)
    try:
        writer.publish(symbol, ticks[half:])
        wait_for(lambda: matches(stored(mongo, settings, symbol), expected), 180,
                 f"the expected minutes of {symbol}")
        wait_for(lambda: every_interval_agrees(mongo, settings, symbol), 120,
                 "every interval to equal the aggregation of the minutes it covers")
    finally:
        streams.kill(signal.SIGTERM)
    for interval in INTERVALS[1:]:
        assert stored_of(mongo, settings, symbol, interval), interval
    hour = stored_of(mongo, settings, symbol, "1h")[w]
    assert hour["final"] and hour["volume"] is None and hour["origin"] == "ticks"  # mixed: no partial volume
    assert "late tick dropped" in log.read_text()


def test_a_backfills_minutes_become_every_interval_and_a_live_bucket_takes_them_in(settings, mongo, tmp_path):
    # A back-fill publishes its minutes marked BACKFILL; the cascade takes them as children of the buckets it has
    # open (here: all of them, the key is new to it), so the hour and the 4 hours hold the history and the live
    # minutes after it together.
    symbol, w = unique_symbol(), window_2004()
    w -= w % (4 * HOUR_MS)
    history = [Candle.ohlc(symbol, "simulated", w + i * M, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 100.0)
               for i in range(90)]
    live = [(w + 90 * M + i * 15_000, 200.0 + i) for i in range(40)] + [(w + 24 * HOUR_MS, 1.0)]
    streams = StreamsProcess(f"test-cascade-{uuid.uuid4()}", tmp_path / "streams.log", symbol,
                             "--idle-close-seconds", "3", "--cascade-update-seconds", "1")
    try:
        CandlePublisher(settings).publish(history, origin=kafka.BACKFILL)
        TickWriter(settings).publish(symbol, live)
        wait_for(lambda: len(stored(mongo, settings, symbol)) == 90 + 10 + 1, 120, "the history and the live minutes")
        wait_for(lambda: every_interval_agrees(mongo, settings, symbol), 120,
                 "every interval to equal the aggregation of the minutes it covers")
    finally:
        streams.kill(signal.SIGTERM)
    first_hour = stored_of(mongo, settings, symbol, "1h")[w]
    assert first_hour["origin"] == "ohlc" and first_hour["volume"] == 6000.0  # 60 back-filled minutes
    second_hour = stored_of(mongo, settings, symbol, "1h")[w + HOUR_MS]
    assert second_hour["origin"] == "ticks" and second_hour["high"] == 239.0  # 30 history + 10 live minutes
    assert child_of("1h") == "15m"
