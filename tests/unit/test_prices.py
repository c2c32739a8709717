"""A price as text (cryptopulse/prices.py), and every place that writes one: rule descriptions (`control alerts`,
the dashboard's rule list, the logs) and alert messages (streams/alertbook.py)."""

from __future__ import annotations

import math

import pytest

from control.alerts import render
from cryptopulse.alert import Rule
from cryptopulse.prices import price_text
from cryptopulse.topics import Definitions
from streams.alertbook import AlertBook

T0 = 1_800_000_000_000


@pytest.mark.parametrize(("value", "text"), [
    (10_000_000, "10,000,000"),           # large: thousands grouped, never 1e+07
    (10_000_000.0, "10,000,000"),
    (70_000, "70,000"),                   # whole: no ".00"
    (70_000.5, "70,000.50"),              # a fraction of a dollar: its cents, as prices are written
    (3_345.7, "3,345.70"),
    (1.5, "1.50"),
    (0.5, "0.50"),
    (70_123.456789, "70,123.46"),         # never less precise than a cent, and no more digits than it takes
    (3_512.8765, "3,512.88"),
    (1_234_567.891, "1,234,567.89"),      # a cent even past six significant digits
    (1.2345, "1.2345"),                   # many decimals: six significant digits, no zeros after them
    (1.23456789, "1.23457"),
    (0.5234, "0.5234"),
    (0.00001234, "0.00001234"),           # a small coin: never 1.234e-05
    (0.000012345678, "0.0000123457"),
    (1e-9, "0.000000001"),
    (999.9999999, "1,000"),               # rounding carries into the next digit
    (0.99999999, "1"),
    (100, "100"),
    (0, "0"),
    (-0.0, "0"),
    (-1_234.5, "-1,234.50"),              # a change may be negative
    (-0.00001234, "-0.00001234"),
])
def test_a_price_is_written_as_people_write_it(value, text):
    assert price_text(value) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_what_is_no_price_is_named(value):
    assert price_text(value) == str(value)  # "nan", "inf": never a made-up number


def test_no_price_comes_out_in_scientific_notation():
    for exponent in range(-12, 16):
        for mantissa in (1, 1.5, 9.87654321):
            text = price_text(mantissa * 10.0**exponent)
            assert "e" not in text.lower() and not text.endswith("."), text


def test_rule_descriptions_write_their_price_so():
    assert Rule("r1", "BTC", "above", price=1e7).describe() == "BTC above 10,000,000"
    small = Rule("r2", "SHIB", "below", price=0.00001234, source="binance")
    assert small.describe() == "SHIB below 0.00001234 (binance)"
    assert Rule("r3", "ETH", "move", pct=2.5, minutes=15).describe() == "ETH move 2.5% within 15 min"
    listed = render(Definitions({"abc": Rule("abc", "BTC", "above", price=70_000.0, created=T0)}, {}))
    assert "BTC above 70,000 " in listed and "e+" not in listed


def test_alert_messages_write_their_prices_so():
    book = AlertBook()
    book.set_rule(Rule("big", "BTC", "above", price=1e7, created=T0))
    book.set_rule(Rule("small", "SHIB", "below", price=0.00001234, created=T0))
    book.set_rule(Rule("move", "PEPE", "move", pct=5, minutes=10, created=T0))
    fired = []
    for i, (symbol, price) in enumerate([("BTC", 9_999_999.0), ("BTC", 10_000_123.456),
                                         ("SHIB", 0.0000125), ("SHIB", 0.00001201),
                                         ("PEPE", 0.000009), ("PEPE", 0.0000099)]):
        fired += book.evaluate(symbol, "simulated", T0 + i * 1000, price)
    assert [a["message"] for a in fired] == [
        "BTC crossed above 10,000,000: 10,000,123.46 (simulated)",
        "SHIB crossed below 0.00001234: 0.00001201 (simulated)",
        "PEPE rose 10.00% in 0.0 min to 0.0000099 (simulated; rule: more than 5% within 10 min)",
    ]
