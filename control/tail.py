"""`control topics tail TOPIC`: a topic's records, decoded the way its readers decode them.

One JSON object per record and line (for `jq`): topic, partition, offset, timestamp (ISO, UTC), key, headers,
and the value — Confluent-framed Avro decoded through the registry by its schema id (`schema_id`, `value`), or,
for anything else (a dead-letter record's original bytes, a foreign producer's text), `value_error` and the
bytes shown safely in `raw`: printable ASCII as is, every other byte as \\xNN, at most RAW_LIMIT of them, so no
terminal escape sequence or binary noise reaches the screen. Dead-letter records carry Connect's error headers
(`__connect.errors.*`), shown the same way.

Committed records only (a transaction's aborted records are not shown), like every reader of the pipeline.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import fastavro
from confluent_kafka import Message, TopicPartition

from cryptopulse import kafka
from cryptopulse.avro import registry_client
from cryptopulse.errors import ConfigError
from cryptopulse.settings import Settings
from cryptopulse.text import safe_bytes, terminal_safe
from cryptopulse.times import iso_utc


def text_or_safe(data: bytes | None) -> str | None:
    """A key or header value: its text when it is printable UTF-8, else `safe_bytes`."""
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return safe_bytes(data)
    return text if text.isprintable() else safe_bytes(data)


def _jsonable(value: Any) -> Any:
    """A decoded value for the JSON line, its texts terminal-safe: `jq -r` prints them raw, so an escape sequence
    in a symbol or a source would otherwise reach the terminal."""
    if isinstance(value, str):
        return terminal_safe(value)
    if isinstance(value, datetime):
        return iso_utc(value, "milliseconds")
    if isinstance(value, bytes):
        return safe_bytes(value)
    if isinstance(value, dict):
        return {terminal_safe(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class Decoder:
    """Confluent-framed Avro by the writer schema the registry holds under the record's id (cached per id)."""

    def __init__(self, settings: Settings) -> None:
        self._client = registry_client(settings)
        self._schemas: dict[int, Any] = {}

    def decode(self, data: bytes) -> tuple[int, dict[str, Any]]:
        if len(data) < 6 or data[0] != 0:
            raise ValueError(f"not Confluent-framed Avro ({len(data)} bytes)")
        schema_id = int.from_bytes(data[1:5], "big")
        if schema_id not in self._schemas:
            self._schemas[schema_id] = fastavro.parse_schema(json.loads(self._client.get_schema(schema_id).schema_str))
        return schema_id, fastavro.schemaless_reader(io.BytesIO(data[5:]), self._schemas[schema_id], None)


def describe(message: Message, decoder: Decoder) -> dict[str, Any]:
    """One record as a JSON-able dict."""
    kind, ms = message.timestamp()
    row: dict[str, Any] = {
        "topic": message.topic(), "partition": message.partition(), "offset": message.offset(),
        "timestamp": iso_utc(ms, "milliseconds") if ms > 0 else None,
        "key": text_or_safe(message.key()),
    }
    headers = message.headers()
    if headers:
        row["headers"] = {terminal_safe(k): text_or_safe(v) for k, v in headers}
    value = message.value()
    if value is None:
        row["value"] = None  # a tombstone
        return row
    try:
        schema_id, record = decoder.decode(value)
    except Exception as error:  # noqa: BLE001 - whatever it is, it is shown, not decoded
        row["value_error"] = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        row["raw"] = safe_bytes(value)
        return row
    row["schema_id"] = schema_id
    row["value"] = _jsonable(record)
    return row


def records(settings: Settings, topic: str, n: int, from_beginning: bool, follow: bool,
            stop: Callable[[], bool] = lambda: False) -> Iterator[Message]:
    """The last `n` records (or the first `n`), in offset order per partition; then every new one if `follow`."""
    consumer = kafka.consumer(settings, "control-tail", "cryptopulse-control-tail", {"log_level": 0})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ConfigError(f"no topic {topic!r} at {settings.kafka_bootstrap} (`control topics` lists them)")
        parts = sorted(metadata.partitions)
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        starts = {p: low if from_beginning else max(low, high - n) for p, (low, high) in marks.items()}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in parts])
        shown: list[Message] = []
        deadline = time.monotonic() + 60
        # read to the end as of now: the position reaches the end offset (a transaction marker is never delivered)
        while not stop():
            positions = {tp.partition: tp.offset for tp in consumer.position([TopicPartition(topic, p) for p in parts])}
            if all(high == starts[p] or positions.get(p, -1) >= high for p, (_, high) in marks.items()):
                break
            if from_beginning and len(shown) >= n:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within 60 s")
            shown += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
        shown = shown[:n] if from_beginning else sorted(shown, key=lambda m: m.timestamp()[1])[-n:]
        yield from shown
        while follow and not stop():
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    yield message
    finally:
        consumer.close()


def tail(settings: Settings, topic: str, n: int = 10, from_beginning: bool = False, follow: bool = False,
         say: Callable[[str], None] = print) -> int:
    decoder = Decoder(settings)
    count = 0
    for message in records(settings, topic, n, from_beginning, follow):
        say(json.dumps(describe(message, decoder), ensure_ascii=True))
        count += 1
    return count
