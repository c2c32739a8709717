"""How decoding fails: a bad record is the record's fault (skip it), a registry that cannot answer is not."""

from __future__ import annotations

import socket
import struct

import pytest
from confluent_kafka.schema_registry import SchemaRegistryError
from confluent_kafka.serialization import SerializationError

from cryptopulse.avro import AvroCodec
from cryptopulse.errors import RegistryUnavailable
from cryptopulse.settings import Settings
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
