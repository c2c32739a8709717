"""Reading numbers out of API payloads, and deciding whether a tick is plausible enough to publish.

Two layers, so nothing invalid is published and nothing is dropped silently:
- adapters read payloads with `number` and `iso_ms`; a payload they cannot turn into a `Tick`
  at all (missing or non-numeric price, no timestamp, wrong shape) is skipped by the adapter,
  logged, and counted in its `rejected` counter;
- a tick that parsed but is not plausible (NaN, infinite, zero or negative price, negative
  volume, a timestamp from the future) is still yielded, and the caller drops it when
  `reject_reason(tick, now_ms)` returns a reason, counting per reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptopulse.tick import Tick
from cryptopulse.times import epoch_ms

MAX_FUTURE_MS = 5 * 60 * 1000  # clocks drift, but an event 5 minutes ahead is a bug


def number(value: object) -> float:
    """A float from a JSON number or numeric string (APIs send both); ValueError for anything else.

    "NaN" and "Infinity" parse, on purpose: `reject_reason` names them, which says more than a parse error.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def optional_number(value: object) -> float | None:
    """Like `number`, but a missing (null) value is None: optional fields such as volume may be absent."""
    return None if value is None else number(value)


def iso_ms(text: object) -> int:
    """Epoch milliseconds from an ISO 8601 UTC time such as 2025-06-02T12:00:00.214586Z."""
    if not isinstance(text, str):
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    return epoch_ms(datetime.fromisoformat(text))  # exact: float timestamps are 1 ms off now and then


def pct_change(price: float, open_: float | None) -> float | None:
    """Change in percent from `open_` to `price`; None when there is no usable open."""
    return (price / open_ - 1) * 100 if open_ else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad_number(value: object, what: str, positive: bool) -> str | None:
    if value is None:
        return f"missing {what}"
    if not _is_number(value):
        return f"non-numeric {what}"
    if math.isnan(value):
        return f"nan {what}"
    if math.isinf(value):
        return f"infinite {what}"
    if value < 0:
        return f"negative {what}"
    if positive and value == 0:
        return f"zero {what}"
    return None


def reject_reason(tick: Tick, now_ms: int) -> str | None:
    """Why `tick` must not be published ("nan price", "future timestamp", ...), or None if it is fine."""
    if reason := _bad_number(tick.price, "price", positive=True):
        return reason
    if tick.volume_24h is not None and (reason := _bad_number(tick.volume_24h, "volume", positive=False)):
        return reason
    change = tick.change_24h_pct
    if change is not None and not (_is_number(change) and math.isfinite(change)):
        return "invalid change"
    if not _is_number(tick.ts) or tick.ts <= 0:
        return "invalid timestamp"
    if tick.ts > now_ms + MAX_FUTURE_MS:
        return "future timestamp"
    return None


def non_finite(record: Mapping[str, Any]) -> str | None:
    """The first field of an Avro record (a tick's or a candle's) holding NaN or an infinity, as "nan price" or
    "infinite volume_24h"; None when every number is finite. The publishers' last check, for every path (live,
    back-fill, tests): JSON has no NaN, so one stored would make every chart that contains it unreadable."""
    for name, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{'nan' if math.isnan(value) else 'infinite'} {name}"
    return None
