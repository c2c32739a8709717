"""The notifier's rules for one channel, pure (no Kafka, no network): when to try again, when to give up, and the
cap on messages a minute (docs/alerts.md, "Delivery"). streams/notify.py applies them.

- Retries: after 1 s, 2 s, 4 s ... up to `max_retry` (5 min), each ±20 % (so channels that failed together do
  not all come back at once); a receiver's Retry-After replaces that delay (it said when).
- Giving up: an alert still failing `give_up_after` (24 h) after it was fired is dead-lettered. The bound counts
  from the firing, which every restart knows, not from a first attempt, which only the process that made it did.
  An alert whose turn comes past its bound while its channel is failing is dead-lettered without another attempt
  (a channel dead for days does not try each of its alerts once more, a timeout each).
- The cap: at most `cap_per_minute` messages a minute per channel. An alert beyond it is held, with every alert
  after it, and they go as one summary message a minute after the first was held: one message instead of a flood,
  and the channel's order kept.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

WINDOW = 60.0  # seconds: the cap's period


@dataclass(frozen=True)
class Policy:
    cap_per_minute: int = 30
    give_up_after: float = 24 * 3600.0  # seconds after an alert was fired
    first_retry: float = 1.0
    max_retry: float = 300.0

    def retry_delay(self, failures: int, retry_after: float | None = None,
                    rng: random.Random | None = None) -> float:
        """Seconds before the next attempt after `failures` failed ones: the receiver's Retry-After when it gave
        one, else an exponential backoff with jitter."""
        if retry_after is not None:
            return max(0.0, retry_after)
        base = min(self.max_retry, self.first_retry * 2 ** max(0, failures - 1))
        return base * (rng or random).uniform(0.8, 1.2)

    def deadline_ms(self, fired_at_ms: int) -> int:
        """When an alert fired at `fired_at_ms` is given up on if it is still failing."""
        return fired_at_ms + int(self.give_up_after * 1000)


class RateCap:
    """The messages a channel was sent in the last minute, against its cap."""

    def __init__(self, cap: int, window: float = WINDOW) -> None:
        self.cap = cap
        self.window = window
        self.sent: deque[float] = deque()

    def _forget(self, now: float) -> None:
        while self.sent and self.sent[0] <= now - self.window:
            self.sent.popleft()

    def room(self, now: float) -> bool:
        """May one more message go now?"""
        self._forget(now)
        return len(self.sent) < self.cap

    def record(self, now: float) -> None:
        self.sent.append(now)
