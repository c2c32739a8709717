"""reject_reason and the number parsing the adapters share."""

from __future__ import annotations

import math

import pytest

from cryptopulse.tick import Tick
from producer.sources.validation import MAX_FUTURE_MS, iso_ms, number, optional_number, reject_reason

NOW = 1_748_865_600_000


def tick(**changes: object) -> Tick:
    fields = {"symbol": "BTC", "source": "test", "ts": NOW, "price": 105_000.0, "volume_24h": 1e9,
              "change_24h_pct": -1.5} | changes
    return Tick(**fields)


@pytest.mark.parametrize(("changes", "reason"), [
    ({}, None),
    ({"volume_24h": None, "change_24h_pct": None}, None),
    ({"volume_24h": 0.0}, None),
    ({"ts": NOW + MAX_FUTURE_MS}, None),
    ({"price": math.nan}, "nan price"),
    ({"price": math.inf}, "infinite price"),
    ({"price": -math.inf}, "infinite price"),
    ({"price": 0.0}, "zero price"),
    ({"price": -3.0}, "negative price"),
    ({"price": None}, "missing price"),
    ({"price": "105000"}, "non-numeric price"),
    ({"volume_24h": -1.0}, "negative volume"),
    ({"volume_24h": math.nan}, "nan volume"),
    ({"volume_24h": math.inf}, "infinite volume"),
    ({"change_24h_pct": math.nan}, "invalid change"),
    ({"ts": 0}, "invalid timestamp"),
    ({"ts": NOW + MAX_FUTURE_MS + 1}, "future timestamp"),
])
def test_reject_reason(changes: dict, reason: str | None) -> None:
    assert reject_reason(tick(**changes), NOW) == reason


def test_numbers_come_from_json_numbers_and_numeric_strings() -> None:
    assert number("105231.45000000") == 105231.45
    assert number(2) == 2.0
    assert math.isnan(number("NaN"))  # parses, so reject_reason can name it
    assert optional_number(None) is None
    for bad in (None, True, "abc", "", [1], {"v": 1}):
        with pytest.raises(ValueError):
            number(bad)


def test_iso_times_become_epoch_milliseconds() -> None:
    assert iso_ms("2025-06-02T12:00:00.214586Z") == 1_748_865_600_214
    assert iso_ms("2025-06-02T11:59:00.000Z") == 1_748_865_540_000
    with pytest.raises(ValueError):
        iso_ms(1748865600)
