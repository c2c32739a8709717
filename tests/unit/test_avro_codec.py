"""How decoding fails: a bad record is the record's fault (skip it), a registry that cannot answer is not."""

from __future__ import annotations

import dataclasses
import socket
import struct

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from cryptopulse.avro import AvroCodec, load_schema
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.settings import Settings
from cryptopulse.tick import Tick
from tests.fakes import FakeHttp, Reply

FRAMED = b"\x00" + struct.pack(">I", 4242) + b"\x02\x06BTC"  # Confluent framing, a schema id nobody registered


def codec(url: str) -> AvroCodec:
    return AvroCodec(Settings(schema_registry_url=url), "crypto-prices", "tick")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bytes_that_are_not_avro_are_the_records_fault():
    with pytest.raises(SerializationError):
        codec(f"http://127.0.0.1:{closed_port()}").decode(b"not avro at all")


def test_an_unknown_schema_id_is_the_records_fault():
    fake = FakeHttp()
    fake.reply("/schemas/ids/4242", Reply(404, {"error_code": 40403, "message": "Schema not found"}))
    try:
        with pytest.raises(SchemaRegistryError) as error:
            codec(fake.url).decode(FRAMED)
    finally:
        fake.close()
    assert not isinstance(error.value, RegistryUnavailable) and error.value.http_status_code == 404


@pytest.mark.parametrize("where", ["down", "5xx"])
def test_a_registry_that_cannot_answer_is_not(where):
    fake = FakeHttp()
    fake.reply("/schemas/ids/4242", Reply(503, {"error_code": 50003, "message": "unavailable"}))
    url = fake.url if where == "5xx" else f"http://127.0.0.1:{closed_port()}"
    try:
        with pytest.raises(RegistryUnavailable, match="schema registry"):
            codec(url).decode(FRAMED)
    finally:
        fake.close()


def test_the_fast_encoder_writes_the_bytes_the_library_serializer_writes():
    """After the first record (through confluent-kafka's AvroSerializer, which registers the schema), records are
    written with fastavro directly: byte for byte what the serializer writes, for ticks with and without optional
    values, extreme numbers and unicode. The registry is the library's own in-memory one (a mock:// URL)."""
    settings = dataclasses.replace(Settings(), schema_registry_url="mock://fast-encoder")
    registry = SchemaRegistryClient.new_client({"url": settings.schema_registry_url})  # the library's in-memory one
    codec = AvroCodec(settings, "crypto-prices", "tick")
    codec._serialize = AvroSerializer(registry, load_schema(settings, "tick"),
                                      conf={"subject.name.strategy": topic_subject_name_strategy})
    serializer = AvroSerializer(registry, load_schema(settings, "tick"),
                                conf={"subject.name.strategy": topic_subject_name_strategy})
    context = SerializationContext("crypto-prices", MessageField.VALUE)
    records = [Tick("BTC", "binance", 1_700_000_000_123, 64_000.5, volume_24h=1.5e9, change_24h_pct=-2.25)
               .to_record(published_at=1_700_000_000_200),
               Tick("ÉTH", "coinbase", 0, 1e-12).to_record(),
               Tick("XRP", "simulated", 2**45, 1.7976931348623157e308, volume_24h=0.0).to_record(published_at=0)]
    encoded = [codec.encode(r) for r in records]
    assert codec._framing is not None  # the first went through the serializer, the others through fastavro
    assert encoded == [serializer(r, context) for r in records]
    codec._client = registry
    assert [codec.decode(e)["symbol"] for e in encoded] == ["BTC", "ÉTH", "XRP"]
