"""What every source is to its caller: a name, its symbols, an endless async stream of `Tick`s, and counters.

The caller (the CLI) only ever does `async for tick in source.ticks()`; how a source gets its data
(polling, a WebSocket, a random walk) and how it survives outages stays inside the source.
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from typing import ClassVar

from cryptopulse.errors import UnknownSymbol
from cryptopulse.tick import Tick

log = logging.getLogger(__name__)

# The coins every real source maps; a symbol outside a source's `known` fails at construction,
# not hours later as an empty stream.
COINS = ("BTC", "ETH", "XRP", "SOL", "ADA", "DOGE")
# What reading a malformed payload raises (missing key, wrong shape, bad number, int(inf)); adapters catch these.
PAYLOAD_ERRORS = (LookupError, TypeError, ValueError, ArithmeticError, AttributeError)


def backoff(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))).

    Full jitter spreads the reconnects of many clients after a shared outage instead of
    having them all come back in the same second.
    """
    return rng() * min(cap, base * 2 ** (attempt - 1))


class Source(ABC):
    """A market-data source: `async for tick in source.ticks()` runs until cancelled.

    Counters for the caller's logs and metrics:
    - `reconnects`: times the source lost its feed and got it back (a new WebSocket connection,
      or a REST request that succeeded after failing);
    - `rejected`: payloads skipped because they could not be read as a tick at all.
    """

    name: ClassVar[str]
    known: ClassVar[tuple[str, ...] | None] = COINS  # None: any symbol

    def __init__(self, symbols: Iterable[str]) -> None:
        self.symbols = list(dict.fromkeys(s.strip().upper() for s in symbols))
        if not self.symbols:
            raise ValueError(f"{self.name}: give at least one symbol, e.g. BTC,ETH,XRP")
        for symbol in self.symbols:
            if self.known is not None and symbol not in self.known:
                raise UnknownSymbol(f"{self.name} has no market for {symbol}; known: {', '.join(self.known)}")
        self.reconnects = 0
        self.rejected = 0

    @abstractmethod
    def ticks(self) -> AsyncIterator[Tick]:
        """An endless stream of ticks; raises `SourceError` only when retrying cannot help."""

    def _skip(self, payload: object, error: Exception) -> None:
        """Count and log a payload that cannot be read as a tick; the stream goes on without it."""
        self.rejected += 1
        log.warning("%s: skipped a payload it cannot read (%s: %s): %.200r",
                    self.name, type(error).__name__, error, payload)
