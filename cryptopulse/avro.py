"""Avro serde for the project's topics, through the schema registry's Confluent-compatible API.

Records are Confluent-framed (magic byte 0, 4-byte schema id, Avro binary), which
the Connect converter and every Confluent-compatible consumer read. The subject
is `<topic>-value` (TopicNameStrategy). Decoding reads the schema id and asks the
registry for that id only (the library's deserializer first asks an "associations"
endpoint Apicurio does not have: a 404 at best, and once in CI a request that never
returned, freezing a consumer on its first record). Every registry request has a timeout.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import fastavro
import httpx2
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from cryptopulse.errors import RegistryUnavailable
from cryptopulse.settings import Settings


def load_schema(settings: Settings, name: str) -> str:
    """The text of schemas/<name>.avsc, checked to be JSON."""
    text = (settings.schemas_dir / f"{name}.avsc").read_text()
    json.loads(text)
    return text


REGISTRY_TIMEOUT_SECONDS = 10


def registry_client(settings: Settings) -> SchemaRegistryClient:
    """The client of the settings' registry, one per process (its caches are locked: threads share it). Each client
    loads the system's CA bundle into an SSL context of its own, ~25 ms of CPU even for an http:// URL, and every
    codec made one: a dashboard's dozen codecs cost its start a third of a second."""
    return _registry_client(settings.schema_registry_url, os.getpid())


@functools.lru_cache(maxsize=16)  # a process talks to one registry (tests: a few)
def _registry_client(url: str, _pid: int) -> SchemaRegistryClient:  # by pid: a forked child makes its own
    return SchemaRegistryClient({"url": url, "timeout": REGISTRY_TIMEOUT_SECONDS})


class AvroCodec:
    """Serializes dicts to Confluent-framed Avro for one topic's values, and back."""

    def __init__(self, settings: Settings, topic: str, schema_name: str) -> None:
        client = registry_client(settings)
        self._schema_str = load_schema(settings, schema_name)
        self._serialize = AvroSerializer(
            client,
            self._schema_str,
            conf={"subject.name.strategy": topic_subject_name_strategy, "auto.register.schemas": True},
        )
        self._client = client
        self._writers: dict[int, Any] = {}  # schema id -> parsed writer schema
        self._registry_url = settings.schema_registry_url
        self._context = SerializationContext(topic, MessageField.VALUE)
        self._parsed = fastavro.parse_schema(json.loads(self._schema_str))
        self._framing: bytes | None = None  # magic byte and schema id, once the serializer has registered the schema

    def encode(self, record: dict[str, Any]) -> bytes:
        """Confluent-framed Avro. The first call goes through the library's serializer, which registers (or looks
        up) the schema: `RegistryUnavailable` when the registry cannot answer then. Later calls need no registry:
        the framing it produced, then fastavro with the same schema (the serializer's per-record work, data-contract
        rules and subject lookups, which this project does not use, cost the producer a quarter of its rate)."""
        framing = self._framing
        if framing is not None:  # the hot path
            out = io.BytesIO()
            out.write(framing)
            fastavro.schemaless_writer(out, self._parsed, record)
            return out.getvalue()
        with self._registry_call():
            data = self._serialize(record, self._context)
        self._framing = data[:5]
        return data

    def register(self) -> int:
        """Register the schema under the topic's value subject (a no-op when it is there); returns its id."""
        with self._registry_call():
            return self._client.register_schema(f"{self._context.topic}-value", Schema(self._schema_str, "AVRO"))

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in Confluent-framed bytes (magic byte 0, 4-byte schema id, Avro binary), by its writer schema.

        Read with fastavro directly, each writer schema fetched once: the library's deserializer does
        per-record work this project does not use (data-contract rules, subject lookups) at twice the cost.
        `SerializationError`, `SchemaRegistryError` (unknown id) or a read error: the record is bad;
        `RegistryUnavailable`: the registry could not say what its schema id means, the record may be fine.
        """
        if data is None or len(data) < 6 or data[0] != 0:
            head = bytes(data or b"")[:5]
            raise SerializationError(f"not Confluent-framed Avro: {len(data or b'')} bytes starting {head!r}")
        schema_id = int.from_bytes(data[1:5], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._writers[schema_id] = self._writer_schema(schema_id)
        return fastavro.schemaless_reader(io.BytesIO(data[5:]), writer, None)

    def _writer_schema(self, schema_id: int) -> Any:
        with self._registry_call():
            registered = self._client.get_schema(schema_id)
        return fastavro.parse_schema(json.loads(registered.schema_str))

    @contextlib.contextmanager
    def _registry_call(self) -> Iterator[None]:
        """A registry that cannot answer (refused, timed out, 5xx) is `RegistryUnavailable`; a 4xx is itself."""
        try:
            yield
        except httpx2.TransportError as error:  # the registry client's HTTP library (declared in pyproject.toml)
            raise RegistryUnavailable(f"schema registry {self._registry_url} did not answer: {error!r}") from error
        except SchemaRegistryError as error:
            if error.http_status_code >= 500 or error.http_status_code < 0:
                raise RegistryUnavailable(f"schema registry {self._registry_url}: {error}") from error
            raise
