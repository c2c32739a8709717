"""The dashboard's counters, gauges and histograms, served on /metrics through prometheus_client.

The counts are plain numbers the app bumps on its event loop (cheap on the hot path: a tick pushed to a client is
one addition); a collector reads them at scrape time into one registry per process, as the producer's do
(producer/metrics.py).
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from webui.health import Dependencies

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class Histogram:
    """Observations counted per bucket (the bucket a value falls in, not yet cumulative)."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def observe_ages(self, now: float, ticks: Iterable[dict]) -> None:
        """Each tick's age at `now` (epoch s), from its `published_at` (epoch ms; ticks without one are skipped):
        one call per message sent, not one per tick (it runs for every tick to every client)."""
        buckets, counts, now_ms = self.buckets, self.counts, now * 1000
        total, count = 0.0, 0
        for tick in ticks:
            published = tick.get("published_at")
            if published:
                age = max(0.0, (now_ms - published) / 1000)
                counts[bisect.bisect_left(buckets, age)] += 1
                total += age
                count += 1
        self.total += total
        self.count += count

    def family(self, name: str, about: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            cumulative.append((floatToGoString(bound), running))
        return HistogramMetricFamily(name, about, buckets=[*cumulative, ("+Inf", self.count)], sum_value=self.total)


def _family(kind: type, name: str, about: str, value: float | None = None, label: str = "",
            samples: Iterable[tuple[str, float]] = ()) -> Metric:
    """One family: a single value, or one sample per value of `label`."""
    metric = kind(name, about, labels=[label] if label else None)
    if label:
        for label_value, sample in samples:
            metric.add_metric([label_value], sample)
    else:
        metric.add_metric([], value)
    return metric


@dataclass(eq=False)  # identity: the registry keeps it as its collector
class Metrics:
    """Everything /metrics shows; mutated only on the event loop (the consumer thread hands over through it)."""

    clients: int = 0
    pushed: int = 0
    dropped: int = 0
    consumed: int = 0
    undecodable: int = 0
    unserved: int = 0  # ticks of symbols the dashboard does not serve (not in SYMBOLS): neither kept nor pushed
    snapshots: int = 0
    live_stale: int = 0  # 1 while the live consumer cannot reach Kafka or the registry
    errors: Counter[str] = field(default_factory=Counter)
    push_latency: Histogram = field(default_factory=Histogram)
    history_seconds: Histogram = field(default_factory=Histogram)
    deps: Dependencies | None = None  # what the app depends on, for the per-dependency series
    sockets: int = 0  # WebSockets open, from the handshake until the server has let them go
    refused: Counter[str] = field(default_factory=Counter)  # connections refused: host, origin, connections
    closed: Counter[str] = field(default_factory=Counter)  # sockets the server closed: rate_limit, slow
    loop_lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS, [0] * (len(LAG_BUCKETS) + 1)))
    lag_recent: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, lag) of the last 10 s
    registry: CollectorRegistry = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        now = time.monotonic()
        self.lag_recent.append((now, seconds))
        while self.lag_recent and self.lag_recent[0][0] < now - 10:
            self.lag_recent.pop(0)

    def lag_max(self) -> float:
        """The longest event-loop lag of the last 10 s."""
        return max((lag for _, lag in self.lag_recent), default=0.0)

    def collect(self) -> Iterator[Metric]:
        """The families, read from the counts at scrape time (a prometheus_client collector)."""
        counter, gauge = CounterMetricFamily, GaugeMetricFamily
        yield _family(gauge, "webui_connected_clients", "WebSocket clients connected now.", self.clients)
        yield _family(counter, "webui_messages_pushed", "Live ticks sent to WebSocket clients.", self.pushed)
        yield _family(counter, "webui_messages_dropped",
                      "Ticks dropped because a client's queue was full (slow client).", self.dropped)
        yield _family(counter, "webui_ticks_consumed", "Ticks read from Kafka.", self.consumed)
        yield _family(counter, "webui_ticks_undecodable", "Kafka records that were not decodable Avro ticks.",
                      self.undecodable)
        yield _family(counter, "webui_ticks_unserved", "Ticks of symbols the dashboard does not serve (SYMBOLS).",
                      self.unserved)
        yield _family(counter, "webui_snapshots", "Snapshots (history answers) sent.", self.snapshots)
        yield _family(counter, "webui_client_errors", "Error replies sent to clients, by reason.",
                      label="reason", samples=sorted(self.errors.items()))
        yield self.push_latency.family("webui_push_latency_seconds",
                                       "From the producer's published_at to the send to a client.")
        yield self.history_seconds.family("webui_history_seconds",
                                          "Time to build one snapshot (MongoDB query and bucketing).")
        yield _family(gauge, "webui_open_sockets", "WebSockets open, from the handshake until the server has let "
                      "them go (a closed client that reads nothing counts until the kernel drops it).", self.sockets)
        yield _family(counter, "webui_connections_refused", "Requests refused: a Host not served (host), a foreign "
                      "Origin (origin), over the socket caps (connections).",
                      label="reason", samples=sorted(self.refused.items()))
        yield _family(counter, "webui_connections_closed", "Sockets the server closed: a client that kept breaking "
                      "the rate limit (rate_limit), one that stopped reading (slow).",
                      label="reason", samples=sorted(self.closed.items()))
        yield self.loop_lag.family("webui_event_loop_lag_seconds", "How late the event loop woke a 100 ms sleeper.")
        yield _family(gauge, "webui_event_loop_lag_max_seconds", "The longest event-loop lag of the last 10 s.",
                      round(self.lag_max(), 6))
        yield _family(gauge, "webui_live_feed_stale",
                      "1 while the live consumer cannot reach Kafka or the schema registry.", self.live_stale)
        if self.deps is not None:
            deps = self.deps.all()
            yield _family(gauge, "webui_dependency_up", "1 when the dependency is reachable, 0 during an outage.",
                          label="dependency", samples=[(d.name, 0 if d.is_down else 1) for d in deps])
            yield _family(gauge, "webui_dependency_down_seconds",
                          "How long the current outage has lasted (0 when up).", label="dependency",
                          samples=[(d.name, d.status().get("down_for_s", 0)) for d in deps])
            yield _family(counter, "webui_dependency_outages",
                          "Outages of the dependency seen since the app started.", label="dependency",
                          samples=[(d.name, d.outage.count) for d in deps])

    def render(self) -> str:
        """Prometheus text exposition format, through prometheus_client."""
        return generate_latest(self.registry).decode()
