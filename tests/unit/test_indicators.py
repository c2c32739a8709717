"""SMA, EMA, VWAP and RSI (webui/indicators.py) against plain reference computations and hand-made cases."""

from __future__ import annotations

import random

import pytest

from webui.indicators import NAMES, compute, ema, message, rsi, sma, vwap


def candles(count: int, seed: int = 7) -> tuple[list[list[float]], list[list[float]]]:
    rng = random.Random(seed)
    price, rows, volume = 100.0, [], []
    for i in range(count):
        close = price * (1 + rng.gauss(0, 0.01))
        rows.append([i * 60_000, price, max(price, close) * 1.001, min(price, close) * 0.999, close])
        volume.append([i * 60_000, rng.uniform(0, 50)])
        price = close
    return rows, volume


def reference_sma(closes, n):
    return [None if i + 1 < n else sum(closes[i + 1 - n:i + 1]) / n for i in range(len(closes))]


def reference_ema(closes, n):
    out, value = [], None
    for i in range(len(closes)):
        if i + 1 == n:
            value = sum(closes[:n]) / n
        elif i + 1 > n:
            value = value + (closes[i] - value) * 2 / (n + 1)
        out.append(value)
    return out


def reference_vwap(rows, volumes):
    out = []
    for i in range(len(rows)):
        volume = sum(volumes[:i + 1])
        out.append(None if volume == 0 else
                   sum((r[2] + r[3] + r[4]) / 3 * v for r, v in zip(rows[:i + 1], volumes, strict=False)) / volume)
    return out


def reference_rsi(closes, n):
    changes = [b - a for a, b in zip(closes, closes[1:], strict=False)]
    out = [None] * len(closes)
    if len(changes) < n:
        return out
    gain = sum(c for c in changes[:n] if c > 0) / n
    loss = sum(-c for c in changes[:n] if c < 0) / n
    out[n] = 100 - 100 / (1 + gain / loss) if loss else 100.0
    for i in range(n + 1, len(closes)):
        c = changes[i - 1]
        gain = (gain * (n - 1) + (c if c > 0 else 0)) / n
        loss = (loss * (n - 1) + (-c if c < 0 else 0)) / n
        out[i] = 100 - 100 / (1 + gain / loss) if loss else 100.0
    return out


def same(got, expected):
    assert [v is None for v in got] == [v is None for v in expected]
    assert [v for v in got if v is not None] == pytest.approx([v for v in expected if v is not None], rel=1e-12)


@pytest.mark.parametrize("count", [0, 1, 13, 14, 15, 20, 49, 50, 51, 1440])
def test_every_indicator_equals_the_reference(count):
    rows, volume = candles(count)
    closes = [r[4] for r in rows]
    got = compute(rows, volume)
    assert list(got) == list(NAMES) and all(len(v) == count for v in got.values())
    same(got["sma20"], reference_sma(closes, 20))
    same(got["sma50"], reference_sma(closes, 50))
    same(got["ema20"], reference_ema(closes, 20))
    same(got["ema50"], reference_ema(closes, 50))
    same(got["vwap"], reference_vwap(rows, [v for _, v in volume]))
    same(got["rsi14"], reference_rsi(closes, 14))


def test_hand_made_values():
    assert sma([1, 2, 3, 4], 2) == [None, 1.5, 2.5, 3.5]
    assert ema([1, 2, 3, 4], 3) == [None, None, 2.0, 3.0]  # seed 2, then 4 * 0.5 + 2 * 0.5
    assert vwap([2, 4], [0, 2], [1, 3], [0, 1]) == [None, 3.0]  # no volume yet, then (4 + 2 + 3) / 3
    rising = [float(i) for i in range(20)]
    assert rsi(rising, 14)[14:] == [100.0] * 6  # no loss at all
    assert rsi([5.0] * 20, 14)[14:] == [50.0] * 6  # nothing moved
    down_up = [10, 9, 10, 9, 10, 9, 10, 9, 10, 9, 10, 9, 10, 9, 10]
    assert rsi(down_up, 14)[14] == pytest.approx(50.0)  # 7 gains of 1 and 7 losses of 1


def test_a_bar_without_volume_adds_nothing_to_vwap():
    rows, volume = candles(5)
    volume[2][1] = 0.0
    del volume[3]  # a candle without a volume bar
    weights = [volume[0][1], volume[1][1], 0.0, 0.0, volume[3][1]]
    same(compute(rows, volume, ["vwap"])["vwap"], reference_vwap(rows, weights))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown indicator 'sma7'"):
        compute([], [], ["sma7"])


def test_the_message_holds_each_indicator_where_it_is_defined():
    rows, volume = candles(30)
    msg = message({"symbol": "BTC", "range": "24h", "start": 0, "end": 1, "bucket_ms": 60_000, "candles": rows,
                   "volume": volume})
    assert msg["type"] == "indicators" and set(msg["series"]) == set(NAMES)
    assert [t for t, _ in msg["series"]["sma20"]] == [r[0] for r in rows[19:]]
    assert msg["series"]["sma50"] == [] and len(msg["series"]["rsi14"]) == 16
    assert message({"symbol": "BTC", "candles": [], "volume": []})["series"]["vwap"] == []


def test_a_subscribe_may_ask_for_them():
    from webui.protocol import ProtocolError, parse_message

    assert parse_message('{"type":"subscribe","symbol":"BTC","indicators":true}', ("BTC",)).indicators is True
    assert parse_message('{"type":"subscribe","symbol":"BTC"}', ("BTC",)).indicators is False
    with pytest.raises(ProtocolError, match="indicators must be true or false"):
        parse_message('{"type":"subscribe","symbol":"BTC","indicators":"sma20"}', ("BTC",))
