"""The notifier's rules for a channel (streams/delivery.py): retry delays, the bound, the cap."""

from __future__ import annotations

import random

from streams.delivery import Policy, RateCap


def test_retries_back_off_to_a_cap_with_jitter_and_honour_retry_after():
    policy = Policy(first_retry=1.0, max_retry=300.0)
    rng = random.Random(1)
    delays = [policy.retry_delay(n, rng=rng) for n in range(1, 12)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and 3.2 <= delays[2] <= 4.8
    assert all(240 <= d <= 360 for d in delays[9:])
    assert policy.retry_delay(5, retry_after=2.0) == 2.0 and policy.retry_delay(1, retry_after=0) == 0.0


def test_the_bound_counts_from_the_firing():
    assert Policy(give_up_after=3600).deadline_ms(1_000) == 3_601_000


def test_the_cap_is_so_many_messages_in_any_minute():
    cap = RateCap(3)
    for t in (0.0, 1.0, 2.0):
        assert cap.room(t)
        cap.record(t)
    assert not cap.room(59.9)
    assert cap.room(60.0)  # the first one is a minute old
