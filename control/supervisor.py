"""`control supervise`: the stack's watchdog. It restarts what died and says so, once.

Two duties, checked every couple of seconds:
- Native stack processes (`control stack up` starts this supervisor as the stack's last component).
  A component whose pid file exists but whose process is gone (kill -9, OOM, a crash) is started
  again, after 1 s, then 2, 4, ... up to 60 s between tries. More than `max_restarts` restarts within
  `flap_window` seconds mark it FLAPPING: the supervisor stops trying and `control stack status` says
  so; `control stack up` clears it. `control stack hold NAME` keeps a component down on purpose
  (maintenance, fault tests) until `control stack release NAME`.
- Kafka Connect connectors. The MongoDB sink fails its task on any error that is not a data error:
  a store that restarts under it (connection refused, server selection timeout) fails it for good,
  whatever `mongo.errors.tolerance` says. A FAILED connector or task is restarted
  (`POST /connectors/<name>/restart?includeTasks=true&onlyFailed=true`) at once, then with backoff
  (2, 4, ... up to 30 s) while it keeps failing; the backoff resets once it has run for a minute.
  Records are not lost: the task's offsets were not committed past what it wrote, and the sink writes
  by `_id`, so what is redelivered replaces itself.

Counts and states are kept in `<state>/run/supervisor.json`, which `control stack status` and
`control status` read.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field

import requests

from control.stack import processes, supervision
from control.stack.components import Component
from control.stack.components import components as stack_components
from cryptopulse.errors import StackError
from cryptopulse.outage import Outage
from cryptopulse.settings import Settings

log = logging.getLogger("supervisor")

CHECK_EVERY = 2.0


@dataclass
class Record:
    """What the supervisor knows about one component or connector."""

    state: str = "running"  # running | down | restarting | flapping | held | failed
    restarts: int = 0
    last_restart: float | None = None  # epoch seconds
    last_error: str | None = None
    recent: list[float] = field(default_factory=list)  # restart times within the flap window
    next_try: float = 0.0  # epoch seconds: not before this
    delay: float = 0.0
    running_since: float | None = None


class Supervisor:
    def __init__(self, settings: Settings, native: bool = True, max_restarts: int = 5, flap_window: float = 300.0,
                 clock=time.time, components: list[Component] | None = None) -> None:
        self.settings = settings
        self.native = native
        self.max_restarts = max_restarts
        self.flap_window = flap_window
        self.clock = clock
        self.state_dir = settings.state_dir
        watched = components if components is not None else stack_components(settings)
        self.components = {c.name: c for c in watched if c.name != "supervisor"}
        previous = supervision.supervision_report(self.state_dir)
        self.records: dict[str, dict[str, Record]] = {
            kind: {name: Record(**{k: v for k, v in rec.items() if k in Record.__dataclass_fields__})
                   for name, rec in previous.get(kind, {}).items()}
            for kind in ("components", "connectors")
        }
        self.connect = Outage("Kafka Connect", log)

    # --- native processes ---

    def check_components(self) -> None:
        records = self.records["components"]
        for name, component in self.components.items():
            record = records.setdefault(name, Record())
            pid_file = component.pid_file(self.state_dir)
            if supervision.hold_file(self.state_dir, name).exists():
                if record.state != "held":
                    log.warning("%s: held by an operator (%s); not restarting it", name,
                                supervision.hold_file(self.state_dir, name))
                record.state = "held"
                continue
            if not pid_file.exists():  # stopped on purpose (`control stack down`), or never started
                record.state = "stopped"
                continue
            if component.pid(self.state_dir) is not None:
                if record.state in ("down", "restarting", "held", "stopped"):
                    if record.state != "stopped":
                        log.warning("%s: running again (pid %s)", name, component.pid(self.state_dir))
                    record.state = "running"
                    record.running_since = self.clock()
                elif record.state == "running" and record.running_since is None:
                    record.running_since = self.clock()
                if record.running_since and self.clock() - record.running_since > self.flap_window:
                    record.delay = 0.0
                continue
            if record.state == "flapping":
                continue
            now = self.clock()
            if record.state == "running":
                record.state = "down"
                record.last_error = f"process exited; see {component.log_file(self.state_dir)}"
                record.running_since = None
                log.warning("%s: process gone (%s); restarting it", name, record.last_error)
                record.delay = record.delay or 1.0
                record.next_try = now + record.delay
            if now < record.next_try:
                continue
            record.recent = [t for t in record.recent if now - t < self.flap_window]
            if len(record.recent) >= self.max_restarts:
                record.state = "flapping"
                log.error("%s: FLAPPING, %d restarts within %.0f s; giving up until `control stack up`",
                          name, len(record.recent), self.flap_window)
                continue
            record.state = "restarting"
            record.restarts += 1
            record.last_restart = now
            record.recent.append(now)
            self._save()
            try:
                processes.start(component, self.state_dir, say=lambda line: log.info("%s", line))
                record.state = "running"
                record.running_since = self.clock()
                log.warning("%s: restarted (restart #%d)", name, record.restarts)
            except StackError as error:
                record.last_error = str(error).splitlines()[0]
                log.warning("%s: restart failed (%s); next try in %.0f s", name, record.last_error,
                            min(60.0, record.delay * 2))
                record.state = "down"
            record.delay = min(60.0, max(1.0, record.delay * 2))
            record.next_try = self.clock() + record.delay

    # --- connectors ---

    def check_connectors(self) -> None:
        try:
            response = requests.get(f"{self.settings.connect_url}/connectors?expand=status", timeout=10)
            response.raise_for_status()
            statuses = response.json()
        except (requests.RequestException, ValueError) as error:
            self.connect.down(type(error).__name__)
            return
        self.connect.up()
        records = self.records["connectors"]
        now = self.clock()
        for name, data in statuses.items():
            status = data["status"]
            record = records.setdefault(name, Record())
            failed = [t for t in status["tasks"] if t["state"] == "FAILED"]
            connector_failed = status["connector"]["state"] == "FAILED"
            if not failed and not connector_failed:
                if record.state == "failed":
                    log.warning("connector %s: RUNNING again after %d restart(s)", name, record.restarts)
                if record.state != "running":
                    record.running_since = now
                record.state = "running"
                if record.running_since and now - record.running_since > 60:
                    record.delay = 0.0
                continue
            trace = (failed[0].get("trace") if failed else status["connector"].get("trace")) or ""
            error = trace.strip().splitlines()[0][:300] if trace.strip() else "FAILED"
            if record.state != "failed":
                log.warning("connector %s: %s FAILED (%s); restarting it", name,
                            f"task {failed[0]['id']}" if failed else "connector", error)
                record.state = "failed"
                record.running_since = None
            record.last_error = error
            if now < record.next_try:
                continue
            try:
                requests.post(f"{self.settings.connect_url}/connectors/{name}/restart",
                              params={"includeTasks": "true", "onlyFailed": "true"}, timeout=30)
            except requests.RequestException as err:
                self.connect.down(type(err).__name__)
                continue
            record.restarts += 1
            record.last_restart = now
            record.delay = min(30.0, record.delay * 2) if record.delay else 2.0
            record.next_try = now + record.delay
            log.info("connector %s: restart #%d requested", name, record.restarts)
        for gone in set(records) - set(statuses):
            del records[gone]

    # --- the loop ---

    def _save(self) -> None:
        path = supervision.supervision_file(self.state_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"updated": self.clock(), "pid": os.getpid(),
                **{kind: {name: asdict(rec) for name, rec in recs.items()} for kind, recs in self.records.items()}}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    def check(self) -> None:
        if self.native:
            self.check_components()
        self.check_connectors()
        self._save()

    def run(self, stop: threading.Event) -> None:
        log.warning("supervising %s%s every %.0f s", "the stack's processes and " if self.native else "",
                    f"the connectors of {self.settings.connect_url}", CHECK_EVERY)
        while not stop.is_set():
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watchdog must outlive its own bugs' consequences too
                log.exception("supervisor check failed; trying again")
            stop.wait(CHECK_EVERY)


def main(settings: Settings, native: bool) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    Supervisor(settings, native=native).run(stop)
    return 0
