import json

import pytest

from control.connectors import load, load_all, placeholder_values
from control.status import dead_letter_cause
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
    assert config["errors.tolerance"] == "all"
    assert config["errors.deadletterqueue.context.headers.enable"] == "true"
    assert config["value.converter"] == "io.apicurio.registry.utils.converter.AvroConverter"
    assert config["value.converter.apicurio.registry.fault-tolerant-refresh"] == "true"
    assert not any(k.startswith("timeseries") for k in config)


def test_prices_sink_writes_each_tick_once_and_a_redelivery_never_stops_it():
    """Ticks are inserted (a tick never changes), unordered: a redelivered tick's duplicate-key error is a data
    error reported to the dead-letter topic, where `control status` counts it apart, and the rest of its batch
    is written all the same (an ordered batch would report them as skipped instead)."""
    (connector,) = [c for c in load_all(Settings()) if c.name == "mongo-sink-prices"]
    config = connector.config
    assert config["writemodel.strategy"].endswith(".InsertOneDefaultStrategy")
    assert config["bulk.write.ordered"] == "false"
    assert config["mongo.errors.tolerance"] == "data"  # bulk-write errors tolerated; an outage still fails the task
    assert 100 <= int(config["max.batch.size"]) <= 500  # FerretDB inserts in chunks of 100; 500 measured best
    # one ERROR log line pair per duplicate would flood connect.log (38 MB per 100,000 replayed ticks)
    assert config["errors.log.enable"] == "false" and config["mongo.errors.log.enable"] == "false"


def test_candles_sink_keeps_upserts_in_batches_ferretdb_can_take():
    """Candles change while their minute is open: replaced by `_id`. FerretDB holds a pooled connection per
    upsert statement until the command ends, so more than ~100 in one bulk write hang it (docs/stack.md)."""
    (connector,) = [c for c in load_all(Settings()) if c.name == "mongo-sink-candles"]
    config = connector.config
    assert config["writemodel.strategy"].endswith(".ReplaceOneDefaultStrategy")
    assert int(config["max.batch.size"]) <= 50


def headers(stage: str, exception: str, message: str) -> list[tuple[str, bytes]]:
    """Headers as Connect writes them on a dead-letter record (errors.deadletterqueue.context.headers.enable)."""
    return [("__connect.errors.topic", b"crypto-prices"), ("__connect.errors.partition", b"0"),
            ("__connect.errors.offset", b"42"), ("__connect.errors.stage", stage.encode()),
            ("__connect.errors.class.name", b"org.apache.kafka.connect.sink.SinkTask"),
            ("__connect.errors.exception.class.name", exception.encode()),
            ("__connect.errors.exception.message", message.encode())]


@pytest.mark.parametrize(("stage", "exception", "message", "cause"), [
    # FerretDB 1.24's and MongoDB's duplicate `_id` on insert, as the sink reports it (dlq.WriteException)
    ("TASK_PUT", "com.mongodb.kafka.connect.sink.dlq.WriteException",
     "v=1, code=11000, message=E11000 duplicate key error collection: crypto_db.prices, details={}", "duplicate"),
    ("TASK_PUT", "com.mongodb.kafka.connect.sink.dlq.WriteException",
     'v=1, code=11000, message=E11000 duplicate key error collection: crypto_db.prices index: _id_ dup key: '
     '{ _id: "BTC|simulated|1" }, details={}', "duplicate"),
    # the store refused the document for another reason, or an ordered batch skipped it
    ("TASK_PUT", "com.mongodb.kafka.connect.sink.dlq.WriteException",
     "v=1, code=2, message=invalid document, details={}", "rejected"),
    ("TASK_PUT", "com.mongodb.kafka.connect.sink.dlq.WriteSkippedException",
     "v=1, message=Batch was not fully written", "rejected"),
    # not Avro, or the sink could not make a document of it
    ("VALUE_CONVERTER", "org.apache.kafka.connect.errors.DataException", "Failed to deserialize", "unconvertible"),
    ("TASK_PUT", "org.apache.kafka.connect.errors.DataException", "Provided _id is missing", "unconvertible"),
])
def test_dead_letters_are_told_apart_by_cause(stage, exception, message, cause):
    found, why = dead_letter_cause(headers(stage, exception, message))
    assert found == cause
    assert why.startswith(stage) and len(why) <= 160


def test_a_dead_letter_without_headers_counts_as_broken():
    assert dead_letter_cause(None)[0] == "unconvertible"


def test_status_shows_dead_letters_by_cause_and_the_last_broken_one():
    from control.status import _render_dead_letters

    counts = {"unconvertible": 2, "rejected": 0, "duplicate": 100_000, "expired": 0, "uncounted": 0,
              "last_broken": {"partition": 0, "offset": 100_001, "why": "VALUE_CONVERTER: DataException: bad"}}
    lines = _render_dead_letters({"crypto-prices-dlq": counts, "crypto-candles-1m-dlq": {}})
    assert "2 could not be converted, 0 rejected by the store; 100,000 redelivered duplicates" in lines[1]
    assert "last broken record: partition 0 offset 100,001, VALUE_CONVERTER" in lines[2]
    assert "no such topic" in lines[3]
    only_duplicates = {**counts, "unconvertible": 0, "last_broken": None}
    assert len(_render_dead_letters({"crypto-prices-dlq": only_duplicates})) == 2  # nothing to look at
