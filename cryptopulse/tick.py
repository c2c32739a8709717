"""The one normalized data type every source produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Tick:
    """One price observation of one coin from one source (schemas/tick.avsc)."""

    symbol: str
    source: str
    ts: int  # event time, epoch milliseconds (UTC)
    price: float
    quote: str = "USD"
    volume_24h: float | None = None  # rolling 24 h total as the source reports it
    change_24h_pct: float | None = None

    @property
    def id(self) -> str:
        """The document `_id`, derived from the identity (symbol, source, ts)."""
        return f"{self.symbol}|{self.source}|{self.ts}"

    def to_record(self, published_at: int | None = None) -> dict[str, Any]:
        """The Avro record for this tick; `published_at` is the producer's hand-over time (epoch ms)."""
        return {
            "_id": self.id,
            "symbol": self.symbol,
            "quote": self.quote,
            "source": self.source,
            "ts": self.ts,
            "price": self.price,
            "volume_24h": self.volume_24h,
            "change_24h_pct": self.change_24h_pct,
            "published_at": published_at,
        }
