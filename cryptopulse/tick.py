"""The one normalized data type every source produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptopulse.times import epoch_ms


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


# A tick as the stream processors read it: (symbol, source, event time in epoch ms, price, published_at as decoded
# or None). A plain tuple, the cheapest to make on the roll-up's path (a NamedTuple costs it twice as much).
TickRead = tuple[str, str, int, float, Any]


def tick_read(record: dict[str, Any]) -> TickRead:
    """The fields of a decoded tick record the stream processors use; KeyError or ValueError for a record that is
    not a tick."""
    ts = record["ts"]
    return (record["symbol"], record["source"], ts if isinstance(ts, int) else epoch_ms(ts), float(record["price"]),
            record.get("published_at"))
