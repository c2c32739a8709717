"""The dashboard through outages, with fakes (no service): the live consumer and the views outlive Kafka,
the registry and MongoDB going away and carry on from where they were; /healthz and /metrics say what is
down; the log says it once each way."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException
from pymongo.errors import ServerSelectionTimeoutError

from cryptopulse.kafka import KafkaWatch
from cryptopulse.settings import Settings
from tests.fake_kafka import DOWN, NO_METADATA, FakeBroker, FakeCodec, until
from webui.health import Dependencies, Dependency, Monitor, health_report, plain
from webui.live import LiveConsumer
from webui.metrics import Metrics
from webui.series import TickRow
from webui.views import WindowView, tick_spec

NOW = int(time.time() * 1000)


def tick(ts: int, symbol: str = "BTC") -> dict[str, Any]:
    return {"symbol": symbol, "source": "simulated", "ts": ts, "price": 100.0 + ts % 7, "volume_24h": 1.0,
            "change_24h_pct": None, "published_at": None}


def outage_lines(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "webui" and r.getMessage().startswith(what)]


# --- the live consumer ---

def test_the_live_consumer_rides_out_kafka_and_registry_outages_and_loses_nothing(caplog):
    broker, codec = FakeBroker(), FakeCodec()
    deps, metrics = Dependencies(), Metrics()

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], LiveConsumer]:
        delivered: list[dict[str, Any]] = []
        statuses: list[dict[str, Any]] = []
        consumer = LiveConsumer(Settings(), "test", asyncio.get_running_loop(), delivered.extend, metrics, deps,
                                statuses.append, make_consumer=broker.consumer, make_codec=lambda: codec,
                                backoff_cap=0.05)
        consumer.start()
        try:
            await until(lambda: consumer.assigned, "assigned")
            broker.log.append(tick(1))
            await until(lambda: len(delivered) == 1, "the first tick")

            broker.up = False  # Kafka goes away: the feed is stale, the consumer waits
            await until(lambda: statuses and statuses[-1]["live"] is False, "a stale status")
            assert statuses[-1]["down"] == ["kafka"] and deps.kafka.is_down and not consumer.status()["ok"]
            await asyncio.sleep(0.3)  # many error callbacks and probes meanwhile: still one warning
            broker.log.append(tick(2))
            broker.up = True
            await until(lambda: len(delivered) == 2 and statuses[-1]["live"], "the feed back")
            assert not deps.kafka.is_down and consumer.status()["ok"]

            codec.registry_up = False  # the registry goes away: the record waits, it is not skipped
            broker.log.append(tick(3))
            await until(lambda: deps.registry.is_down and statuses[-1]["down"] == ["registry"], "registry down")
            asked = codec.asked
            await until(lambda: codec.asked > asked + 2, "the same record asked for again")
            assert len(delivered) == 2 and metrics.undecodable == 0
            codec.registry_up = True
            await until(lambda: len(delivered) == 3 and statuses[-1]["live"], "the waiting record delivered")

            broker.log += [b"garbage", tick(4)]  # a bad record is counted and skipped, the next one delivered
            await until(lambda: len(delivered) == 4, "the tick after a bad record")
            assert metrics.undecodable == 1

            broker.raise_next = KafkaException(KafkaError(KafkaError._TRANSPORT, "poll failed"))  # not fatal
            broker.log.append(tick(5))
            await until(lambda: len(delivered) == 5, "a tick after a failed poll")
            broker.raise_next = KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
            broker.log.append(tick(6))
            await until(lambda: len(delivered) == 6, "a tick through a new consumer")
            assert len(broker.consumers) == 2 and broker.consumers[0].closed
        finally:
            await asyncio.to_thread(consumer.stop)
        return delivered, statuses, consumer

    with caplog.at_level(logging.INFO):
        delivered, statuses, consumer = asyncio.run(scenario())
    assert [t["ts"] for t in delivered] == [1, 2, 3, 4, 5, 6]  # in order, none twice, none lost
    assert [s["live"] for s in statuses] == [False, True, False, True]
    assert len(outage_lines(caplog, "Kafka unavailable")) == 1 and len(outage_lines(caplog, "Kafka is back")) == 1
    assert len(outage_lines(caplog, "Schema registry unavailable")) == 1
    assert len(outage_lines(caplog, "Schema registry is back")) == 1
    assert broker.consumers[0].config["logger"].name == "librdkafka.webui"  # librdkafka's lines, rate-limited
    assert deps.kafka.outage.count == 1 and deps.registry.outage.count == 1


# --- the views ---

class FakeView(WindowView):
    """A tick view whose start asks a fake broker where its window begins."""

    kafka_up = True

    def _start_offsets(self) -> dict[tuple[str, int], int]:
        if not self.kafka_up:
            raise KafkaException(NO_METADATA)
        return {(self.spec.topic, 0): OFFSET_BEGINNING}


def test_a_view_waits_for_kafka_then_loads_its_topic_and_follows_through_outages(caplog):
    broker, codec, deps = FakeBroker(), FakeCodec(), Dependencies()
    view = FakeView(Settings(), tick_spec(Settings()), deps=deps, backoff_cap=0.05, make_consumer=broker.consumer,
                    make_codec=lambda: codec)
    view.kafka_up = False
    broker.log.append(tick(NOW - 60_000))  # published before the view starts

    async def scenario() -> None:
        view.start()
        try:
            await until(lambda: deps.kafka.is_down, "kafka reported down")
            assert view.status()["waiting_for"] == ["kafka"] and not view.ready.is_set()
            view.kafka_up = True
            await until(view.ready.is_set, "the view loaded")
            assert view.read == 1 and not deps.kafka.is_down and view.status()["ok"]
            broker.log.append(tick(NOW - 50_000))
            await until(lambda: view.read == 2, "a record followed")

            broker.up = False
            await until(lambda: deps.kafka.is_down, "kafka down while following")
            broker.log.append(tick(NOW - 40_000))
            broker.up = True
            await until(lambda: view.read == 3 and not deps.kafka.is_down, "following again")

            codec.registry_up = False
            broker.log.append(tick(NOW - 30_000))
            await until(lambda: deps.registry.is_down, "registry down")
            await asyncio.sleep(0.2)
            assert view.read == 3
            codec.registry_up = True
            await until(lambda: view.read == 4 and not deps.registry.is_down, "the waiting record applied")

            broker.raise_next = KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
            broker.log.append(tick(NOW - 20_000))
            await until(lambda: view.read == 5, "a record through a new consumer")
            assert len(broker.consumers) == 2
            assert view.status()["ok"] and view.status()["waiting_for"] == []
        finally:
            await asyncio.to_thread(view.stop)

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    source, rows = view.window("BTC", NOW - 3_600_000, NOW)
    assert [r.ts for r in rows] == [NOW - 60_000, NOW - 50_000, NOW - 40_000, NOW - 30_000, NOW - 20_000]
    assert all(isinstance(r, TickRow) for r in rows)
    assert view.read == 5  # none applied twice after the new consumer
    assert len(outage_lines(caplog, "Schema registry unavailable")) == 1
    assert len(outage_lines(caplog, "Kafka unavailable")) == 2  # at start, and while following
    assert not outage_lines(caplog, "MongoDB unavailable")  # a view never reads the store


# --- dependencies, probes, health and metrics ---

def test_a_dependency_is_down_while_any_reporter_fails_and_logs_once_each_way(caplog):
    now = [0.0]
    dependency = Dependency("kafka", "Kafka", logging.getLogger("webui"), clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="webui"):
        assert dependency.down("live consumer", KafkaException(DOWN)) is True
        for _ in range(100):
            dependency.down("live consumer", "again")
        dependency.down("candles view", "also")
        now[0] = 12.5
        assert dependency.up("live consumer") is False and dependency.is_down
        status = dependency.status()
        assert status == {"ok": False, "down_for_s": 12.5, "error": "also", "seen_by": ["candles view"]}
        assert dependency.up("candles view") is True and not dependency.is_down
        assert dependency.up("candles view") is False
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["Kafka unavailable (1/1 brokers are down); waiting for it, retrying quietly",
                     "Kafka is back after 12.5 s"]


def test_a_passing_disconnect_is_not_an_outage():
    dependency = Dependency("kafka", "Kafka")
    watch = KafkaWatch(dependency.reporter("live consumer"))

    class Client:
        up = True

        def list_topics(self, timeout: float) -> object:
            if not self.up:
                raise KafkaException(DOWN)
            return object()

    client = Client()
    watch.on_error(KafkaError(KafkaError._TRANSPORT, "Disconnected (after 600000ms in state UP)"))
    watch.check(client)  # the probe answers: nothing to report
    assert not dependency.is_down and watch.doubt is None
    watch.on_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "unknown topic"))  # not about reaching the broker
    assert watch.doubt is None
    client.up = False
    watch.on_error(DOWN)
    watch.check(client)
    assert dependency.is_down and dependency.status()["error"] == "1/1 brokers are down"
    watch.check(client)  # not due yet (backoff): no probe, still down
    watch.alive()  # a record arrived
    assert not dependency.is_down


def test_plain_errors_are_one_short_line():
    assert plain(KafkaException(DOWN)) == "1/1 brokers are down"
    long = ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused (configured timeouts: "
                                       "socketTimeoutMS: 20000.0ms), Timeout: 5.0s, Topology Description: <...>")
    assert plain(long) == "127.0.0.1:1: [Errno 111] Connection refused"
    assert plain(RuntimeError("first\nTraceback (most recent call last):\n ...")) == "first"
    assert plain(ValueError()) == "ValueError" and len(plain("x" * 1000)) == 160


def test_health_report_names_what_is_down_and_for_how_long():
    now = [100.0]
    deps = Dependencies(clock=lambda: now[0])
    ok_kafka = {"ok": True, "group_id": "g", "assigned": True}
    body, code = health_report(deps, ok_kafka, {"ok": True, "ping_ms": 1.0}, {"ok": True}, clients=2)
    assert code == 200 and body["status"] == "ok" and body["down"] == [] and body["kafka"]["group_id"] == "g"

    deps.kafka.down("live consumer", KafkaException(DOWN))
    deps.mongo.down("probe", "127.0.0.1:27017: [Errno 111] Connection refused")
    now[0] = 130.0
    body, code = health_report(deps, {**ok_kafka, "ok": False}, {"ok": False, "error": "connection refused"},
                               {"ok": True}, clients=0, live={"live": False, "down": ["kafka"]})
    assert code == 503 and body["status"] == "degraded" and body["down"] == ["kafka", "mongo"]
    assert body["kafka"]["down_for_s"] == 30.0 and body["kafka"]["error"] == "1/1 brokers are down"
    assert body["kafka"]["seen_by"] == ["live consumer"] and body["kafka"]["group_id"] == "g"
    assert body["mongo"]["down_for_s"] == 30.0 and body["registry"] == {"ok": True}
    assert body["live"] == {"live": False, "down": ["kafka"]}
    assert "Traceback" not in str(body)


def test_the_monitor_probes_mongodb_and_the_registry(monkeypatch, caplog):
    import webui.health as health

    deps = Dependencies()
    answers = [{"ok": False, "error": "127.0.0.1:1: [Errno 111] Connection refused, Timeout: 5.0s, Topology ..."},
               {"ok": True, "ping_ms": 0.4}]
    registry = [RuntimeError("http://r did not answer (Connection refused)"), None]

    async def ping() -> dict[str, Any]:
        return answers.pop(0)

    def probe(url: str, timeout: float) -> None:
        failure = registry.pop(0)
        if failure:
            raise failure

    monkeypatch.setattr(health, "registry_probe", probe)

    async def scenario() -> list[tuple[bool, bool]]:
        monitor = Monitor(deps, ping, "http://r")
        seen = []
        for _ in range(2):
            await monitor.check()
            seen.append((deps.mongo.is_down, deps.registry.is_down))
        assert monitor.mongo == {"ok": True, "ping_ms": 0.4} and monitor.registry["ok"]
        return seen

    with caplog.at_level(logging.INFO, logger="webui"):
        assert asyncio.run(scenario()) == [(True, True), (False, False)]
    assert "MongoDB unavailable (127.0.0.1:1: [Errno 111] Connection refused)" in caplog.text


def test_metrics_show_each_dependency():
    deps = Dependencies()
    metrics = Metrics(deps=deps)
    deps.registry.down("probe", "refused")
    deps.registry.up("probe")
    deps.mongo.down("probe", "refused")
    text = metrics.render()
    assert 'webui_dependency_up{dependency="kafka"} 1.0\n' in text
    assert 'webui_dependency_up{dependency="mongo"} 0.0\n' in text
    assert 'webui_dependency_outages_total{dependency="registry"} 1.0\n' in text
    assert 'webui_dependency_down_seconds{dependency="kafka"} 0.0\n' in text
    assert "webui_live_feed_stale 0.0\n" in text and "webui_connected_clients 0.0\n" in text


def test_healthz_is_503_naming_what_is_down_without_a_traceback():
    """The real app, pointed at a MongoDB and a registry nobody listens on (no consumer, no views)."""
    from webui.app import create_app

    settings = Settings(mongodb_uri="mongodb://127.0.0.1:1/?connectTimeoutMS=200",
                        schema_registry_url="http://127.0.0.1:1/apis/ccompat/v7")
    app = create_app(settings, start_consumer=False, views=False, probe_seconds=0)

    async def scenario() -> tuple[int, dict[str, Any], str]:
        async with app.test_app() as test_app:
            client = test_app.test_client()
            response = await client.get("/healthz")
            body = await response.get_json()
            metrics = await (await client.get("/metrics")).get_data(as_text=True)
        return response.status_code, body, metrics

    code, body, metrics = asyncio.run(scenario())
    assert code == 503 and body["status"] == "degraded" and body["down"] == ["mongo", "registry"], body
    assert body["kafka"]["ok"] and body["mongo"]["ok"] is False and body["registry"]["ok"] is False
    assert body["registry"]["error"] == "http://127.0.0.1:1/apis/ccompat/v7 did not answer (Connection refused)"
    assert isinstance(body["mongo"]["down_for_s"], float) and body["live"]["live"] is True
    assert "Traceback" not in str(body)
    assert 'webui_dependency_up{dependency="mongo"} 0' in metrics
    assert 'webui_dependency_up{dependency="registry"} 0' in metrics
