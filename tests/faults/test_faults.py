"""Kill a part of the stack with -9 while the demo's processes run; the pipeline must heal with no human step.

For each fault: the producer publishes ticks of two symbols of its own (before, during and after the
outage), the roll-up and a dashboard run beside it; the part is killed, kept down for a while with
`control stack hold`, then released to the supervisor, which starts it again as it would in the demo.
Then: every published tick is in MongoDB exactly once, within 60 s of the part's return; the candles
equal those of the same ticks rolled up by a fault-free CandleBook; no demo process exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from control.stack import components, processes
from cryptopulse import topics
from cryptopulse.avro import AvroCodec
from cryptopulse.settings import Settings
from cryptopulse.times import epoch_ms
from streams.candles import CandleBook
from tests import children
from tests.integration.conftest import wait_for

WEBUI_PORT = 8779
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # figures of each run (ignored by git)
BEFORE_S = 8  # publishing before the fault
AFTER_S = 8  # publishing after the part is back
RESUME_WITHIN_S = 60

# (component, seconds kept down after the kill; 0: the supervisor restarts it at once)
FAULTS = [("kafka", 10), ("connect", 0), ("ferretdb", 60), ("registry", 20)]


class Demo:
    """The demo's three processes, in the test namespace (inherited from the environment), logging to files."""

    def __init__(self, tmp_path: Path, symbols: list[str]) -> None:
        self.logs = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}
        self._start("streams", ["streams", "run", "--no-retention", "--close-on-stop"])
        self._start("webui", ["webui", "--port", str(WEBUI_PORT)])
        self._start("producer", ["producer", "run", "--source", "simulated", "--symbols", ",".join(symbols),
                                 "--interval-ms", "100", "--metrics-port", "-1"])

    def _start(self, name: str, cmd: list[str]) -> None:
        # the producer is stopped with Ctrl-C (SIGINT, `stop`): started as a terminal starts a foreground command,
        # so that SIGINT is not ignored when this test run was started in the background (tests/children.py)
        self.procs[name] = children.start(cmd, self.logs / f"{name}.log", at_a_terminal=name == "producer")

    def log(self, name: str, lines: int = 40) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        return f"--- {name} ---\n" + "\n".join(text[-lines:])

    def all_logs(self) -> str:
        return "\n".join(self.log(name) for name in self.procs)

    def exited(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def stop(self, name: str, timeout: float = 90) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if name == "producer" else signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop_all(self) -> None:
        for name in self.procs:
            self.stop(name, timeout=30)


def component(settings: Settings, name: str) -> components.Component:
    return next(c for c in components.components(settings) if c.name == name)


def published(settings: Settings, symbols: set[str]) -> list[tuple[tuple[int, int], dict]]:
    """Every tick of `symbols` in the prices topic, in topic order, with its (partition, offset)."""
    codec = AvroCodec(settings, settings.prices_topic, "tick")
    ticks = []
    for message in topics.read_to_end(settings, settings.prices_topic):
        try:
            tick = codec.decode(message.value())
        except Exception:  # noqa: BLE001 - other tests' deliberately broken records
            continue
        if tick["symbol"] in symbols:
            ticks.append(((message.partition(), message.offset()), tick))
    return ticks


def reference_candles(ticks: list[tuple[tuple[int, int], dict]]) -> dict[str, dict]:
    """The same ticks rolled up by a CandleBook with no fault in between: every minute final."""
    book = CandleBook(grace_ms=10_000, update_every=0.0, idle_close=1e9)
    finals = {}
    for position, tick in ticks:
        book.add(tick["symbol"], tick["source"], epoch_ms(tick["ts"]), float(tick["price"]), 0.0, position)
        finals.update({c.id: c for c in book.poll(0.0) if c.final})
    finals.update({c.id: c for c in book.close_all()})
    return {cid: {"open": c.open, "high": c.high, "low": c.low, "close": c.close, "ticks": c.ticks}
            for cid, c in finals.items()}


@pytest.mark.parametrize(("name", "down_s"), FAULTS, ids=[f"{n}-down-{s}s" for n, s in FAULTS])
def test_the_pipeline_heals(settings: Settings, tmp_path: Path, name: str, down_s: int) -> None:
    from pymongo import MongoClient

    tag = uuid.uuid4().hex[:5].upper()
    symbols = [f"F{tag}A", f"F{tag}B"]
    part = component(settings, name)
    demo = Demo(tmp_path, symbols)
    mongo = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=120_000)
    db = mongo[settings.database]
    try:
        time.sleep(BEFORE_S)
        assert not demo.exited(), f"a demo process exited before the fault: {demo.exited()}\n{demo.all_logs()}"

        # the fault: kill -9, kept down `down_s` seconds, then handed back to the supervisor
        pid = part.pid(settings.state_dir)
        assert pid, f"{name} is not running"
        if down_s:
            processes.hold(settings, name)
        os.kill(pid, signal.SIGKILL)
        time.sleep(down_s)
        processes.release(settings, name)
        wait_for(lambda: part.pid(settings.state_dir) not in (None, pid) and part.ready(), 240,
                 f"the supervisor to bring {name} back")
        back = time.monotonic()

        time.sleep(AFTER_S)
        assert not demo.exited(), f"demo processes exited during the fault: {demo.exited()}\n{demo.all_logs()}"
        assert demo.stop("producer") == 0, demo.log("producer")
        ticks = published(settings, set(symbols))
        ids = [t["_id"] for _, t in ticks]
        assert len(ids) == len(set(ids)), "a tick was published twice"
        assert len(ids) > (BEFORE_S + AFTER_S) * 10, f"only {len(ids)} ticks published\n{demo.log('producer')}"

        def stored() -> bool:
            return db.prices.count_documents({"symbol": {"$in": symbols}}) >= len(ids)

        wait_for(stored, RESUME_WITHIN_S + AFTER_S, f"all {len(ids)} ticks in MongoDB after {name} came back")
        resumed_s = time.monotonic() - back
        found = [d["_id"] for d in db.prices.find({"symbol": {"$in": symbols}}, {"_id": 1})]
        assert sorted(found) == sorted(ids), "MongoDB does not hold exactly the published ticks"
        figures = f"{name} down {down_s} s: {len(ids)} ticks, all stored once, {resumed_s:.1f} s after it came back"
        print(figures)
        ARTIFACTS.mkdir(exist_ok=True)
        with (ARTIFACTS / "faults.txt").open("a") as out:
            out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {figures}\n")

        assert set(demo.exited()) == {"producer"}, f"a demo process exited: {demo.exited()}\n{demo.all_logs()}"
        wait_for(lambda: _healthy(), 60, "the dashboard's /healthz to answer 200 again")

        expected = reference_candles(ticks)

        def candles_match(final_only: bool) -> bool:
            query = {"symbol": {"$in": symbols}, **({"final": True} if final_only else {})}
            docs = {d["_id"]: {k: d[k] for k in ("open", "high", "low", "close", "ticks")}
                    for d in db.candles_1m.find(query)}
            return docs == expected

        # the roll-up has read every tick (its open minutes are published as they grow) before it is stopped: it
        # rejoins its group after the fault and catches up, which takes a while on a busy machine
        wait_for(lambda: candles_match(False), 120, "the roll-up to have read every tick (open minutes included)")
        assert demo.stop("streams") == 0, demo.log("streams")  # --close-on-stop: every minute final
        wait_for(lambda: candles_match(True), 90, f"the {len(expected)} candles to equal a fault-free roll-up")
    finally:
        demo.stop_all()
        mongo.close()


def _healthy() -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{WEBUI_PORT}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False
