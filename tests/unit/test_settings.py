"""cryptopulse.settings: the connection-string option the sink's driver needs, and the sink names."""

from __future__ import annotations

from cryptopulse.settings import Settings, sink_group, with_driver_option


def test_a_driver_option_is_added_to_any_connection_string():
    assert with_driver_option("mongodb://127.0.0.1:27017", "serverSelectionTimeoutMS", 5) == \
        "mongodb://127.0.0.1:27017/?serverSelectionTimeoutMS=5"
    assert with_driver_option("mongodb://u:p@h:1/db?replicaSet=rs", "serverSelectionTimeoutMS", 5) == \
        "mongodb://u:p@h:1/db?replicaSet=rs&serverSelectionTimeoutMS=5"


def test_a_driver_option_the_operator_set_is_kept():
    uri = "mongodb://h:1/?serverselectiontimeoutms=900"
    assert with_driver_option(uri, "serverSelectionTimeoutMS", 5) == uri


def test_sink_names_follow_the_connector_prefix():
    settings = Settings(connector_prefix="test-")
    assert settings.prices_sink == "test-mongo-sink-prices" and settings.candles_sink == "test-mongo-sink-candles"
    assert sink_group(Settings().prices_sink) == "connect-mongo-sink-prices"
