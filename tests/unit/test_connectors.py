import json

import pytest

from control.connectors import load, load_all, placeholder_values
from cryptopulse.errors import ConnectError
from cryptopulse.settings import Settings


def test_placeholders_are_filled_from_the_settings(monkeypatch):
    monkeypatch.setenv("PRICES_TOPIC", "other-prices")
    (connector,) = [c for c in load_all(Settings()) if c.name == "mongo-sink-prices"]
    assert connector.config["topics"] == "other-prices"
    assert connector.config["database"] == "crypto_db"
    assert connector.config["errors.deadletterqueue.topic.name"] == "crypto-prices-dlq"
    # ${env:...} is the worker's to resolve, so it is left alone
    assert connector.config["connection.uri"] == "${env:MONGODB_URI}"


def test_an_unknown_placeholder_is_an_error_naming_it(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "config": {"topics": "${NO_SUCH_THING}"}}))
    with pytest.raises(ConnectError, match="NO_SUCH_THING"):
        load(path, placeholder_values(Settings()))


def test_a_file_without_name_and_config_is_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"connector.class": "x"}))
    with pytest.raises(ConnectError, match="expected"):
        load(path, {})


def test_prices_sink_is_idempotent_and_has_a_dead_letter_topic():
    (connector,) = [c for c in load_all(Settings()) if c.name == "mongo-sink-prices"]
    config = connector.config
    assert config["document.id.strategy"].endswith("ProvidedInValueStrategy")
    assert config["document.id.strategy.overwrite.existing"] == "true"
    assert config["writemodel.strategy"].endswith("ReplaceOneDefaultStrategy")
    assert config["errors.tolerance"] == "all"
    assert config["errors.deadletterqueue.context.headers.enable"] == "true"
    assert config["value.converter"] == "io.apicurio.registry.utils.converter.AvroConverter"
    assert not any(k.startswith("timeseries") for k in config)
