"""Riding out an outage: say once that a dependency is down, once that it is back, and nothing in between.

Every long-running process (producer, streams, webui, control supervise) keeps one `Outage` per thing it
talks to. Retries call `down(reason)` as often as they like; only the first call of an outage logs (a
warning), and `up()` logs one line with how long it lasted. `librdkafka_logger` routes librdkafka's own
log lines through Python logging with a rate limit, so a broker that is away for minutes does not fill
the terminal with "Connection refused".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class Outage:
    """Whether one dependency (Kafka, the registry, MongoDB, ...) is reachable, as last seen by a retry loop."""

    def __init__(self, what: str, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.log = log
        self.clock = clock
        self.since: float | None = None  # when the current outage began, on `clock`
        self.reason: str | None = None
        self.count = 0  # outages seen since start

    @property
    def is_down(self) -> bool:
        return self.since is not None

    def down(self, reason: object) -> bool:
        """Record a failed attempt; logs only when this begins an outage. Returns True if it did."""
        self.reason = str(reason) or type(reason).__name__
        if self.since is not None:
            return False
        self.since = self.clock()
        self.count += 1
        self.log.warning("%s unavailable (%s); waiting for it, retrying quietly", self.what, self.reason)
        return True

    def up(self) -> bool:
        """Record a successful attempt; logs only when this ends an outage. Returns True if it did."""
        if self.since is None:
            return False
        lasted = self.clock() - self.since
        self.since = None
        self.log.warning("%s is back after %.1f s", self.what, lasted)
        return True

    def status(self) -> dict[str, object]:
        """For /healthz, /metrics and status screens."""
        if self.since is None:
            return {"ok": True}
        return {"ok": False, "down_for_s": round(self.clock() - self.since, 1), "error": self.reason}


class Backoff:
    """Delays for retries: `first`, doubling up to `cap` seconds; `reset()` after a success."""

    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first


class RateLimitFilter(logging.Filter):
    """Lets through at most `burst` records per `period` seconds, then one line saying how many were held back."""

    def __init__(self, period: float = 60.0, burst: int = 5, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.period = period
        self.burst = burst
        self.clock = clock
        self._lock = threading.Lock()
        self._window_start = float("-inf")
        self._passed = 0
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = self.clock()
            if now - self._window_start >= self.period:
                if self._held:
                    record.msg = f"({self._held} similar lines held back in the last {self.period:.0f} s) {record.msg}"
                self._window_start, self._passed, self._held = now, 0, 0
            if self._passed < self.burst:
                self._passed += 1
                return True
            self._held += 1
            return False


def librdkafka_logger(client: str) -> logging.Logger:
    """The logger to give a confluent-kafka client as its `logger` config: rate-limited, one per client name."""
    logger = logging.getLogger(f"librdkafka.{client}")
    if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
        logger.addFilter(RateLimitFilter())
    return logger
