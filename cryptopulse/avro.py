"""Avro serde for the project's topics, through the schema registry's Confluent-compatible API.

Records are Confluent-framed (magic byte 0, 4-byte schema id, Avro binary), which
the Connect converter and every Confluent-compatible consumer read. The subject
is `<topic>-value` (TopicNameStrategy), set explicitly on both sides: left to its
default, the client first asks the registry's "associations" endpoint, which
Apicurio does not have (a 404 at best; once in CI a request that never returned,
freezing a consumer on its first record). Every registry request has a timeout.
"""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

# the HTTP library the registry client is built on (httpx, or its fork httpx2), as the client itself imports it
from confluent_kafka.schema_registry.common._httpx_compat import httpx
from confluent_kafka.serialization import MessageField, SerializationContext

from cryptopulse.settings import Settings


def load_schema(settings: Settings, name: str) -> str:
    """The text of schemas/<name>.avsc, checked to be JSON."""
    text = (settings.schemas_dir / f"{name}.avsc").read_text()
    json.loads(text)
    return text


REGISTRY_TIMEOUT_SECONDS = 10


def registry_client(settings: Settings) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": settings.schema_registry_url, "timeout": REGISTRY_TIMEOUT_SECONDS})


class RegistryUnavailable(RuntimeError):
    """The registry could not answer (down, timing out, 5xx): the record may be fine, so do not skip it."""


class AvroCodec:
    """Serializes dicts to Confluent-framed Avro for one topic's values, and back."""

    def __init__(self, settings: Settings, topic: str, schema_name: str) -> None:
        client = registry_client(settings)
        self._serialize = AvroSerializer(
            client,
            load_schema(settings, schema_name),
            conf={"subject.name.strategy": topic_subject_name_strategy, "auto.register.schemas": True},
        )
        self._deserialize = AvroDeserializer(client, conf={"subject.name.strategy": topic_subject_name_strategy})
        self._registry_url = settings.schema_registry_url
        self._context = SerializationContext(topic, MessageField.VALUE)

    def encode(self, record: dict[str, Any]) -> bytes:
        return self._serialize(record, self._context)

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record; `RegistryUnavailable` when the registry could not say what its schema id means."""
        try:
            return self._deserialize(data, self._context)
        except httpx.TransportError as error:
            raise RegistryUnavailable(f"schema registry {self._registry_url} did not answer: {error!r}") from error
        except SchemaRegistryError as error:
            if error.http_status_code >= 500:
                raise RegistryUnavailable(f"schema registry {self._registry_url}: {error}") from error
            raise
