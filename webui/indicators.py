"""Technical indicators over the candles a chart shows: SMA and EMA (20, 50), VWAP and RSI(14). Pure code.

Each function takes the buckets' values in time order and returns one value per bucket, None where the
indicator is not defined yet (fewer buckets than its period). The chart's overlays, the `indicators`
WebSocket message and the history API's columns all come from `compute`, over the snapshot's own candles
and volume bars, so they are exactly what the chart shows.

- SMA(n): the mean of the last n closes.
- EMA(n): seeded with the SMA of the first n closes, then `close * k + previous * (1 - k)`, k = 2 / (n + 1).
Each is computed with the bars just before the window too (`warmup`, up to 50 of them), so that it is defined from
the window's first bar wherever the history goes back that far, and a page of older bars meets the newer ones
without a gap; VWAP alone is anchored at the window's start.

- VWAP: anchored at the window's start: Σ typical price × volume / Σ volume over the buckets so far, the
  typical price being (high + low + close) / 3; None while no volume has been seen.
- RSI(n) (Wilder): the first average gain and loss are the means of the first n changes between closes, then
  `average = (previous * (n - 1) + current) / n`; RSI = 100 − 100 / (1 + gain / loss), 100 when there is no
  loss (50 when nothing moved at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NAMES = ("sma20", "sma50", "ema20", "ema50", "vwap", "rsi14")

Values = list[float | None]


def sma(closes: Sequence[float], n: int) -> Values:
    out: Values = [None] * len(closes)
    total = 0.0
    for i, close in enumerate(closes):
        total += close
        if i >= n:
            total -= closes[i - n]
        if i >= n - 1:
            out[i] = total / n
    return out


def ema(closes: Sequence[float], n: int) -> Values:
    out: Values = [None] * len(closes)
    if len(closes) < n:
        return out
    k = 2 / (n + 1)
    value = sum(closes[:n]) / n
    out[n - 1] = value
    for i in range(n, len(closes)):
        value = closes[i] * k + value * (1 - k)
        out[i] = value
    return out


def vwap(highs: Sequence[float], lows: Sequence[float], closes: Sequence[float],
         volumes: Sequence[float | None]) -> Values:
    out: Values = [None] * len(closes)
    weighted = volume_sum = 0.0
    for i, (high, low, close, volume) in enumerate(zip(highs, lows, closes, volumes, strict=True)):
        if volume:
            weighted += (high + low + close) / 3 * volume
            volume_sum += volume
        if volume_sum > 0:
            out[i] = weighted / volume_sum
    return out


def rsi(closes: Sequence[float], n: int = 14) -> Values:
    out: Values = [None] * len(closes)
    if len(closes) <= n:
        return out
    gain = loss = 0.0
    for i in range(1, n + 1):
        change = closes[i] - closes[i - 1]
        gain += max(change, 0.0)
        loss += max(-change, 0.0)
    gain, loss = gain / n, loss / n
    out[n] = _rsi(gain, loss)
    for i in range(n + 1, len(closes)):
        change = closes[i] - closes[i - 1]
        gain = (gain * (n - 1) + max(change, 0.0)) / n
        loss = (loss * (n - 1) + max(-change, 0.0)) / n
        out[i] = _rsi(gain, loss)
    return out


def _rsi(gain: float, loss: float) -> float:
    if loss == 0:
        return 50.0 if gain == 0 else 100.0
    return 100.0 - 100.0 / (1.0 + gain / loss)


def compute(candles: Sequence[Sequence[float]], volume: Sequence[Sequence[Any]],
            names: Sequence[str] = NAMES, warmup: Sequence[Sequence[float]] = ()) -> dict[str, Values]:
    """`names` over a snapshot's `candles` ([t, open, high, low, close]) and `volume` ([t, volume]) bars, one value
    per candle, with the `warmup` candles before them read first; a name not in NAMES raises ValueError."""
    skip = len(warmup)
    closes = [c[4] for c in (*warmup, *candles)]
    shown = closes[skip:]
    by_time = {v[0]: v[1] for v in volume}
    out: dict[str, Values] = {}
    for name in names:
        if name.startswith("sma") and name in NAMES:
            out[name] = sma(closes, int(name[3:]))[skip:]
        elif name.startswith("ema") and name in NAMES:
            out[name] = ema(closes, int(name[3:]))[skip:]
        elif name == "vwap":
            out[name] = vwap([c[2] for c in candles], [c[3] for c in candles], shown,
                             [by_time.get(c[0]) for c in candles])
        elif name.startswith("rsi") and name in NAMES:
            out[name] = rsi(closes, int(name[3:]))[skip:]
        else:
            raise ValueError(f"unknown indicator {name!r}: choose among {', '.join(NAMES)}")
    return out


def message(snapshot: dict[str, Any], warmup: Sequence[Sequence[float]] = ()) -> dict[str, Any]:
    """The `indicators` message of a snapshot: every indicator as [[t, value], ...] where it is defined."""
    candles = snapshot.get("candles") or []
    values = compute(candles, snapshot.get("volume") or [], NAMES, warmup)
    times = [c[0] for c in candles]
    return {"type": "indicators", "symbol": snapshot.get("symbol"), "range": snapshot.get("range"),
            "interval": snapshot.get("interval"), "start": snapshot.get("start"), "end": snapshot.get("end"),
            "bucket_ms": snapshot.get("bucket_ms"),
            "series": {name: [[t, v] for t, v in zip(times, series, strict=True) if v is not None]
                       for name, series in values.items()}}
