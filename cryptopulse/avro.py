"""Avro serde for the project's topics, through the schema registry's Confluent-compatible API.

Records are Confluent-framed (magic byte 0, 4-byte schema id, Avro binary), which
the Connect converter and every Confluent-compatible consumer read. The subject
is `<topic>-value` (TopicNameStrategy), set explicitly so that the client does
not first ask for the "associations" endpoint that Apicurio does not have.
"""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from cryptopulse.settings import Settings


def load_schema(settings: Settings, name: str) -> str:
    """The text of schemas/<name>.avsc, checked to be JSON."""
    text = (settings.schemas_dir / f"{name}.avsc").read_text()
    json.loads(text)
    return text


def registry_client(settings: Settings) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": settings.schema_registry_url})


class AvroCodec:
    """Serializes dicts to Confluent-framed Avro for one topic's values, and back."""

    def __init__(self, settings: Settings, topic: str, schema_name: str) -> None:
        client = registry_client(settings)
        self._serialize = AvroSerializer(
            client,
            load_schema(settings, schema_name),
            conf={"subject.name.strategy": topic_subject_name_strategy, "auto.register.schemas": True},
        )
        self._deserialize = AvroDeserializer(client)
        self._context = SerializationContext(topic, MessageField.VALUE)

    def encode(self, record: dict[str, Any]) -> bytes:
        return self._serialize(record, self._context)

    def decode(self, data: bytes) -> dict[str, Any]:
        return self._deserialize(data, self._context)
