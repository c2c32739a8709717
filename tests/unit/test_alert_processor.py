"""The alert processor's transactions (streams/alerts.py) against fake Kafka clients: what one commit holds, and
what an aborted or a retried commit does to the book and the offsets. No service needed."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from cryptopulse.alert import Rule
from cryptopulse.kafka import Unavailable
from cryptopulse.settings import Settings
from streams.alerts import AlertProcessor

T0 = 1_800_000_000_000


class FakeProducer:
    def __init__(self) -> None:
        self.open: list[tuple[str, bytes, bytes | None]] = []
        self.committed: list[tuple[str, bytes, bytes | None]] = []
        self.offsets: list = []
        self.fail_commit: list[KafkaError] = []
        self.aborted = 0

    def begin_transaction(self) -> None:
        assert not self.open

    def produce(self, topic, key=None, value=None) -> None:
        self.open.append((topic, key, value))

    def poll(self, _timeout=0) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets, _metadata, _timeout) -> None:
        self.pending_offsets = [(tp.partition, tp.offset) for tp in offsets]

    def commit_transaction(self, _timeout) -> None:
        if self.fail_commit:
            raise KafkaException(self.fail_commit.pop(0))
        self.committed += self.open
        self.offsets.append(self.pending_offsets)
        self.open = []

    def abort_transaction(self, _timeout) -> None:
        self.open = []
        self.aborted += 1


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[int, int]] = []

    def seek(self, tp) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def consumer_group_metadata(self) -> object:
        return object()


class Codec:
    def encode(self, record: dict) -> bytes:
        return repr(record).encode()


class Message:
    def __init__(self, offset: int, ts: int, price: float) -> None:
        self._offset, self.tick = offset, {"symbol": "BTC", "source": "simulated", "ts": ts, "price": price}

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0

    def topic(self) -> str:
        return "crypto-prices"

    def value(self) -> dict:
        return self.tick


class TickCodec:
    def decode(self, value: dict) -> dict:
        return value


@pytest.fixture
def processor() -> AlertProcessor:
    p = AlertProcessor(Settings())
    p._producer, p.prices.client = FakeProducer(), FakeConsumer()
    p._alerts = p._states = Codec()
    p._ticks = TickCodec()
    p.book.set_rule(Rule("r1", "BTC", "above", price=100.0, created=T0))
    p.prices.positions = {(p.settings.prices_topic, 0): 10}
    p._committed = {0: 10}
    p._snapshot = p.book.snapshot()
    return p


def feed(p: AlertProcessor, ticks: list[tuple[int, float]], first_offset: int) -> None:
    p.prices.handle([Message(first_offset + i, ts, price) for i, (ts, price) in enumerate(ticks)], p._evaluate)


def test_one_transaction_holds_the_alert_the_state_and_the_offsets(processor):
    feed(processor, [(T0, 99.0), (T0 + 1000, 101.0)], 10)
    processor.commit()
    producer = processor._producer
    topics = [t for t, _, _ in producer.committed]
    assert topics.count(processor.settings.alerts_topic) == 1
    assert topics.count(processor.settings.alerts_state_topic) == 1  # the latest state only, once per commit
    assert producer.offsets == [[(0, 12)]] and processor._committed == {0: 12}
    assert processor.stats.transactions == 1


def test_an_aborted_commit_goes_back_to_the_last_commit_and_fires_the_same_alert_again(processor):
    feed(processor, [(T0, 99.0)], 10)
    processor.commit()
    feed(processor, [(T0 + 1000, 101.0)], 11)
    producer = processor._producer
    producer.fail_commit = [KafkaError(KafkaError._STATE, "fenced epoch", txn_requires_abort=True)]
    with pytest.raises(Unavailable):
        processor.commit()
    assert producer.aborted == 1 and processor.prices.client.seeks == [(0, 11)] and processor._next() == {0: 11}
    assert processor.book.states["r1|BTC|simulated"].last_ts == T0  # the tick at T0+1s is to be evaluated again
    feed(processor, [(T0 + 1000, 101.0)], 11)  # read again after the seek
    processor.commit()
    alerts = [k for t, k, _ in producer.committed if t == processor.settings.alerts_topic]
    assert alerts == [f"r1|BTC|simulated|{T0 + 1000}".encode()]


def test_a_retriable_commit_failure_is_retried_with_the_same_transaction(processor):
    feed(processor, [(T0, 99.0), (T0 + 1000, 101.0)], 10)
    producer = processor._producer
    producer.fail_commit = [KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)]
    with pytest.raises(Unavailable):
        processor.commit()
    assert processor._committing and producer.aborted == 0 and processor._committed == {0: 10}
    processor.commit()
    assert not processor._committing and processor._committed == {0: 12}
    assert [t for t, _, _ in producer.committed].count(processor.settings.alerts_topic) == 1


def test_a_fenced_producer_stops_the_processor(processor):
    feed(processor, [(T0, 99.0)], 10)
    processor._producer.fail_commit = [KafkaError(KafkaError._FENCED, "fenced", fatal=True)]
    with pytest.raises(KafkaException):
        processor.commit()
