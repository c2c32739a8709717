"""Scaling on one machine (issue 9, docs/scaling.md): a topic's partitions raised, and the roll-up as a consumer group
of two `streams run` processes sharing a 4-partition prices topic, one of them killed with -9 mid-stream.

The prices topic here is the test's own (`test-scale-prices-...`, made with PRICES_PARTITIONS=4), so the
namespace's one-partition topic that the other tests use is left as it is; the candles go to the namespace's
candles topic and its sink, as in test_rollups.
"""

from __future__ import annotations

import random
import re
import signal
import time
import uuid
import zlib

import pytest
from confluent_kafka import Producer

from cryptopulse import topics
from cryptopulse.avro import AvroCodec
from cryptopulse.errors import ConfigError
from cryptopulse.settings import Settings
from cryptopulse.tick import Tick
from tests.integration.conftest import wait_for
from tests.integration.test_rollups import StreamsProcess, expected_candles, matches, stored, window_2004

PARTITIONS = 4
ASSIGNED = re.compile(r" streams: assigned (.*)")  # the roll-up's (the cascade logs as streams.cascade)


def test_a_topics_partitions_are_raised_never_lowered(settings, monkeypatch):
    name = f"test-partitions-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PRICES_TOPIC", name)
    local = Settings()
    assert topics.create_missing(local, [s for s in topics.project_topics(local) if s.name == name]) == [name]
    assert topics.add_partitions(local, name, 3) == 1
    wait_for(lambda: len(topics.end_offsets_by_partition(local, name)) == 3, 30, "3 partitions")
    assert topics.add_partitions(local, name, 3) == 3  # reached already: nothing to do
    with pytest.raises(ConfigError, match="cannot lower"):
        topics.add_partitions(local, name, 2)
    with pytest.raises(ConfigError, match="no topic"):
        topics.add_partitions(local, f"{name}-absent", 2)


def symbols_covering(partitions: int, per_partition: int) -> dict[str, int]:
    """Fresh symbols, `per_partition` on each partition of librdkafka's default partitioner (CRC-32 of the key)."""
    chosen: dict[str, int] = {}
    counts = [0] * partitions
    while min(counts) < per_partition:
        symbol = "S" + uuid.uuid4().hex[:7].upper()
        partition = zlib.crc32(symbol.encode()) % partitions
        if counts[partition] < per_partition:
            counts[partition] += 1
            chosen[symbol] = partition
    return chosen


IDLE_CLOSE_S = 20


def assignment(process: StreamsProcess) -> set[int]:
    """The partitions of the process's latest assignment, from its log."""
    lines = ASSIGNED.findall(process.log.read_text())
    return {int(p) for p in re.findall(r"\[(\d+)\]@", lines[-1])} if lines else set()


def test_two_processors_share_the_partitions_and_one_killed_changes_no_candle(settings, mongo, tmp_path,
                                                                              monkeypatch):
    print("\n" + one_processor_killed(settings, mongo, tmp_path, monkeypatch))


def one_processor_killed(settings: Settings, mongo, tmp_path, monkeypatch) -> str:
    """Two `streams run` of one group on a 4-partition prices topic of its own, one killed -9 mid-minute; the
    candles must equal a one-process roll-up of the same ticks. Also run on the local cluster (tests/cluster).
    Returns the figures."""
    topic, group = f"test-scale-prices-{uuid.uuid4().hex[:8]}", f"test-scale-{uuid.uuid4()}"
    monkeypatch.setenv("PRICES_TOPIC", topic)  # inherited by the `streams run` subprocesses
    monkeypatch.setenv("PRICES_PARTITIONS", str(PARTITIONS))
    local = Settings()
    (spec,) = [s for s in topics.project_topics(local) if s.name == topic]
    assert spec.partitions == PARTITIONS
    topics.create_missing(local, [spec])

    # 8 symbols, 2 a partition; 8 minutes of event time in steps of 3 s. On each partition a fast symbol, a tick
    # every step give or take 1 s (so some arrive out of order, within the grace period), and a slow one, a tick
    # every 30 s at :15 and :45: its open minute is often older than the fast one's, so it holds the partition's
    # commit back while the fast symbol's minutes close: a replay then reads ticks of minutes that are final already.
    # Each symbol's last tick is far later, closing its last minute.
    where = symbols_covering(PARTITIONS, 2)
    slow = {s for i, s in enumerate(sorted(where, key=lambda s: (where[s], s))) if i % 2}
    order = sorted(where, key=lambda s: s in slow)  # in each step the fast symbols' ticks first
    w, rng = window_2004(), random.Random()
    steps = [[(s, w + i * 3_000 + rng.randrange(-1_000, 1_000) + 1_000, round(100 + 10 * rng.random(), 4))
              for s in order if s not in slow or i % 10 == 5] for i in range(160)]
    # right after the slow symbols' tick at 3:15 (where the killed processor will have committed), a tick of the fast
    # symbol of the same partition: the first of its ticks that the replay reads, late (its minute, before the
    # window, has no candle and its event time is past 3:00); a replay that starts the symbol afresh would take it
    steps[65] += [(s, w - 30_000, 1.0) for s in order if s not in slow]
    steps.append([(s, w + 15 * 60_000, 1.0) for s in order])
    ticks = {s: [(ts, price) for step in steps for symbol, ts, price in step if symbol == s] for s in order}
    expected = {s: expected_candles(s, t) for s, t in ticks.items()}
    assert all(len(e) == 9 for e in expected.values())

    codec = AvroCodec(local, topic, "tick")
    producer = Producer({"bootstrap.servers": local.kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    offsets: dict[tuple[str, int], tuple[int, int]] = {}  # (symbol, ts) -> (partition, offset)

    def publish(upto: int, start: int) -> None:  # the ticks of steps [start, upto)
        for step in steps[start:upto]:
            for symbol, ts, price in step:
                value = codec.encode(Tick(symbol, "simulated", ts, price).to_record())
                producer.produce(topic, key=symbol.encode(), value=value,
                                 on_delivery=lambda e, m, k=(symbol, ts): offsets.__setitem__(k, (m.partition(),
                                                                                                m.offset())))
        assert producer.flush(30) == 0

    # a key idle for IDLE_CLOSE_S closes its open minute: long enough that the slow symbols' open minute 3 still holds
    # the commit back while the test waits for the fast symbols' minute 3 (on a slow machine that took over 5 s, the
    # minute closed and the commit went past it), short enough to close every last minute within the final wait
    first = StreamsProcess(group, tmp_path / "first.log", "", "--idle-close-seconds", str(IDLE_CLOSE_S))
    second = StreamsProcess(group, tmp_path / "second.log", "", "--idle-close-seconds", str(IDLE_CLOSE_S))
    processes = [first, second]
    try:
        wait_for(lambda: len(assignment(first)) == len(assignment(second)) == 2
                 and assignment(first) | assignment(second) == set(range(PARTITIONS)), 60,
                 "the group to share the 4 partitions, 2 each")
        victim_partitions = assignment(second)
        victims = [s for s, p in where.items() if p in victim_partitions]

        # the first half of the stream, a few ticks at a time, both processors at work, up to 4:15 of event time:
        # each fast symbol's minute 3 has just closed, while the slow one's (first tick at 3:15) is open and holds
        # the commit of the partition back to 3:15, in the middle of the fast symbol's final minute 3
        cut = 85
        for i in range(0, cut, 10):
            publish(min(i + 10, cut), i)
            time.sleep(0.3)
        landed = {s: {p for (symbol, _), (p, _) in offsets.items() if symbol == s} for s in where}
        assert landed == {s: {p} for s, p in where.items()}, "key = symbol: one partition each"
        wait_for(lambda: all(stored(mongo, settings, s).get(w + (2 if s in slow else 3) * 60_000, {}).get("final")
                             for s in victims), 60, "the killed processor's fast symbols to have minute 3 final")
        held_back = {where[s]: min(o for (sym, ts), (_, o) in offsets.items() if sym == s and ts >= w + 3 * 60_000)
                     for s in victims if s in slow}  # the first tick of the slow symbol's open minute 3
        wait_for(lambda: topics.committed_offsets(settings, group, topic, sorted(held_back)) == held_back, 30,
                 f"the killed processor to commit up to the slow symbols' open minute ({held_back})")

        second.kill(signal.SIGKILL)  # no goodbye: its partitions wait for the session timeout (10 s)
        killed = time.monotonic()
        processes.remove(second)
        for i in range(cut, 161, 10):  # the rest, while its partitions have no owner
            publish(min(i + 10, 161), i)
            time.sleep(0.3)
        wait_for(lambda: assignment(first) == set(range(PARTITIONS)), 60, "the survivor to take every partition")
        taken_over = time.monotonic() - killed
        wait_for(lambda: all(matches(stored(mongo, settings, s), expected[s]) for s in where), 90,
                 "every symbol's candles, equal to a one-process roll-up of the same ticks")
        done = time.monotonic() - killed
    finally:
        for process in processes:
            process.kill(signal.SIGTERM)
    return (f"{sum(len(t) for t in ticks.values())} ticks on {PARTITIONS} partitions, 2 processors, one killed -9: "
            f"partitions taken over {taken_over:.1f} s after the kill, every candle right {done:.1f} s after it "
            f"({sum(len(e) for e in expected.values())} candles)")
