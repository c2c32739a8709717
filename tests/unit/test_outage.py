"""cryptopulse.outage: one line when a dependency goes, one when it is back; rate-limited librdkafka lines."""

from __future__ import annotations

import logging

from cryptopulse.outage import Backoff, Outage, RateLimitFilter, librdkafka_logger


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_said_once_when_it_starts_and_once_when_it_ends(caplog):
    clock = Clock()
    outage = Outage("Kafka", logging.getLogger("t"), clock)
    with caplog.at_level(logging.WARNING):
        assert outage.down("refused") is True
        for _ in range(100):
            assert outage.down("refused again") is False
        clock.now += 12.5
        assert outage.status() == {"ok": False, "down_for_s": 12.5, "error": "refused again"}
        assert outage.up() is True
        assert outage.up() is False
    assert [r.getMessage() for r in caplog.records] == [
        "Kafka unavailable (refused); waiting for it, retrying quietly", "Kafka is back after 12.5 s"]
    assert outage.count == 1 and not outage.is_down and outage.status() == {"ok": True}


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(0.5, 4)
    assert [backoff.next() for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    backoff.reset()
    assert backoff.next() == 0.5


def test_the_rate_limit_lets_a_burst_through_then_says_how_many_it_held_back():
    clock = Clock()
    limit = RateLimitFilter(period=60, burst=3, clock=clock)
    records = [logging.LogRecord("l", logging.ERROR, "", 0, f"refused {i}", None, None) for i in range(10)]
    assert [limit.filter(r) for r in records[:5]] == [True, True, True, False, False]
    clock.now += 61
    assert limit.filter(records[5]) is True
    assert records[5].msg.startswith("(2 similar lines held back in the last 60 s)")


def test_librdkafka_loggers_are_rate_limited_once():
    logger = librdkafka_logger("unit")
    assert librdkafka_logger("unit") is logger
    assert sum(isinstance(f, RateLimitFilter) for f in logger.filters) == 1
