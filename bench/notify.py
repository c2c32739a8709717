"""Alert delivery on the native stack: crossing tick -> webhook received, and delivery throughput (issue 20).

    python bench/notify.py [--alerts 200] [--every-ms 100] [--burst 1000]

Runs `streams alerts` and `streams notify` as the demo does (subprocesses), in a namespace of their own (topics,
groups and subjects `bench-notify-*`, database `bench_notify`, all removed at the end), against a local webhook
receiver (tests/receivers.py) in this process, which notes when each request arrives.

1. At rest: `--alerts` crossings, one every `--every-ms`, each firing one alert to one webhook channel: from the
   crossing tick's publication to the webhook's arrival at the receiver, p50 / p99 / max.
2. The same with a second channel of the same rule dead (its port refuses connections), then hung (it never
   answers; 10 s timeouts): the live channel's latency, which the other must not change.
3. Throughput: `--burst` alerts fired at once to one channel, then to four channels of one rule: deliveries a
   second at the receiver (each delivery is one HTTP POST, then one Kafka transaction recording it).
The channels' cap is lifted (`--cap-per-minute`) here: it is a flood guard, not what is measured. Numbers are
printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control import connectors, scratch  # noqa: E402

PREFIX = "bench-notify-"
DATABASE = "bench_notify"
os.environ.update(scratch.environment(PREFIX, DATABASE))  # before Settings() is read; the children inherit it

from confluent_kafka import Producer  # noqa: E402

from cryptopulse import alert_channels, alert_rules, topics  # noqa: E402
from cryptopulse.alert import new_rule  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.channel import new_channel  # noqa: E402
from cryptopulse.settings import PROJECT_DIR, Settings  # noqa: E402
from cryptopulse.tick import Tick  # noqa: E402
from cryptopulse.times import now_ms  # noqa: E402
from tests.receivers import Receiver  # noqa: E402

LOGS = Path("/tmp") / f"bench-notify-{time.strftime('%Y%m%d%H%M%S')}"


class Child:
    def __init__(self, name: str, args: list[str], ready: str) -> None:
        self.log = LOGS / f"{name}.log"
        self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", *args], cwd=PROJECT_DIR,
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.wait_for(ready, 1)

    def wait_for(self, text: str, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.log.read_text(errors="replace").count(text) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: {self.log} never said {text!r}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Ticks:
    """Publishes crossings of 100 for one symbol; remembers when each crossing tick was handed to Kafka."""

    def __init__(self, settings: Settings, symbol: str) -> None:
        self.settings, self.symbol = settings, symbol
        self.codec = AvroCodec(settings, settings.prices_topic, "tick")
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
                                  "enable.idempotence": True, "linger.ms": 0})
        self.ts = now_ms()
        self.published: dict[int, float] = {}  # crossing tick's ts -> time.time() it was published

    def crossing(self, flush: bool = True) -> None:
        for price in (99.0, 101.0):
            self.ts += 1
            if price > 100:
                self.published[self.ts] = time.time()
            record = Tick(self.symbol, "simulated", self.ts, price).to_record(published_at=now_ms())
            self.producer.produce(self.settings.prices_topic, key=self.symbol.encode(),
                                  value=self.codec.encode(record))
        if flush:
            self.producer.flush(30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def latencies(receiver: Receiver, prefix: str, ticks: Ticks) -> list[float]:
    """Per alert, seconds from its crossing tick's publication to the first arrival of its webhook."""
    first: dict[str, float] = {}
    for seen in receiver.requests(prefix):
        if seen.key and seen.key not in first:
            first[seen.key] = seen.at
    return [first[key] - ticks.published[int(key.rsplit("|", 1)[1])] for key in first
            if int(key.rsplit("|", 1)[1]) in ticks.published]


def say_latency(what: str, values: list[float], expected: int) -> None:
    ms = [v * 1000 for v in values]
    print(f"{what:58} {len(ms):4}/{expected} delivered  p50 {statistics.median(ms):6.0f} ms  "
          f"p99 {percentile(ms, 99):6.0f} ms  max {max(ms):6.0f} ms", flush=True)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            print(f"bench: gave up waiting for {what}", flush=True)
            return
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--every-ms", type=int, default=100)
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()
    LOGS.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    scratch.remove(settings, PREFIX, DATABASE)
    topics.create_missing(settings)
    connectors.deploy(settings, say=lambda line: None)  # the deliveries sink too: the notifier's whole path
    run = uuid.uuid4().hex[:6]
    receiver = Receiver()
    dead = Receiver()
    dead.stop()  # its port refuses connections
    hung = Receiver()
    hung.hang("/")
    names = {"live": f"live-{run}", "dead": f"dead-{run}", "hung": f"hung-{run}",
             **{f"t{i}": f"t{i}-{run}" for i in range(4)}}
    targets = {"live": f"{receiver.url}/hook/live", "dead": f"{dead.url}/hook/dead", "hung": f"{hung.url}/hook/hung",
               **{f"t{i}": f"{receiver.url}/hook/t{i}" for i in range(4)}}
    for key, name in names.items():
        alert_channels.add(settings, new_channel(name, "webhook", targets[key]))
    children: list[Child] = []
    try:
        alerts = Child("alerts", ["alerts", "--group", f"{PREFIX}alerts-{run}"], "assigned ")
        children.append(alerts)
        notify = Child("notify", ["notify", "--group", f"{PREFIX}notify-{run}", "--cap-per-minute", "1000000"],
                       "assigned ")
        children.append(notify)
        notify.wait_for("): from ", len(names))
        print(f"bench/notify.py: {args.alerts} alerts, one every {args.every_ms} ms; bursts of {args.burst} "
              f"(logs in {LOGS})", flush=True)

        rules = 0

        def rule(symbol: str, *keys: str) -> Ticks:
            nonlocal rules
            made = alert_rules.add(settings, new_rule(symbol, "above", 100, channels=tuple(names[k] for k in keys)))
            rules += 1
            alerts.wait_for(f"rule {made.id}:", 1)
            return Ticks(settings, symbol)

        def at_rest(ticks: Ticks, prefix: str, what: str) -> None:
            for _ in range(args.alerts):
                ticks.crossing()
                time.sleep(args.every_ms / 1000)
            wait_until(lambda: len({s.key for s in receiver.requests(prefix)}) >= args.alerts, 120, what)
            say_latency(what, latencies(receiver, prefix, ticks), args.alerts)

        receiver.seen.clear()
        at_rest(rule(f"N{run}A".upper(), "live"), "/hook/live", "crossing tick -> webhook, at rest")
        receiver.seen.clear()
        at_rest(rule(f"N{run}B".upper(), "live", "dead"), "/hook/live",
                "the same, beside a dead channel (connection refused)")
        receiver.seen.clear()
        at_rest(rule(f"N{run}C".upper(), "live", "hung"), "/hook/live",
                "the same, beside a hung channel (never answers)")

        for keys in (["t0"], ["t0", "t1", "t2", "t3"]):
            receiver.seen.clear()
            ticks = rule(f"N{run}D{len(keys)}".upper(), *keys)
            for _ in range(args.burst):
                ticks.crossing(flush=False)
            ticks.producer.flush(60)
            fired = time.time()
            wanted = args.burst * len(keys)
            wait_until(lambda wanted=wanted: len(receiver.delivered_keys("/hook/t")) >= wanted, 600, "the burst")
            arrivals = sorted(s.at for s in receiver.requests("/hook/t"))
            took = arrivals[-1] - arrivals[0]
            print(f"burst of {args.burst} alerts to {len(keys)} channel(s): {len(arrivals)} deliveries in "
                  f"{took:.1f} s, {len(arrivals) / took:,.0f} a second ({len(arrivals) / took / len(keys):,.0f} per "
                  f"channel); the last {arrivals[-1] - fired:.1f} s after the ticks were published", flush=True)
    finally:
        for child in reversed(children):
            child.stop()
        for server in (receiver, dead, hung):
            server.close()
        scratch.remove(settings, PREFIX, DATABASE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
