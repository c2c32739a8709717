"""Counters and a latency histogram rendered as Prometheus text; no client library needed for a handful of series."""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from webui.health import Dependencies

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def render(self, name: str) -> list[str]:
        lines, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines += [f"{name}_sum {self.total:.6f}", f"{name}_count {self.count}"]
        return lines


@dataclass
class Metrics:
    """Everything /metrics shows; mutated only on the event loop (the consumer thread hands over through it)."""

    clients: int = 0
    pushed: int = 0
    dropped: int = 0
    consumed: int = 0
    undecodable: int = 0
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

    def observe_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        now = time.monotonic()
        self.lag_recent.append((now, seconds))
        while self.lag_recent and self.lag_recent[0][0] < now - 10:
            self.lag_recent.pop(0)

    def lag_max(self) -> float:
        """The longest event-loop lag of the last 10 s."""
        return max((lag for _, lag in self.lag_recent), default=0.0)

    def render(self) -> str:
        out = [
            "# HELP webui_connected_clients WebSocket clients connected now.",
            "# TYPE webui_connected_clients gauge",
            f"webui_connected_clients {self.clients}",
            "# HELP webui_messages_pushed_total Live ticks sent to WebSocket clients.",
            "# TYPE webui_messages_pushed_total counter",
            f"webui_messages_pushed_total {self.pushed}",
            "# HELP webui_messages_dropped_total Ticks dropped because a client's queue was full (slow client).",
            "# TYPE webui_messages_dropped_total counter",
            f"webui_messages_dropped_total {self.dropped}",
            "# HELP webui_ticks_consumed_total Ticks read from Kafka.",
            "# TYPE webui_ticks_consumed_total counter",
            f"webui_ticks_consumed_total {self.consumed}",
            "# HELP webui_ticks_undecodable_total Kafka records that were not decodable Avro ticks.",
            "# TYPE webui_ticks_undecodable_total counter",
            f"webui_ticks_undecodable_total {self.undecodable}",
            "# HELP webui_snapshots_total Snapshots (history answers) sent.",
            "# TYPE webui_snapshots_total counter",
            f"webui_snapshots_total {self.snapshots}",
            "# HELP webui_client_errors_total Error replies sent to clients, by reason.",
            "# TYPE webui_client_errors_total counter",
        ]
        out += [f'webui_client_errors_total{{reason="{reason}"}} {n}' for reason, n in sorted(self.errors.items())]
        out += ["# HELP webui_push_latency_seconds From the producer's published_at to the send to a client.",
                "# TYPE webui_push_latency_seconds histogram"]
        out += self.push_latency.render("webui_push_latency_seconds")
        out += ["# HELP webui_history_seconds Time to build one snapshot (MongoDB query and bucketing).",
                "# TYPE webui_history_seconds histogram"]
        out += self.history_seconds.render("webui_history_seconds")
        out += ["# HELP webui_open_sockets WebSockets open, from the handshake until the server has let them go "
                "(a closed client that reads nothing counts until the kernel drops it).",
                "# TYPE webui_open_sockets gauge", f"webui_open_sockets {self.sockets}"]
        out += ["# HELP webui_connections_refused_total Requests refused: a Host not served (host), a foreign Origin "
                "(origin), over the socket caps (connections).",
                "# TYPE webui_connections_refused_total counter"]
        out += [f'webui_connections_refused_total{{reason="{r}"}} {n}' for r, n in sorted(self.refused.items())]
        out += ["# HELP webui_connections_closed_total Sockets the server closed: a client that kept breaking the rate "
                "limit (rate_limit), one that stopped reading (slow).",
                "# TYPE webui_connections_closed_total counter"]
        out += [f'webui_connections_closed_total{{reason="{r}"}} {n}' for r, n in sorted(self.closed.items())]
        out += ["# HELP webui_event_loop_lag_seconds How late the event loop woke a 100 ms sleeper.",
                "# TYPE webui_event_loop_lag_seconds histogram"]
        out += self.loop_lag.render("webui_event_loop_lag_seconds")
        out += ["# HELP webui_event_loop_lag_max_seconds The longest event-loop lag of the last 10 s.",
                "# TYPE webui_event_loop_lag_max_seconds gauge",
                f"webui_event_loop_lag_max_seconds {self.lag_max():.6f}"]
        out += ["# HELP webui_live_feed_stale 1 while the live consumer cannot reach Kafka or the schema registry.",
                "# TYPE webui_live_feed_stale gauge", f"webui_live_feed_stale {self.live_stale}"]
        if self.deps is not None:
            deps = self.deps.all()
            out += ["# HELP webui_dependency_up 1 when the dependency is reachable, 0 during an outage.",
                    "# TYPE webui_dependency_up gauge"]
            out += [f'webui_dependency_up{{dependency="{d.name}"}} {0 if d.is_down else 1}' for d in deps]
            out += ["# HELP webui_dependency_down_seconds How long the current outage has lasted (0 when up).",
                    "# TYPE webui_dependency_down_seconds gauge"]
            out += [f'webui_dependency_down_seconds{{dependency="{d.name}"}} {d.status().get("down_for_s", 0)}'
                    for d in deps]
            out += ["# HELP webui_dependency_outages_total Outages of the dependency seen since the app started.",
                    "# TYPE webui_dependency_outages_total counter"]
            out += [f'webui_dependency_outages_total{{dependency="{d.name}"}} {d.outage.count}' for d in deps]
        return "\n".join(out) + "\n"
