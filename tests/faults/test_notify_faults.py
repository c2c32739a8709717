"""Kafka killed (-9) while the notifier delivers (issue 20): every alert stored still reaches each channel once
(counting distinct idempotency keys), nothing acknowledged before the kill is sent again, and the notifier rides
the outage out without exiting.

What should happen, and why (streams/notify.py): a channel's worker that got the receiver's acknowledgement while
Kafka was away keeps the outcome in memory and retries its transaction (outcome + the channel's offset) until Kafka
is back, before sending anything else on that channel; a transaction Kafka aborted is written again with the same
records. So the receivers see each alert once, and the alerts fired after Kafka is back come as usual.

Like the rest of tests/faults it kills a part of the shared stack and needs the stack's supervisor to bring it
back: run it with the fault suite (`pytest tests/faults`), not beside other test sessions.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from pymongo import MongoClient

from control.stack import processes
from tests.faults.test_faults import component
from tests.integration.conftest import wait_for
from tests.integration.test_notify import Scenario, exactly
from tests.receivers import Receiver

DOWN_S = 10


@pytest.fixture
def mongo(settings):
    client = MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=120_000)
    yield client
    client.close()


def test_kafka_killed_while_delivering(settings, mongo, tmp_path):
    receiver = Receiver()
    scenario = Scenario(settings, tmp_path, receiver)
    kafka = component(settings, "kafka")
    try:
        hook = scenario.channel("hook", "webhook", f"{receiver.url}/hook/kafka-kill")
        phone = scenario.channel("phone", "ntfy", f"{receiver.url}/ntfy/kafka-kill-{scenario.tag}")
        rule = scenario.start(hook, phone)
        receiver.slow("/", 0.5)  # deliveries still going on when Kafka goes
        after = scenario.fire(10)
        stored = wait_for(lambda: exactly(10, lambda: scenario.stored(mongo, rule)), 60, "the 10 alerts stored")
        wait_for(lambda: len(receiver.delivered_keys("/hook/kafka-kill")) >= 3, 60, "the first deliveries")

        pid = kafka.pid(settings.state_dir)
        assert pid, "Kafka is not running"
        processes.hold(settings, "kafka")
        os.kill(pid, signal.SIGKILL)
        time.sleep(DOWN_S)
        processes.release(settings, "kafka")
        wait_for(lambda: kafka.pid(settings.state_dir) not in (None, pid) and kafka.ready(), 240,
                 "the supervisor to bring Kafka back")
        receiver.slow("/", 0)

        for prefix in ("/hook/kafka-kill", f"/ntfy/kafka-kill-{scenario.tag}"):
            wait_for(lambda prefix=prefix: set(receiver.delivered_keys(prefix)) >= stored, 180,
                     f"every alert at {prefix} after Kafka came back")
        # and alerts fired after the outage come as usual
        scenario.fire(2, start=after + 10_000)
        everything = wait_for(lambda: exactly(12, lambda: scenario.stored(mongo, rule)), 120, "the 12 alerts stored")
        for prefix in ("/hook/kafka-kill", f"/ntfy/kafka-kill-{scenario.tag}"):
            wait_for(lambda prefix=prefix: set(receiver.delivered_keys(prefix)) >= everything, 120,
                     f"the later alerts at {prefix}")
        time.sleep(3)
        resent = {}
        for prefix in ("/hook/kafka-kill", f"/ntfy/kafka-kill-{scenario.tag}"):
            keys = receiver.delivered_keys(prefix)
            assert set(keys) == everything, f"{prefix}: {set(keys) ^ everything}"
            resent[prefix] = len(keys) - len(set(keys))
        print(f"\nKafka down {DOWN_S} s while delivering: 12 alerts on 2 channels, resent {resent}")
        assert not any(resent.values()), "an acknowledged alert was sent again: its outcome was lost in the outage"
        assert scenario.notifier.process.poll() is None, "the notifier exited during the outage"
        assert scenario.alerts.process.poll() is None, "the alert processor exited during the outage"
    finally:
        scenario.close()
        receiver.close()
