"""The dashboard's in-memory views: which rows a window gets, what a view keeps, what it skips unread (no service
needed)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from cryptopulse.kafka import Unavailable
from cryptopulse.settings import Settings
from cryptopulse.times import DAY_MS
from tests.fake_kafka import FakeCodec, FakeMessage
from webui.series import CandleRow, TickRow
from webui.views import LoadTurns, WindowView, candle_key, candle_spec, tick_spec

M = 60_000


def row(start: int, price: float = 1.0) -> CandleRow:
    return CandleRow(start, price, price, price, price)


def minutes(settings: Settings | None = None) -> WindowView:
    return WindowView(settings or Settings(), candle_spec(settings or Settings(), "1m"))


def test_a_window_is_one_source_sorted_and_within_its_bounds():
    now = int(time.time() * 1000) // M * M
    view = minutes()
    for start in (now - 3 * M, now - M, now - 2 * M, now - 10 * M):
        view.put("BTC", "coingecko", row(start))
    view.put("BTC", "binance", row(now - 5 * M))
    view.put("ETH", "binance", row(now))
    source, rows = view.window("BTC", now - 4 * M, now)
    assert source == "coingecko"  # the source of the newest row in the window: never two sources mixed
    assert [r.start for r in rows] == [now - 3 * M, now - 2 * M, now - M]
    assert view.window("BTC", now - 6 * M, now - 4 * M) == ("binance", [row(now - 5 * M)])
    assert view.window("BTC", now - 6 * M, now, source="binance") == ("binance", [row(now - 5 * M)])
    assert view.window("XRP", now - 6 * M, now) == (None, [])
    assert view.newest_source("BTC") == "coingecko" and view.newest_source("XRP") is None
    assert view.first("BTC", "coingecko") == now - 10 * M and view.first("XRP", "binance") is None
    assert view.last_before("BTC", "coingecko", now - 2 * M) == now - 3 * M
    assert view.last_before("BTC", "coingecko", now - 10 * M) is None


def test_a_replaced_candle_keeps_its_latest_version():
    now = int(time.time() * 1000) // M * M
    view = minutes()
    view.put("BTC", "simulated", row(now, 1.0))
    view.put("BTC", "simulated", row(now, 2.0))
    assert view.window("BTC", now, now)[1] == [row(now, 2.0)]


def test_old_candles_are_not_kept_and_old_windows_are_not_covered():
    now = int(time.time() * 1000)
    view = WindowView(Settings(), replace(candle_spec(Settings(), "1m"), keep_ms=10 * M))
    assert not view.covers(now - M)  # nothing is answered from memory before the load
    view.ready.set()
    assert view.covers(now - 9 * M) and not view.covers(now - 11 * M)
    view.put("BTC", "simulated", row(now - now % M - 20 * M))  # older than it keeps: ignored
    view.put("BTC", "simulated", row(now - now % M - 5 * M))
    assert [r.start for r in view.window("BTC", 0, now)[1]] == [now - now % M - 5 * M]
    view.forget_old(now + 6 * M)
    assert view.window("BTC", 0, now) == (None, [])


def test_a_view_of_everything_covers_any_window_once_loaded():
    view = WindowView(Settings(), candle_spec(Settings(), "1d"))
    assert view.floor() is None and not view.covers(0)
    view.ready.set()
    view.put("BTC", "simulated", row(0))  # 1970: a view of everything keeps it
    assert view.covers(0) and view.window("BTC", 0, DAY_MS)[1] == [row(0)]


def test_weeks_are_probed_from_monday():
    """A window of 1w candles is read by probing each week's start: Mondays 00:00 UTC, not multiples of 7 days."""
    view = WindowView(Settings(), candle_spec(Settings(), "1w"))
    mondays = [int(datetime(2026, 3, day, tzinfo=UTC).timestamp() * 1000) for day in (2, 9, 16)]
    for monday in mondays:
        view.put("BTC", "simulated", row(monday))
    assert view.aligned
    thursday = mondays[0] - 4 * DAY_MS
    assert [r.start for r in view.window("BTC", thursday, mondays[-1])[1]] == mondays
    assert [r.start for r in view.window("BTC", mondays[0] + 1, mondays[-1])[1]] == mondays[1:]


def test_a_tick_view_keeps_an_hour_and_stops_answering_when_full():
    now = int(time.time() * 1000)
    view = WindowView(Settings(), replace(tick_spec(Settings()), max_rows=3))
    view.ready.set()
    assert view.covers(now - 3_600_000) and not view.covers(now - 2 * 3_600_000)
    for i in range(3):
        view.put("BTC", "binance", TickRow(now - 1000 * i, 100.0 + i))
    view.put("BTC", "binance", TickRow(now, 99.0))  # the same time again replaces, and does not count
    assert view.window("BTC", now - 5000, now) == ("binance", [TickRow(now - 2000, 102.0), TickRow(now - 1000, 101.0),
                                                               TickRow(now, 99.0)])
    assert view.covers(now - 1000)
    view.put("BTC", "binance", TickRow(now + 1, 98.0))  # a fourth row: more than it may hold
    assert view.full and not view.covers(now - 1000)  # the dashboard reads MongoDB instead


class KeyedMessage(FakeMessage):
    def __init__(self, key: bytes | None, value: object) -> None:
        super().__init__(value, 0)
        self._key = key

    def key(self) -> bytes | None:
        return self._key


def candle_record(start: int, price: float = 1.0, symbol: str = "BTC") -> dict[str, object]:
    return {"symbol": symbol, "source": "simulated", "start": start, "open": price, "high": price, "low": price,
            "close": price, "volume": None}


def loading(interval: str = "1m") -> tuple[WindowView, FakeCodec]:
    codec = FakeCodec()
    view = WindowView(Settings(), candle_spec(Settings(), interval), make_codec=lambda: codec)
    view._codec, view._cutoff = codec, view.floor()  # as loading sets them
    return view, codec


def test_a_candle_older_than_the_window_is_skipped_by_its_key_without_being_decoded():
    """What a back-fill published all at once costs a view that starts now: its keys read, not its values."""
    now = int(time.time() * 1000) // M * M
    view, codec = loading()
    old = now - 30 * DAY_MS
    assert view._decode(KeyedMessage(f"BTC|simulated|1m|{old}".encode(), candle_record(old))) is None
    assert view.skipped == 1 and codec.asked == 0
    assert view._decode(KeyedMessage(b"no start here", candle_record(now))) == (("BTC", "simulated"), now, row(now))
    assert codec.asked == 1  # read: the value decides
    assert candle_key(b"BTC|simulated|1m|1700000000000") == ("BTC", "simulated", "1m", 1_700_000_000_000)
    assert candle_key(None) is None and candle_key(b"BTC|simulated|1m") is None and candle_key(b"a|b|c|d") is None


def test_a_candle_is_decoded_when_a_window_first_asks_for_it_and_then_kept_decoded():
    """Loading files each candle under its key undecoded: a fresh dashboard waits for its keys, not its values."""
    now = int(time.time() * 1000) // M * M
    view, codec = loading()
    messages = [KeyedMessage(f"BTC|simulated|1m|{now - i * M}".encode(), candle_record(now - i * M, 100.0 + i))
                for i in range(10)]
    view._apply_all([decoded for m in messages if (decoded := view._decode(m)) is not None])
    assert codec.asked == 0 and view.status()["rows"] == 10
    assert view.newest_source("BTC") == "simulated" and view.first("BTC", "simulated") == now - 9 * M
    assert view.window("BTC", now - 2 * M, now) == ("simulated", [row(now - 2 * M, 102.0), row(now - M, 101.0),
                                                                  row(now, 100.0)])
    assert codec.asked == 3  # only the window's
    assert [r.close for r in view.window("BTC", now - 3 * M, now)[1]] == [103.0, 102.0, 101.0, 100.0]
    assert codec.asked == 4  # the three decoded before are kept decoded
    update = KeyedMessage(f"BTC|simulated|1m|{now}".encode(), candle_record(now, 99.0))  # the open minute again
    view._apply_all([view._decode(update)])
    assert view.window("BTC", now, now)[1] == [row(now, 99.0)] and view.status()["rows"] == 10


def test_a_candle_filed_undecoded_that_cannot_be_charted_is_dropped_when_asked_for():
    """Bad values are found when decoded: undecodable (the sink's DLQ), a NaN, or not the candle its key names."""
    now = int(time.time() * 1000) // M * M
    view, codec = loading()
    records = {now: candle_record(now), now - M: b"not avro", now - 2 * M: candle_record(now - 2 * M, float("nan")),
               now - 3 * M: candle_record(now - 3 * M, symbol="ETH")}
    view._apply_all([view._decode(KeyedMessage(f"BTC|simulated|1m|{t}".encode(), value))
                     for t, value in records.items()])
    assert view.status()["rows"] == 4
    assert view.window("BTC", now - 3 * M, now) == ("simulated", [row(now)])
    assert view.status()["rows"] == 1 and "undecodable record skipped" in view.last_error
    codec.registry_up = False  # a value whose schema cannot be read now stays filed for a later ask
    later = now - 4 * M
    view._apply_all([view._decode(KeyedMessage(f"BTC|simulated|1m|{later}".encode(), candle_record(later)))])
    assert view.window("BTC", later, now)[1] == [row(now)] and view.status()["rows"] == 2
    codec.registry_up = True
    assert view.window("BTC", later, now)[1] == [row(later), row(now)]


def test_views_load_one_at_a_time_the_small_ones_and_the_default_charts_first():
    turns = LoadTurns(["1w", "5m", "ticks", "1m"])
    order: list[str] = []
    stopping = threading.Event()

    def load(name: str) -> None:
        turns.wait(name, stopping)
        order.append(name)
        turns.done(name)

    threads = [threading.Thread(target=load, args=(name,)) for name in ("1w", "5m", "1m", "ticks")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == ["1w", "1m", "5m", "ticks"]
    started = time.monotonic()
    LoadTurns(["ticks", "1m"]).wait("ticks", stopping, timeout=0.3)  # the one ahead never tries: not waited for ever
    assert 0.3 <= time.monotonic() - started < 5
    stopping.set()
    LoadTurns(["ticks", "1m"]).wait("ticks", stopping)  # told to stop: returns at once


def test_a_view_that_cannot_decode_what_it_holds_is_not_ready_while_the_registry_is_away():
    """Loading files candles undecoded, so a registry outage meets the view when it fetches their writer schema,
    before it says it is ready: it waits (Unavailable, said once by its follower), and says so when it is back."""
    now = int(time.time() * 1000) // M * M
    view, codec = loading()
    view._apply_all([view._decode(KeyedMessage(f"BTC|simulated|1m|{now}".encode(), candle_record(now)))])
    codec.registry_up = False
    with pytest.raises(Unavailable):
        view._learn_writer_schema()
    codec.registry_up = True
    view._learn_writer_schema()
    assert view.window("BTC", now, now)[1] == [row(now)]
