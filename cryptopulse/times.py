"""Time in CryptoPulse: epoch milliseconds (UTC) everywhere, and the few spans every service counts in."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(value: datetime | int) -> int:
    """A timestamp-millis as epoch milliseconds, exactly: fastavro and pymongo give aware datetimes, and
    `int(value.timestamp() * 1000)` is a millisecond off for about 1 in 150 of them (float rounding).
    A naive datetime is taken as UTC."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return (aware - EPOCH) // MILLISECOND
    return int(value)


def now_ms() -> int:
    """The wall clock, in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def bucket_start(ts: int, interval_ms: int = MINUTE_MS) -> int:
    """The start of the bucket holding `ts` (floor, so it is right for times before 1970 too)."""
    return ts - ts % interval_ms


def iso_utc(value: datetime | int, timespec: str = "seconds") -> str:
    """A time as every command and the API write it: ISO 8601 in UTC with a Z, 2026-12-04T18:52:47Z (epoch ms or an
    aware datetime; a naive one is taken as UTC)."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        moment = EPOCH + value * MILLISECOND
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
