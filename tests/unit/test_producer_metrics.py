import requests

from cryptopulse.tick import Tick
from producer.metrics import ProducerMetrics, serve
from producer.sources import make_source


def test_metrics_are_served_in_prometheus_text_format():
    source = make_source("simulated", ["BTC", "ETH"])
    metrics = ProducerMetrics(source)
    metrics.received_tick(Tick("BTC", "simulated", 1_000, 1.0))
    metrics.received_tick(Tick("BTC", "simulated", 3_000, 1.0))
    metrics.published["simulated", "BTC"] += 2
    metrics.rejected["simulated", "ETH", "nan price"] += 1
    metrics.deliveries.delivered = 2
    source.reconnects = 4
    server = serve(metrics, "127.0.0.1", 0)
    try:
        response = requests.get(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=5)
        missing = requests.get(f"http://127.0.0.1:{server.server_address[1]}/other", timeout=5)
    finally:
        server.shutdown()
    assert response.headers["Content-Type"].startswith("text/plain; version=")  # prometheus_client's exposition
    lines = response.text.splitlines()
    assert 'cryptopulse_ticks_received_total{source="simulated",symbol="BTC"} 2.0' in lines
    assert 'cryptopulse_ticks_published_total{source="simulated",symbol="BTC"} 2.0' in lines
    assert 'cryptopulse_ticks_rejected_total{reason="nan price",source="simulated",symbol="ETH"} 1.0' in lines
    assert "cryptopulse_ticks_delivered_total 2.0" in lines
    assert 'cryptopulse_source_reconnects_total{source="simulated"} 4.0' in lines
    assert "# TYPE cryptopulse_last_tick_age_seconds gauge" in lines
    assert missing.status_code == 404


def test_last_tick_age_follows_the_newest_event_time():
    metrics = ProducerMetrics(make_source("simulated", ["BTC"]))
    metrics.received_tick(Tick("BTC", "simulated", 5_000, 1.0))
    metrics.received_tick(Tick("BTC", "simulated", 2_000, 1.0))  # late: does not make the feed look older
    assert 'cryptopulse_last_tick_age_seconds{symbol="BTC"} 5.0' in metrics.render(now=10.0).splitlines()
