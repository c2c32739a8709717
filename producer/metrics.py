"""The producer's counters, logged periodically and served in Prometheus text format on /metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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

    def received_tick(self, tick: Tick) -> None:
        self.received[tick.source, tick.symbol] += 1
        self.last_event_ms[tick.symbol] = max(tick.ts, self.last_event_ms.get(tick.symbol, 0))

    def render(self, now: float | None = None) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        now_ms = (now or time.time()) * 1000
        src = f'source="{self.source.name}"'
        families = [
            ("ticks_received_total", "counter", "Ticks received from the source.",
             [(f'source="{s}",symbol="{y}"', n) for (s, y), n in sorted(self.received.items())]),
            ("ticks_published_total", "counter", "Ticks handed to Kafka.",
             [(f'source="{s}",symbol="{y}"', n) for (s, y), n in sorted(self.published.items())]),
            ("ticks_rejected_total", "counter", "Ticks that failed validation, never published.",
             [(f'source="{s}",symbol="{y}",reason="{r}"', n) for (s, y, r), n in sorted(self.rejected.items())]),
            ("payloads_unreadable_total", "counter", "Source payloads that could not be read as a tick.",
             [(src, self.source.rejected)]),
            ("ticks_delivered_total", "counter", "Ticks Kafka acknowledged (acks=all).",
             [("", self.deliveries.delivered)]),
            ("delivery_errors_total", "counter", "Ticks Kafka did not accept.", [("", self.deliveries.failed)]),
            ("source_reconnects_total", "counter", "Reconnections of the source's feed.",
             [(src, self.source.reconnects)]),
            ("dependency_up", "gauge", "1 while the producer reaches this dependency, 0 during an outage.",
             [(f'dependency="{o.what.removeprefix("the ")}"', int(not o.is_down)) for o in self.outages]),
            ("dependency_outages_total", "counter", "Outages of this dependency seen since start.",
             [(f'dependency="{o.what.removeprefix("the ")}"', o.count) for o in self.outages]),
            ("last_tick_age_seconds", "gauge", "Age of the newest tick's event time, per symbol.",
             [(f'symbol="{s}"', round(max(now_ms - ms, 0) / 1000, 3)) for s, ms in sorted(self.last_event_ms.items())]),
        ]
        lines = []
        for name, kind, about, samples in families:
            lines += [f"# HELP cryptopulse_{name} {about}", f"# TYPE cryptopulse_{name} {kind}"]
            lines += [f"cryptopulse_{name}{{{labels}}} {value}" if labels else f"cryptopulse_{name} {value}"
                      for labels, value in samples]
        return "\n".join(lines) + "\n"

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
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet: Prometheus scrapes often
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
