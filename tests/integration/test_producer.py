"""The producer against the real stack: a live source behind a local fake exchange, and a broker restart."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from datetime import datetime

import pytest

from control.stack import components, probes, processes
from cryptopulse.settings import StackLayout
from tests import children
from tests.fakes import CLOSE, FakeWs, sample
from tests.integration.conftest import wait_for


def window(start_ms: int, end_ms: int) -> dict:
    return {"ts": {"$gte": datetime.fromtimestamp(start_ms / 1000).astimezone(),
                   "$lt": datetime.fromtimestamp(end_ms / 1000).astimezone()}}


def miniticker(symbol: str, event_ms: int, price: str) -> dict:
    data = dict(sample("binance-ws-miniticker.json"), s=f"{symbol}USDT", E=event_ms, c=price)
    return {"stream": f"{symbol.lower()}usdt@miniTicker", "data": data}


def test_binance_ticks_from_a_fake_exchange_land_in_mongodb(settings, mongo):
    start = int(datetime(2002, 1, 1).timestamp() * 1000) + random.randrange(300) * 86_400_000
    good = [miniticker(symbol, start + i * 1000, f"{100 + i}.5") for i in range(20) for symbol in ("BTC", "ETH")]
    bad = [miniticker("BTC", start + 500, "NaN"), miniticker("ETH", start + 700, "-3"),
           miniticker("BTC", start + 900, "0")]
    fake = FakeWs()
    # The first connection drops mid-stream; the source reconnects and gets the rest.
    fake.scripts = [[*good[:15], *bad, CLOSE], good[15:]]
    try:
        env = {**os.environ, "BINANCE_WS_URL": fake.url}
        result = children.run(["producer", "run", "--source", "binance", "--symbols", "BTC,ETH", "--count",
                               str(len(good)), "--metrics-port", "-1"], env=env, timeout=120)
    finally:
        fake.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(fake.connections) == 2
    assert "rejected a binance tick for BTC (nan price)" in result.stderr

    prices = mongo[settings.database]["prices"]
    span = window(start, start + 20_000)
    wait_for(lambda: prices.count_documents(span) >= len(good), 120, "the binance ticks in MongoDB")
    docs = list(prices.find(span))
    assert len(docs) == len(good)
    assert {d["source"] for d in docs} == {"binance"} and {d["quote"] for d in docs} == {"USDT"}
    assert all(d["price"] > 0 for d in docs)
    assert sorted(d["price"] for d in docs if d["symbol"] == "BTC") == [100.5 + i for i in range(20)]


@pytest.mark.restarts_stack  # the broker stops: no other test may run meanwhile
def test_no_delivered_tick_is_lost_when_the_broker_restarts_mid_run(settings, mongo, tmp_path):
    symbols = [f"R{random.randrange(10**6):06d}{c}" for c in "ABC"]  # symbols no one else publishes
    start = int(time.time() * 1000)
    log = tmp_path / "producer.stderr"
    producer = children.start(
        ["producer", "run", "--symbols", ",".join(symbols), "--interval-ms", "20", "--start-ms", str(start),
         "--metrics-port", "-1"],
        log, stdout=None,
    )
    kafka = next(c for c in components.components(settings) if c.name == "kafka")
    try:
        time.sleep(5)
        processes.stop(kafka, settings.state_dir)
        time.sleep(8)  # the producer keeps queueing locally meanwhile
        processes.start(kafka, settings.state_dir)
        time.sleep(5)
    finally:
        producer.send_signal(signal.SIGTERM)
        children.wait(producer, 120)
        stderr = log.read_text()
        if not probes.kafka_ready(StackLayout.of(settings.state_dir).broker_port(1)):
            processes.start(kafka, settings.state_dir)
    assert producer.returncode == 0, stderr[-3000:]
    delivered = int(re.search(r"delivered (\d+), delivery errors 0, reconnects \d+, undelivered 0", stderr).group(1))
    assert delivered > 1000

    prices = mongo[settings.database]["prices"]
    mine = {"symbol": {"$in": symbols}}
    wait_for(lambda: prices.count_documents(mine) >= delivered, 240,
             f"{delivered} delivered ticks in MongoDB after the broker restart")
    assert prices.count_documents(mine) == delivered


def test_an_unreachable_source_falls_back_to_simulated_only_when_asked(settings, mongo, tmp_path):
    env = {**os.environ, "BINANCE_WS_URL": "ws://127.0.0.1:9"}  # nothing listens on the discard port
    command = ["producer", "run", "--source", "binance", "--symbols", "BTC", "--count", "20", "--metrics-port", "-1",
               "--fast"]
    # Not asked: it keeps trying (and says why) rather than publish simulated prices as if real.
    log = tmp_path / "producer.stderr"
    waiting = children.start(command, log, stdout=None, env=env)
    time.sleep(4)
    waiting.send_signal(signal.SIGTERM)
    children.wait(waiting, 60)
    stderr = log.read_text()
    assert "FALLING BACK" not in stderr and "published 0" in stderr, stderr
    assert "binance" in stderr and "127.0.0.1:9" in stderr, stderr

    result = children.run([*command, "--fallback", "simulated", "--fallback-after", "3"], env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "binance cannot be reached: FALLING BACK TO THE SIMULATED MARKET" in result.stderr
    assert "published 20" in result.stderr


def test_ctrl_c_during_the_final_flush_ends_the_producer_at_once(settings, tmp_path):
    """Kafka is away, so the one tick waits in the queue and the final flush would wait 60 s for it; Ctrl-C there
    ends the producer with one line (it once waited out the whole flush, then printed a traceback)."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # the registry is up: the tick is encoded, queued
    ended = children.ctrl_c(["producer", "run", "--symbols", "BTC", "--count", "1", "--metrics-port", "-1"],
                            tmp_path / "producer.stderr", once="Kafka unavailable",
                            then_wait=1, env=env)  # 1 s: the tick is queued and the flush has begun
    assert ended.status == 130, f"exit {ended.status}, not 130 (interrupted); stderr:\n{ended.stderr}"
    assert ended.seconds < 10, f"Ctrl-C waited for the flush ({ended.seconds:.0f} s); stderr:\n{ended.stderr}"
    assert "Traceback" not in ended.after and ended.last_line == "producer: interrupted", ended.stderr
