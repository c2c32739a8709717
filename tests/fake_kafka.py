"""A Kafka broker of one partition that can go away, its consumers, and a codec whose registry can go away: fakes
for the followers' unit tests (webui/live.py, webui/views.py, webui/alerts.py over cryptopulse/kafka.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from cryptopulse.errors import RegistryUnavailable

DOWN = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
NO_METADATA = KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: Local: Broker transport failure")


class FakeMessage:
    def __init__(self, value: Any, offset: int, partition: int = 0, topic: str = "t") -> None:
        self._value, self._offset, self._partition, self._topic = value, offset, partition, topic

    def error(self) -> None:
        return None

    def value(self) -> Any:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def topic(self) -> str:
        return self._topic

    def headers(self) -> None:
        return None  # as confluent-kafka's Message says of a record without headers


class FakeBroker:
    """One partition's log; `up` False makes every consumer see a broker that is away."""

    def __init__(self) -> None:
        self.up = True
        self.log: list[Any] = []
        self.raise_next: Exception | None = None
        self.consumers: list[FakeConsumer] = []
        self.lock = threading.Lock()

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        made = FakeConsumer(self, config)
        self.consumers.append(made)
        return made


class FakeConsumer:
    def __init__(self, broker: FakeBroker, config: dict[str, Any]) -> None:
        self.broker, self.config = broker, config
        self.at: int | None = None
        self.topic = "t"
        self.on_assign: Callable[..., None] | None = None
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Callable[..., None] | None = None, **_: Any) -> None:
        self.on_assign = on_assign

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        if not self.broker.up:
            raise KafkaException(DOWN)
        return 0, len(self.broker.log)

    def assign(self, partitions: list[TopicPartition]) -> None:
        (tp,) = partitions
        self.topic = tp.topic
        if tp.offset == OFFSET_BEGINNING:
            self.at = 0
        elif tp.offset < 0:  # no position of its own: auto.offset.reset = latest
            self.at = len(self.broker.log)
        else:
            self.at = tp.offset

    def seek(self, tp: TopicPartition) -> None:
        self.at = tp.offset

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, 0)] if self.at is not None else []

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.at) for tp in partitions]

    def poll(self, timeout: float) -> FakeMessage | None:
        broker = self.broker
        with broker.lock:
            failure, broker.raise_next = broker.raise_next, None
        if failure is not None:
            raise failure
        if not broker.up:
            self.config["error_cb"](DOWN)
            time.sleep(0.005)
            return None
        if self.at is None and self.on_assign is not None:
            self.on_assign(self, [TopicPartition("t", 0)])
        if self.at is not None and self.at < len(broker.log):
            message = FakeMessage(broker.log[self.at], self.at, topic=self.topic)
            self.at += 1
            return message
        time.sleep(0.005)
        return None

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[FakeMessage]:
        return []

    def list_topics(self, timeout: float | None = None) -> object:
        if not self.broker.up:
            raise KafkaException(NO_METADATA)
        return object()

    def close(self) -> None:
        self.closed = True


class FakeCodec:
    def __init__(self) -> None:
        self.registry_up = True
        self.asked = 0

    def decode(self, value: Any) -> dict[str, Any]:
        self.asked += 1
        if not self.registry_up:
            raise RegistryUnavailable("schema registry http://127.0.0.1:8081 did not answer: ConnectError")
        if not isinstance(value, dict):
            raise ValueError("not Confluent-framed Avro")
        return value




async def until(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)
