"""Alert rules evaluated on ticks (streams/alertbook.py): once per crossing, re-armed, moves within a window,
event time; the rule type's checks and the records' schemas."""

from __future__ import annotations

import json

import fastavro
import pytest

from cryptopulse.alert import Rule, alert_id
from cryptopulse.errors import ConfigError
from cryptopulse.settings import Settings
from streams.alertbook import AlertBook, RuleState

M = 60_000
T0 = 1_800_000_000_000


def book(*rules: Rule) -> AlertBook:
    b = AlertBook()
    for rule in rules:
        b.set_rule(rule)
    return b


def feed(b: AlertBook, prices: list[float], symbol: str = "BTC", source: str = "simulated", step: int = 1000,
         start: int = T0) -> list[dict]:
    fired = []
    for i, price in enumerate(prices):
        fired += b.evaluate(symbol, source, start + i * step, price)
    return fired


def test_above_fires_once_per_crossing_and_re_arms_when_the_price_is_back():
    b = book(Rule("r1", "BTC", "above", price=100.0, created=T0))
    fired = feed(b, [99, 99.5, 101, 102, 103, 100.5, 99, 98, 100, 101, 105])
    assert [a["price"] for a in fired] == [101, 101]  # 99.5 -> 101, then 100 -> 101 (re-armed at the line)
    first = fired[0]
    assert first["_id"] == alert_id("r1", "BTC", "simulated", T0 + 2000) and first["ts"] == T0 + 2000
    assert first["direction"] == "up" and first["threshold"] == 100 and first["reference_price"] == 99.5
    assert "crossed above" in first["message"]


def test_below_mirrors_above():
    b = book(Rule("r1", "ETH", "below", price=50.0, created=T0))
    fired = feed(b, [55, 49, 48, 51, 49.9], symbol="ETH")
    assert [(a["price"], a["direction"]) for a in fired] == [(49, "down"), (49.9, "down")]


def test_a_rule_added_beyond_its_line_waits_for_a_crossing():
    b = book(Rule("r1", "BTC", "above", price=100.0, created=T0))
    assert feed(b, [105, 106, 104]) == []
    assert [a["price"] for a in feed(b, [99, 101], start=T0 + 10_000)] == [101]


def test_ticks_before_the_rule_was_made_and_late_ticks_are_not_evaluated():
    b = book(Rule("r1", "BTC", "above", price=100.0, created=T0 + 5000))
    assert feed(b, [99, 101, 99, 101, 99]) == []  # event times T0 .. T0+4s: before the rule
    assert feed(b, [99], start=T0 + 5000) == []
    assert b.evaluate("BTC", "simulated", T0 + 4000, 120) == []  # older than the last evaluated: ignored
    assert b.evaluate("BTC", "simulated", T0 + 5000, 120) == []  # the same event time again: a redelivery
    assert len(b.evaluate("BTC", "simulated", T0 + 6000, 120)) == 1


def test_each_source_and_symbol_is_its_own_crossing_and_a_source_rule_watches_only_its_source():
    b = book(Rule("any", "BTC", "above", price=100.0, created=T0),
             Rule("bin", "BTC", "above", price=100.0, source="binance", created=T0))
    fired = feed(b, [99, 101], source="simulated") + feed(b, [99, 101], source="binance") + feed(b, [99, 101], "ETH")
    assert sorted((a["rule_id"], a["source"]) for a in fired) == [("any", "binance"), ("any", "simulated"),
                                                                 ("bin", "binance")]


def test_move_fires_when_the_change_within_the_window_exceeds_the_percent_then_re_arms():
    b = book(Rule("m", "BTC", "move", pct=5.0, minutes=10, created=T0))
    # one tick a minute: 100 .. 104 is not more than 5 %; 105.5 is, from the minimum 100 nine minutes earlier
    prices = [100, 101, 102, 103, 104, 104, 104, 104, 104, 105.5, 106, 107]
    fired = feed(b, prices, step=M)
    assert len(fired) == 1
    alert = fired[0]
    assert alert["price"] == 105.5 and alert["direction"] == "up" and alert["reference_price"] == 100
    assert alert["change_pct"] == pytest.approx(5.5) and alert["reference_ts"] == T0
    # minutes later the 100 has left the window and the price is within 5 % of every point: re-armed
    later = feed(b, [107] * 12, step=M, start=T0 + 12 * M)
    assert later == [] and b.states["m|BTC|simulated"].armed
    fall = feed(b, [107, 101.5], step=M, start=T0 + 24 * M)
    assert [(a["direction"], round(a["change_pct"], 2)) for a in fall] == [("down", -5.14)]


def test_a_move_slower_than_the_window_never_fires():
    b = book(Rule("m", "BTC", "move", pct=5.0, minutes=5, created=T0))
    assert feed(b, [100 * 1.009 ** i for i in range(60)], step=M) == []  # +0.9 % a minute: < 5 % in 5 minutes


def test_the_move_window_stays_small_and_survives_a_round_trip_through_its_avro_record():
    b = book(Rule("m", "BTC", "move", pct=50.0, minutes=60, created=T0))
    import random
    rng = random.Random(7)
    price = 100.0
    for i in range(3600):
        price *= 1 + rng.gauss(0, 0.001)
        b.evaluate("BTC", "simulated", T0 + i * 1000, price)
    state = b.states["m|BTC|simulated"]
    assert len(state.lows) + len(state.highs) < 400
    schema = fastavro.parse_schema(json.loads((Settings().schemas_dir / "alert_state.avsc").read_text()))
    record = state.to_record()
    fastavro.validate(record, schema, raise_errors=True)
    assert RuleState.from_record(record) == state


def test_a_restored_snapshot_evaluates_the_same_ticks_to_the_same_alerts():
    b = book(Rule("r1", "BTC", "above", price=100.0, created=T0))
    feed(b, [99])
    saved = b.snapshot()
    first = feed(b, [99.5, 101], start=T0 + 1000)
    b.restore(saved)
    again = feed(b, [99.5, 101], start=T0 + 1000)
    assert [a["_id"] for a in first] == [a["_id"] for a in again] and len(first) == 1


def test_removing_a_rule_drops_its_states_and_says_which():
    b = book(Rule("r1", "BTC", "above", price=100.0, created=T0), Rule("r2", "BTC", "below", price=90, created=T0))
    feed(b, [95])
    changed, removed = b.take_changes()
    assert {s.key for s in changed} == {"r1|BTC|simulated", "r2|BTC|simulated"} and removed == []
    b.remove_rule("r1")
    assert b.take_changes() == ([], ["r1|BTC|simulated"])
    assert feed(b, [101], start=T0 + 1000) == []


def test_alert_records_match_the_schema():
    b = book(Rule("r1", "BTC", "above", price=100.0, created=T0), Rule("m", "BTC", "move", pct=1, minutes=1,
                                                                          created=T0))
    fired = feed(b, [99, 101])
    assert len(fired) == 2
    schema = fastavro.parse_schema(json.loads((Settings().schemas_dir / "alert.avsc").read_text()))
    for alert in fired:
        fastavro.validate(alert, schema, raise_errors=True)
    rule_schema = fastavro.parse_schema(json.loads((Settings().schemas_dir / "alert_rule.avsc").read_text()))
    rule = Rule("r1", "BTC", "move", pct=2.5, minutes=15, source="binance", created=T0)
    fastavro.validate(rule.to_record(), rule_schema, raise_errors=True)
    assert Rule.from_record(rule.to_record()) == rule


@pytest.mark.parametrize("kwargs", [
    {"symbol": "btc-usd", "kind": "above", "price": 1.0},
    {"symbol": "BTC", "kind": "sideways", "price": 1.0},
    {"symbol": "BTC", "kind": "above", "price": 0.0},
    {"symbol": "BTC", "kind": "below", "price": float("inf")},
    {"symbol": "BTC", "kind": "move", "pct": 5.0},
    {"symbol": "BTC", "kind": "move", "pct": -1.0, "minutes": 5},
    {"symbol": "BTC", "kind": "move", "pct": 1.0, "minutes": 0},
])
def test_a_bad_rule_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        Rule("x", **kwargs)
