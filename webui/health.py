"""What the dashboard depends on (Kafka, the schema registry, MongoDB), as its retry loops and probes see it.

Several parts of the app talk to the same dependency: the live consumer and the two views to Kafka, the
views and the history queries to MongoDB, every decoder to the registry. Each retry loop reports
`down(who, reason)` while it fails and `up(who)` once it succeeds; a `Dependency` is down while any of
them is failing, so the log gets one warning when an outage begins and one line when it ends, whoever
sees it (cryptopulse.outage.Outage), and /healthz and /metrics read the same state.

The rule that keeps it from sticking: only a loop that keeps retrying until it succeeds may report `down`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import requests
from confluent_kafka import KafkaError, KafkaException

from cryptopulse.outage import Outage
from cryptopulse.redact import redact

log = logging.getLogger("webui")

def plain(error: object, limit: int = 160) -> str:
    """An error as one short line for /healthz and the log: no traceback, no driver's topology dump."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if isinstance(error, KafkaError):
        text = error.str()
    else:
        text = str(error) or type(error).__name__
    text = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    for cut in (", Timeout: ", " Topology Description: ", ", full error: ", " (configured timeouts"):  # pymongo
        text = text.split(cut, 1)[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Dependency:
    """One dependency: down while at least one reporter (a retry loop, a probe) is failing on it. Thread-safe."""

    def __init__(self, name: str, what: str, logger: logging.Logger = log,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name  # "kafka", "registry", "mongo": the key in /healthz and the metrics' label
        self.outage = Outage(what, logger, clock)
        self._failing: dict[str, str] = {}  # reporter -> its latest reason
        self._lock = threading.Lock()

    @property
    def is_down(self) -> bool:
        return self.outage.is_down

    def down(self, who: str, reason: object) -> bool:
        """`who` failed on this dependency; returns True when this begins an outage (the one warning)."""
        text = plain(reason)
        with self._lock:
            self._failing[who] = text
            return self.outage.down(text)

    def up(self, who: str) -> bool:
        """`who` succeeded; returns True when this ends the outage (the one line saying it is back)."""
        with self._lock:
            if self._failing.pop(who, None) is None or self._failing:
                return False
            return self.outage.up()

    def reporter(self, who: str) -> Reporter:
        """`who`'s view of this dependency, for a retry loop that reports to a `cryptopulse.kafka.Reporter`."""
        return Reporter(self, who)

    def failing(self, who: str) -> bool:
        with self._lock:
            return who in self._failing

    def status(self) -> dict[str, Any]:
        """{"ok": true} or {"ok": false, "down_for_s": .., "error": .., "seen_by": [..]}."""
        with self._lock:
            body = self.outage.status()
            if not body["ok"]:
                body["seen_by"] = sorted(self._failing)
            return body


@dataclass(frozen=True)
class Reporter:
    """One reporter's view of a `Dependency`: what a retry loop of cryptopulse.kafka (a KafkaWatch, a Reader)
    tells when it fails and when it works again."""

    dependency: Dependency
    who: str

    def down(self, reason: object) -> bool:
        return self.dependency.down(self.who, reason)

    def up(self) -> bool:
        return self.dependency.up(self.who)


class Dependencies:
    """The three things the dashboard needs, one `Dependency` each."""

    def __init__(self, logger: logging.Logger = log, clock: Callable[[], float] = time.monotonic) -> None:
        self.kafka = Dependency("kafka", "Kafka", logger, clock)
        self.registry = Dependency("registry", "Schema registry", logger, clock)
        self.mongo = Dependency("mongo", "MongoDB", logger, clock)

    def all(self) -> list[Dependency]:
        return [self.kafka, self.registry, self.mongo]

    def down(self) -> list[str]:
        return [d.name for d in self.all() if d.is_down]


def registry_probe(url: str, timeout: float) -> None:
    """Raises unless the registry answers (any HTTP answer under 500 is an answer), with a one-line reason (the
    URL without its credentials)."""
    shown = redact(url)
    try:
        response = requests.get(f"{url.rstrip('/')}/schemas/types", timeout=timeout)
    except requests.Timeout:
        raise RuntimeError(f"{shown} did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
        raise RuntimeError(f"{shown} did not answer ({errno.group(1) if errno else type(exc).__name__})") from None
    if response.status_code >= 500:
        raise RuntimeError(f"{shown} answered HTTP {response.status_code}")


class Monitor:
    """Probes MongoDB (ping) and the registry now and then, so that their outages are seen and logged even
    when no chart is asked for; /healthz runs a probe too, so it answers with the state of that moment."""

    def __init__(self, deps: Dependencies, mongo_ping: Callable[[], Awaitable[dict[str, Any]]] | None,
                 registry_url: str | None, every: float = 5.0) -> None:
        self.deps = deps
        self.mongo_ping = mongo_ping
        self.registry_url = registry_url
        self.every = every
        self.mongo: dict[str, Any] = {"ok": False, "error": "not checked yet"}
        self.registry: dict[str, Any] = {"ok": False, "error": "not checked yet"}
        self.checked = 0.0  # time.monotonic() of the last finished check
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()

    async def check(self, timeout: float = 3.0) -> None:
        await asyncio.gather(self._check_mongo(timeout), self._check_registry(timeout))
        self.checked = time.monotonic()

    async def fresh(self, max_age: float = 1.0, timeout: float = 2.0) -> None:
        """Check unless a check finished less than `max_age` seconds ago (what /healthz calls)."""
        if time.monotonic() - self.checked >= max_age:
            await self.check(timeout)

    async def _check_mongo(self, timeout: float) -> None:
        if self.mongo_ping is None:
            self.mongo = {"ok": False, "error": "not started"}
            return
        try:
            answer = await asyncio.wait_for(self.mongo_ping(), timeout)
        except TimeoutError:
            known = self.mongo.get("error") if self.deps.mongo.is_down else None  # the driver's reason, if any
            answer = {"ok": False, "error": known or f"no answer to ping within {timeout:g} s"}
        if answer.get("ok"):
            self.deps.mongo.up("probe")
        else:
            answer = {**answer, "error": plain(answer.get("error") or "ping failed")}
            self.deps.mongo.down("probe", answer["error"])
        self.mongo = answer

    async def _check_registry(self, timeout: float) -> None:
        if self.registry_url is None:
            self.registry = {"ok": True, "note": "not probed"}
            return
        started = time.perf_counter()
        try:
            await asyncio.to_thread(registry_probe, self.registry_url, timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot reach it", said in one line
            self.deps.registry.down("probe", exc)
            self.registry = {"ok": False, "error": plain(exc)}
            return
        self.deps.registry.up("probe")
        self.registry = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}

    def poke(self) -> None:
        """Check soon (a history query just failed)."""
        self._poke.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.check(timeout=6.0)  # past the driver's 5 s server selection: its reason, not ours
            except Exception:  # noqa: BLE001 - a probe's bug must not end the probing
                log.exception("dependency probe failed")
            self._poke.clear()
            try:
                await asyncio.wait_for(self._poke.wait(), self.every)
            except TimeoutError:
                pass


def health_report(deps: Dependencies, kafka_detail: dict[str, Any], mongo_detail: dict[str, Any],
                  registry_detail: dict[str, Any], clients: int, live: dict[str, Any] | None = None,
                  views: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """/healthz's body and status code: 200 when every dependency is reachable and the live consumer is
    consuming; otherwise 503 naming what is down (`down`) and, for each, since when and why, in one line."""
    body: dict[str, Any] = {}
    down = []
    for dependency, detail in ((deps.kafka, kafka_detail), (deps.mongo, mongo_detail),
                               (deps.registry, registry_detail)):
        state = dependency.status()
        entry = {**detail, **state} if not state["ok"] else dict(detail)
        entry["ok"] = bool(state["ok"] and detail.get("ok", True))
        if not entry["ok"]:
            down.append(dependency.name)
        body[dependency.name] = entry
    ok = not down
    out: dict[str, Any] = {"status": "ok" if ok else "degraded", "down": down, **body, "clients": clients}
    if live is not None:
        out["live"] = live
    if views:  # not part of ok: without them, charts read MongoDB (slower, still right)
        out["views"] = views
    return out, 200 if ok else 503
