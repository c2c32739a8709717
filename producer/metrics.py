"""The producer's counters, logged periodically and served in Prometheus text format on /metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cryptopulse.outage import Outage
from cryptopulse.tick import Tick
from producer.publisher import DeliveryStats
from producer.sources import Source


class ProducerMetrics:
    """Counts per source and symbol, for the source in use (it changes on a fallback)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.received: Counter[tuple[str, str]] = Counter()  # (source, symbol)
        self.published: Counter[tuple[str, str]] = Counter()
        self.rejected: Counter[tuple[str, str, str]] = Counter()  # (source, symbol, reason)
        self.last_event_ms: dict[str, int] = {}
        self.deliveries = DeliveryStats()  # filled by the publisher's delivery callback
        self.outages: list[Outage] = []  # the publisher's view of Kafka and the registry
        self._now = time.time

    def received_tick(self, tick: Tick) -> None:
        self.received[tick.source, tick.symbol] += 1
        self.last_event_ms[tick.symbol] = max(tick.ts, self.last_event_ms.get(tick.symbol, 0))

    def collect(self) -> Iterator[Metric]:
        """The families, read from the counters at scrape time (a prometheus_client collector)."""
        now_ms = self._now() * 1000
        src = self.source.name

        def family(kind: type, name: str, about: str, labels: list[str], samples: Iterable) -> Metric:
            metric = kind(f"cryptopulse_{name}", about, labels=labels)
            for values, value in samples:
                metric.add_metric(list(values), value)
            return metric

        yield family(CounterMetricFamily, "ticks_received", "Ticks received from the source.", ["source", "symbol"],
                     sorted(self.received.items()))
        yield family(CounterMetricFamily, "ticks_published", "Ticks handed to Kafka.", ["source", "symbol"],
                     sorted(self.published.items()))
        yield family(CounterMetricFamily, "ticks_rejected", "Ticks that failed validation, never published.",
                     ["source", "symbol", "reason"], sorted(self.rejected.items()))
        yield family(CounterMetricFamily, "payloads_unreadable", "Source payloads that could not be read as a tick.",
                     ["source"], [((src,), self.source.rejected)])
        yield family(CounterMetricFamily, "ticks_delivered", "Ticks Kafka acknowledged (acks=all).", [],
                     [((), self.deliveries.delivered)])
        yield family(CounterMetricFamily, "delivery_errors", "Ticks Kafka did not accept.", [],
                     [((), self.deliveries.failed)])
        yield family(CounterMetricFamily, "source_reconnects", "Reconnections of the source's feed.", ["source"],
                     [((src,), self.source.reconnects)])
        yield family(GaugeMetricFamily, "dependency_up", "1 while the producer reaches this dependency, 0 during "
                     "an outage.", ["dependency"], [((o.what.removeprefix("the "),), int(not o.is_down))
                                                    for o in self.outages])
        yield family(CounterMetricFamily, "dependency_outages", "Outages of this dependency seen since start.",
                     ["dependency"], [((o.what.removeprefix("the "),), o.count) for o in self.outages])
        yield family(GaugeMetricFamily, "last_tick_age_seconds", "Age of the newest tick's event time, per symbol.",
                     ["symbol"], [((s,), round(max(now_ms - ms, 0) / 1000, 3))
                                  for s, ms in sorted(self.last_event_ms.items())])

    def render(self, now: float | None = None) -> str:
        """Prometheus text exposition format, through prometheus_client (one registry per process)."""
        if now is not None:
            self._now = lambda: now
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry).decode()

    def summary(self) -> str:
        return (f"{self.source.name}: received {sum(self.received.values())}, "
                f"published {sum(self.published.values())}, rejected {sum(self.rejected.values())}, "
                f"unreadable {self.source.rejected}, delivered {self.deliveries.delivered}, "
                f"delivery errors {self.deliveries.failed}, reconnects {self.source.reconnects}")


def serve(metrics: ProducerMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve GET /metrics in a daemon thread; returns the server (port 0 picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path != "/metrics":
                self.send_error(404, "only /metrics lives here")
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet: Prometheus scrapes often
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
