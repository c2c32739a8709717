"""Price alerts on the real stack: `control alerts` → crypto-alert-rules → `streams alerts` → crypto-alerts →
alerts sink → crypto_db.alerts; and `control topics tail`.

Each test uses symbols of its own and a consumer group of its own (in the test namespace), so neither the
dashboard nor another test sees its alerts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from cryptopulse import topics
from cryptopulse.avro import AvroCodec
from cryptopulse.settings import PROJECT_DIR
from cryptopulse.tick import Tick
from cryptopulse.times import now_ms
from tests import children
from tests.integration.conftest import wait_for
from tests.namespace import PREFIX
from webui.app import create_app
from webui.state import state


def control(*args: str) -> children.Finished:
    return children.run(["control", *args], timeout=120)


def unique_symbol() -> str:
    return "A" + uuid.uuid4().hex[:7].upper()


class AlertsProcess:
    """`python -m streams.cli alerts` as a subprocess, its log in a file."""

    def __init__(self, group: str, log: Path) -> None:
        self.log = log
        self.process = children.start([sys.executable, "-m", "streams.cli", "alerts", "--group", group], log,
                                      cwd=PROJECT_DIR, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assignments = self.log.read_text().count("assigned ")
        wait_for(lambda: self.log.read_text().count("assigned ") > assignments or self.process.poll() is not None,
                 90, "the alert processor to be assigned the prices topic")
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def stop(self, sig: int = signal.SIGKILL) -> None:
        self.process.send_signal(sig)
        self.process.wait(60)


class TickWriter:
    def __init__(self, settings) -> None:
        self.settings = settings
        self.codec = AvroCodec(settings, settings.prices_topic, "tick")
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
                                  "enable.idempotence": True})

    def publish(self, symbol: str, ticks: list[tuple[int, float]]) -> None:
        for ts, price in ticks:
            value = self.codec.encode(Tick(symbol, "simulated", ts, price).to_record(published_at=now_ms()))
            self.producer.produce(self.settings.prices_topic, key=symbol.encode(), value=value)
        assert self.producer.flush(30) == 0


def add_rule(*args: str) -> str:
    result = control("alerts", "add", *args)
    assert result.returncode == 0, result.stderr
    match = re.match(r"rule ([0-9a-f]+): ", result.stdout)
    assert match, result.stdout
    return match.group(1)


def committed_alerts(settings, rule_id: str) -> list[dict]:
    """Every committed record of the alerts topic for this rule (read committed, as the sink reads)."""
    codec = AvroCodec(settings, settings.alerts_topic, "alert")
    return [record for m in read_committed(settings, settings.alerts_topic)
            if (record := codec.decode(m.value()))["rule_id"] == rule_id]


def read_committed(settings, topic: str) -> list:
    ends = topics.end_offsets_by_partition(settings, topic)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{PREFIX}alerts-reader",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    out = []
    try:
        parts = [TopicPartition(topic, p, 0) for p in ends]
        consumer.assign(parts)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = {tp.partition: tp.offset for tp in consumer.position(parts)}
            if all(positions.get(p, -1) >= end or end == 0 for p, end in ends.items()):
                break
            out += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None and m.value() is not None]
    finally:
        consumer.close()
    return out


def test_a_rule_fires_once_per_crossing_is_stored_and_never_again_after_a_kill(settings, mongo, tmp_path):
    symbol, group = unique_symbol(), f"{PREFIX}alerts-{uuid.uuid4().hex[:6]}"
    alerts = mongo[settings.database]["alerts"]
    processor = AlertsProcess(group, tmp_path / "alerts.log")
    rule = add_rule(symbol, "above", "100")
    wait_for(lambda: f"rule {rule}:" in processor.log.read_text(), 30, "the processor to learn the rule")
    writer = TickWriter(settings)
    t0 = now_ms()
    writer.publish(symbol, [(t0, 99.0), (t0 + 1000, 99.5), (t0 + 2000, 101.0), (t0 + 3000, 102.0),
                            (t0 + 4000, 103.0), (t0 + 5000, 100.5)])
    published = time.time()
    wait_for(lambda: alerts.count_documents({"rule_id": rule}), 30, "the alert in the alerts collection", 0.05)
    stored_after = time.time() - published
    (doc,) = list(alerts.find({"rule_id": rule}))
    assert doc["_id"] == f"{rule}|{symbol}|simulated|{t0 + 2000}" and doc["price"] == 101.0
    assert doc["direction"] == "up" and doc["threshold"] == 100.0 and doc["reference_price"] == 99.5
    print(f"\nalert stored {stored_after * 1000:.0f} ms after its crossing tick was published")

    # killed, restarted: the ticks still above the line fire nothing; a crossing after it does, once
    time.sleep(1.5)  # a transaction commits at least every second
    processor.stop(signal.SIGKILL)
    processor = AlertsProcess(group, tmp_path / "alerts.log")
    writer.publish(symbol, [(t0 + 6000, 104.0), (t0 + 7000, 105.0)])
    time.sleep(3)
    assert alerts.count_documents({"rule_id": rule}) == 1
    # a crossing published, and the processor killed right away (within its transaction, or just after it)
    writer.publish(symbol, [(t0 + 8000, 99.0), (t0 + 9000, 101.5)])
    time.sleep(0.2)
    processor.stop(signal.SIGKILL)
    processor = AlertsProcess(group, tmp_path / "alerts.log")
    wait_for(lambda: alerts.count_documents({"rule_id": rule}) >= 2, 30, "the second crossing's alert")
    writer.publish(symbol, [(t0 + 10_000, 106.0)])
    time.sleep(3)
    processor.stop(signal.SIGTERM)
    assert sorted(d["_id"] for d in alerts.find({"rule_id": rule})) == sorted(
        [f"{rule}|{symbol}|simulated|{t0 + 2000}", f"{rule}|{symbol}|simulated|{t0 + 9000}"])
    # and the topic holds each alert once: what was fired in an aborted transaction is not there
    assert sorted(r["_id"] for r in committed_alerts(settings, rule)) == sorted(
        [f"{rule}|{symbol}|simulated|{t0 + 2000}", f"{rule}|{symbol}|simulated|{t0 + 9000}"])
    assert control("alerts", "rm", rule).returncode == 0


def test_a_move_rule_fires_on_a_fast_move_in_event_time(settings, mongo, tmp_path):
    symbol, group = unique_symbol(), f"{PREFIX}alerts-{uuid.uuid4().hex[:6]}"
    processor = AlertsProcess(group, tmp_path / "alerts.log")
    rule = add_rule(symbol, "move", "5", "--minutes", "10")
    wait_for(lambda: f"rule {rule}:" in processor.log.read_text(), 30, "the processor to learn the rule")
    t0 = now_ms()
    # event time: +4 % over 20 minutes of ticks is no alert; then +6 % within 2 minutes is
    TickWriter(settings).publish(symbol, [(t0 + i * 60_000, 100 + i * 0.2) for i in range(21)]
                                 + [(t0 + 22 * 60_000, 110.0)])
    alerts = mongo[settings.database]["alerts"]
    wait_for(lambda: alerts.count_documents({"rule_id": rule}), 30, "the move alert")
    processor.stop(signal.SIGTERM)
    (doc,) = list(alerts.find({"rule_id": rule}))
    assert doc["kind"] == "move" and doc["direction"] == "up" and doc["price"] == 110.0
    # from the lowest price of the 10 minutes before the tick (minute 12: 102.4), not the lowest of all (100)
    assert abs(doc["change_pct"] - (110 / 102.4 - 1) * 100) < 1e-9 and doc["reference_price"] == 102.4
    assert control("alerts", "rm", rule).returncode == 0


def test_an_alert_reaches_an_open_page_and_the_recent_list(settings, mongo, tmp_path):
    symbol, group = unique_symbol(), f"{PREFIX}alerts-{uuid.uuid4().hex[:6]}"
    processor = AlertsProcess(group, tmp_path / "alerts.log")
    rule = add_rule(symbol, "below", "50")
    wait_for(lambda: f"rule {rule}:" in processor.log.read_text(), 30, "the processor to learn the rule")

    async def scenario() -> tuple[dict, float, dict]:
        app = create_app(settings, symbols=("BTC",))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            feed = state(app).alerts
            deadline = time.monotonic() + 60
            while not feed.assigned:
                assert time.monotonic() < deadline, f"the alert feed never got its partitions: {feed.last_error}"
                await asyncio.sleep(0.2)
            async with client.websocket("/ws") as ws:
                t0 = now_ms()
                await asyncio.to_thread(TickWriter(settings).publish, symbol, [(t0, 51.0), (t0 + 1000, 49.0)])
                published = time.monotonic()
                while True:
                    message = json.loads(await asyncio.wait_for(ws.receive(), 30))
                    if message["type"] == "alert" and message["rule_id"] == rule:
                        break
                took = time.monotonic() - published
            recent = await (await client.get("/alerts/recent")).get_json()
        return message, took, recent

    message, took, recent = asyncio.run(scenario())
    processor.stop(signal.SIGTERM)
    assert message["symbol"] == symbol and message["direction"] == "down" and message["price"] == 49.0
    assert message["id"].startswith(f"{rule}|{symbol}|simulated|") and "crossed below 50" in message["message"]
    assert recent["alerts"][0]["id"] == message["id"]
    print(f"\nalert on the page {took * 1000:.0f} ms after its crossing tick was published")
    control("alerts", "rm", rule)


def test_control_alerts_add_list_rm(settings):
    symbol = unique_symbol()
    above = add_rule(symbol, "above", "70000.5", "--source", "binance")
    move = add_rule(symbol, "move", "2.5", "--minutes", "15")
    big, small = add_rule(symbol, "above", "10000000"), add_rule(symbol, "below", "0.00001234")
    listed = control("alerts", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert f"{symbol} above 70,000.50 (binance)" in lines[above]
    assert f"{symbol} move 2.5% within 15 min" in lines[move]
    # prices as people write them (cryptopulse/prices.py), not `1e+07` and `1.234e-05`
    assert f"{symbol} above 10,000,000 " in lines[big] and f"{symbol} below 0.00001234 " in lines[small]
    for rule in (big, small):
        assert control("alerts", "rm", rule).returncode == 0
    removed = control("alerts", "rm", above)
    assert removed.returncode == 0 and f"rule {above} removed" in removed.stdout, removed.stderr
    listed = control("alerts", "list")
    assert above not in listed.stdout and move in listed.stdout
    again = control("alerts", "rm", above)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1 and "no rule" in again.stderr
    assert control("alerts", "rm", move).returncode == 0


def test_topics_tail_decodes_avro_and_shows_other_bytes_safely(settings):
    topic = f"{PREFIX}tail-{uuid.uuid4().hex[:6]}"
    codec = AvroCodec(settings, topic, "tick")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(topic, key=b"BTC", value=codec.encode(Tick("BTC", "simulated", 1_700_000_000_000, 42.5)
                                                           .to_record()))
    raw = b"\x1b[31mnot avro\x00\xff\\"
    producer.produce(topic, key=b"\x00\x01", value=raw, headers=[
        ("__connect.errors.exception.message", b"Converting byte[] to Kafka Connect data failed"),
        ("__connect.errors.topic", b"crypto-prices")])
    assert producer.flush(30) == 0
    result = control("topics", "tail", topic, "--from-beginning", "--n", "5")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x00" not in result.stdout
    avro, other = (json.loads(line) for line in result.stdout.splitlines())
    assert avro["key"] == "BTC" and avro["partition"] == 0 and avro["offset"] == 0 and avro["timestamp"]
    assert avro["value"]["price"] == 42.5 and avro["value"]["ts"] == "2023-11-14T22:13:20.000Z"
    assert isinstance(avro["schema_id"], int)
    assert other["offset"] == 1 and "value" not in other and "Confluent" in other["value_error"]
    assert other["raw"] == "\\x1b[31mnot avro\\x00\\xff\\\\" and other["key"] == "\\x00\\x01"
    assert other["headers"]["__connect.errors.exception.message"].startswith("Converting byte[]")
    last = control("topics", "tail", topic, "--n", "1")
    assert [json.loads(line)["offset"] for line in last.stdout.splitlines()] == [1]
    missing = control("topics", "tail", f"{PREFIX}no-such-topic")
    assert missing.returncode == 2 and "no topic" in missing.stderr
