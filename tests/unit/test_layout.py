"""The stack's layout (cryptopulse.settings.StackLayout): one node by default, or a local cluster of brokers and
Connect workers on ports of their own, and the settings every command derives from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.stack import processes
from control.stack.components import components
from cryptopulse.errors import ConfigError, StackError
from cryptopulse.settings import Settings, StackLayout

ADDRESSES = ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "CONNECT_URL", "MONGODB_URI",
             "TOPIC_REPLICATION_FACTOR", "TOPIC_MIN_INSYNC_REPLICAS")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ADDRESSES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRYPTOPULSE_STATE_DIR", str(tmp_path))
    return tmp_path


def test_a_state_folder_without_a_layout_is_the_single_node_stack(state: Path) -> None:
    settings = Settings()
    assert StackLayout.of(state) == StackLayout(1, 1, 0)
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.schema_registry_url == "http://127.0.0.1:8081/apis/ccompat/v7"
    assert settings.connect_url == "http://127.0.0.1:8083"
    assert settings.mongodb_uri == "mongodb://127.0.0.1:27017"
    assert (settings.replication_factor, settings.min_insync_replicas) == (1, 1)
    assert [(c.name, c.role, c.port) for c in components(settings)] == [
        ("kafka", "broker", 9092), ("registry", "registry", 8081), ("ferretdb", "store", 27017),
        ("connect", "connect", 8083), ("supervisor", "supervisor", None)]


def test_a_cluster_layout_gives_every_node_its_ports_and_the_settings_follow(state: Path) -> None:
    StackLayout(brokers=3, connect_workers=2, port_offset=10_000).save(state)
    settings = Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert settings.connect_url == "http://127.0.0.1:18083"
    assert settings.mongodb_uri == "mongodb://127.0.0.1:37017"
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    stack = components(settings)
    assert [(c.name, c.port) for c in stack] == [
        ("kafka-1", 19092), ("kafka-2", 19094), ("kafka-3", 19096), ("registry", 18081), ("ferretdb", 37017),
        ("connect-1", 18083), ("connect-2", 18084), ("supervisor", None)]
    ports = StackLayout.of(state).ports
    assert len(ports) == len(set(ports)) == 3 * 2 + 3 + 2  # brokers and controllers, registry x2, store, workers


def test_the_layout_variables_still_win(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    StackLayout(brokers=3).save(state)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:29092")
    monkeypatch.setenv("TOPIC_REPLICATION_FACTOR", "2")
    settings = Settings()
    assert (settings.kafka_bootstrap, settings.replication_factor, settings.min_insync_replicas) == (
        "kafka-1:29092", 2, 1)


@pytest.mark.parametrize("fields", [{"brokers": 0}, {"connect_workers": 10}, {"port_offset": -1},
                                    {"brokers": "3"}])
def test_a_layout_out_of_range_is_refused(fields: dict) -> None:
    with pytest.raises(ConfigError, match="stack layout"):
        StackLayout(**fields)


def test_a_broken_layout_file_says_how_to_recover(state: Path) -> None:
    (state / "layout.json").write_text("{not json")
    with pytest.raises(ConfigError, match="remove it"):
        StackLayout.of(state)


def test_a_folder_keeps_the_layout_its_kafka_data_was_made_with(state: Path) -> None:
    cluster = StackLayout(brokers=3, connect_workers=2)
    assert processes.set_layout(Settings(), cluster).kafka_bootstrap.count(",") == 2  # no data yet: set
    assert StackLayout.of(state) == cluster
    (state / "kafka-1" / "data").mkdir(parents=True)
    (state / "kafka-1" / "data" / "meta.properties").write_text("node.id=1")
    assert processes.set_layout(Settings(), cluster) == Settings()  # the same layout: nothing to do
    with pytest.raises(StackError, match="CRYPTOPULSE_STATE_DIR"):
        processes.set_layout(Settings(), StackLayout())
    assert StackLayout.of(state) == cluster
