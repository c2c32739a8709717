"""Chaos: the demo's processes under load while random parts of the native stack are killed with -9.

    python3 bench/chaos.py [--minutes 10] [--rate 150] [--seed 1]

Runs the producer (simulated market, `--rate` ticks/s), the candle roll-up and a dashboard in a namespace of
their own (topics, sinks, groups and subjects `bench-chaos-*`, database `bench_chaos`, all removed at the
end), then, every 30-90 s, kills one of Kafka, the registry, FerretDB or Connect with SIGKILL, keeps it down
0-30 s (`control stack hold`) and hands it back to the stack's supervisor. A demo process that exits is
started again (as `./run demo` does) and counted. At the end the producer stops and the bench waits for the
sink; then it prints ticks published, ticks stored, lost, duplicates, the longest stall of the stored count,
the restarts of each part and of each connector, and demo process exits. Lost and duplicated must be 0.

Needs `control stack up` (with its supervisor) and the project's commands on PATH (`./run` puts .venv/bin there;
else `source .venv/bin/activate`). Never touches the user's topics or crypto_db.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

PREFIX = "bench-chaos-"
DATABASE = "bench_chaos"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from control import scratch  # noqa: E402

os.environ.update(scratch.environment(PREFIX, DATABASE))  # before Settings() is read; the demo's processes inherit it

from pymongo import MongoClient  # noqa: E402

from control import connectors  # noqa: E402
from control.stack import components, processes, supervision  # noqa: E402
from cryptopulse import topics  # noqa: E402
from cryptopulse.avro import AvroCodec  # noqa: E402
from cryptopulse.settings import Settings  # noqa: E402

PARTS = ["kafka", "registry", "ferretdb", "connect"]
SYMBOLS = ["BTC", "ETH", "XRP"]
WEBUI_PORT = 8781


class Demo:
    """The demo's processes, each started again when it exits (counted), logging under one folder."""

    def __init__(self, logs: Path, rate: int) -> None:
        interval = max(1, round(1000 * len(SYMBOLS) / rate))
        self.commands = {
            "producer": ["producer", "run", "--source", "simulated", "--symbols", ",".join(SYMBOLS),
                         "--interval-ms", str(interval), "--metrics-port", "-1"],
            "streams": ["streams", "run", "--no-retention"],
            "webui": ["webui", "--port", str(WEBUI_PORT)],
        }
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.exits: Counter[str] = Counter()
        self.stopping = False
        for name in self.commands:
            self._start(name)

    def _start(self, name: str) -> None:
        out = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(self.commands[name], stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def keep(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None and not self.stopping:
                self.exits[name] += 1
                print(f"  {name} exited ({proc.returncode}); starting it again in 1 s", flush=True)
                time.sleep(1)
                self._start(name)

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGINT if name == "producer" else signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()


class StallMeter(threading.Thread):
    """Samples the stored tick count every second: the longest time it did not grow while ticks were due."""

    def __init__(self, collection) -> None:
        super().__init__(daemon=True)
        self.collection = collection
        self.longest = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        last_count, last_growth = -1, time.monotonic()
        while not self.done.wait(1.0):
            try:
                count = self.collection.estimated_document_count()
            except Exception:  # noqa: BLE001 - the store being down is what a stall is
                count = last_count
            now = time.monotonic()
            if count > last_count:
                last_count, last_growth = count, now
            self.longest = max(self.longest, now - last_growth)


def restarts(settings: Settings) -> dict[str, int]:
    report = supervision.supervision_report(settings.state_dir)
    counts = {name: r.get("restarts", 0) for name, r in report["components"].items()}
    counts.update({f"connector {name}": r.get("restarts", 0) for name, r in report["connectors"].items()})
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=150, help="ticks per second the producer publishes")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    settings = Settings()
    assert settings.database == DATABASE and settings.prices_topic.startswith(PREFIX)
    parts = {c.name: c for c in components.components(settings)}
    if not all(parts[name].pid(settings.state_dir) for name in [*PARTS, "supervisor"]):
        print("chaos: start the stack first (`control stack up`): it needs every part and the supervisor")
        return 2
    scratch.remove(settings, PREFIX, DATABASE)
    connectors.deploy(settings, say=lambda line: None)
    before = restarts(settings)
    logs = settings.state_dir / "logs" / "chaos"
    logs.mkdir(parents=True, exist_ok=True)
    client = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=300_000)
    prices = client[DATABASE]["prices"]
    meter = StallMeter(prices)
    demo = Demo(logs, args.rate)
    meter.start()
    kills: Counter[str] = Counter()
    started = time.monotonic()
    end = started + args.minutes * 60
    print(f"chaos: {args.minutes:g} min at ~{args.rate} ticks/s; logs in {logs}", flush=True)
    try:
        next_kill = started + rng.uniform(20, 40)
        while time.monotonic() < end:
            demo.keep()
            if time.monotonic() >= next_kill:
                name = rng.choice(PARTS)
                down = rng.choice([0, 5, 10, 20, 30])
                part = parts[name]
                pid = part.pid(settings.state_dir)
                if pid:
                    if down:
                        processes.hold(settings, name)
                    os.kill(pid, signal.SIGKILL)
                    kills[name] += 1
                    at = time.monotonic() - started
                    print(f"  {at:5.0f} s  kill -9 {name} (pid {pid}), down {down} s", flush=True)
                    deadline = time.monotonic() + down
                    while time.monotonic() < deadline:
                        demo.keep()
                        time.sleep(0.5)
                    processes.release(settings, name)
                    while not (part.pid(settings.state_dir) and part.ready()) and time.monotonic() < end + 300:
                        demo.keep()
                        time.sleep(0.5)
                    print(f"  {time.monotonic() - started:5.0f} s  {name} back", flush=True)
                next_kill = time.monotonic() + rng.uniform(30, 90)
            time.sleep(0.5)
        demo.stopping = True
        demo.stop("producer")
        codec = AvroCodec(settings, settings.prices_topic, "tick")
        ids = [codec.decode(m.value())["_id"] for m in topics.read_to_end(settings, settings.prices_topic, 300)]
        wait_until = time.monotonic() + 300
        while prices.count_documents({}) < len(set(ids)) and time.monotonic() < wait_until:
            time.sleep(1)
        stored = prices.count_documents({})
        meter.done.set()
        for name in ("streams", "webui"):
            demo.stop(name)
        after = restarts(settings)
        published = len(set(ids))
        print(f"ticks published: {published:,} ({len(ids):,} records in the topic)")
        print(f"ticks stored:    {stored:,}")
        print(f"lost:            {published - stored:,}")
        print(f"duplicates:      {len(ids) - published:,} in the topic, "
              f"{max(0, stored - published):,} in MongoDB")
        print(f"longest stall:   {meter.longest:.0f} s (stored count not growing)")
        print("kills:           " + ", ".join(f"{k} {n}" for k, n in sorted(kills.items())))
        print("restarts:        " + ", ".join(f"{k} {after.get(k, 0) - before.get(k, 0)}" for k in sorted(after)
                                              if after.get(k, 0) - before.get(k, 0)))
        print("demo exits:      " + (", ".join(f"{k} {n}" for k, n in demo.exits.items()) or "none"))
        return 0 if published == stored and len(ids) == published else 1
    finally:
        demo.stopping = True
        for name, proc in demo.procs.items():
            if proc.poll() is None:
                demo.stop(name)
        client.close()
        scratch.remove(settings, PREFIX, DATABASE)


if __name__ == "__main__":
    sys.exit(main())
