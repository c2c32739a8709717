"""The history API (webui/api.py) in-process: parameters checked like a subscribe, rate limits, formats, pages, the
hardening every response has. The store's `_build` is replaced by synthetic candles (no service needed); the
store's sharing, cache, past-window rate and deadline are the real ones."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
from typing import Any

import pytest

from cryptopulse.settings import Settings
from webui.api import as_csv, table
from webui.app import create_app
from webui.history import build_snapshot
from webui.indicators import NAMES
from webui.protocol import ProtocolError, parse_history_query
from webui.series import CandleRow
from webui.state import state
from webui.timeframes import DEFAULT_TIMEFRAME, TIMEFRAME_MS, older_page, page_bounds, span_ms

SYMBOLS = ("BTC", "ETH", "XRP")
NOW = 1_790_000_000_000
BUILDS: list[tuple[Any, ...]] = []


async def synthetic(symbol: str, range_: str | None, end: int | None, span: int | None = None,
                    interval: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """A candle of the window's interval for every one of its buckets, prices moving up and down; a page ends where
    the synthetic history begins, at FIRST."""
    BUILDS.append((symbol, range_, end, span, interval, limit))
    window = span is not None or limit is not None  # not a chart's range
    interval = interval or DEFAULT_TIMEFRAME[range_ or ""]
    width = TIMEFRAME_MS[interval]
    stop = end if end is not None else int(time.time() * 1000)
    if limit is not None:
        first, last = page_bounds(stop, interval, limit)
        stop, span = last + width, last + width - first
    span = span or span_ms(range_ or "", interval)
    first = (stop - span) - (stop - span) % width + (0 if limit is not None else width)
    rows = [CandleRow(t, 100 + (i % 13), 101.5 + (i % 13), 99 + (i % 11), 100 + (i % 17) * 0.5, 1.0 + i % 3)
            for i, t in enumerate(range(first, stop, width)) if t >= FIRST]
    snap = build_snapshot(symbol, range_, stop, ("simulated", rows), (None, []), [], 1500,
                          span_ms=span if window else None, interval=interval)
    if limit is not None:
        snap |= {"type": "page", "before": end, "limit": limit,
                 "next_before": older_page(stop - span, bool(rows), FIRST, None)}
    return {**snap, "server_ms": 0.0}


FIRST = NOW - 30 * 86_400_000  # where the synthetic history begins


def call(paths: list[str], headers: dict[str, str] | None = None, **overrides: Any) -> list[tuple[int, dict, str]]:
    async def scenario() -> list[tuple[int, dict, str]]:
        app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"),
                         start_consumer=False, views=False, probe_seconds=0, symbols=SYMBOLS, **overrides)
        async with app.test_app() as test_app:
            state(app).history._build = synthetic
            client = test_app.test_client()
            answers = []
            for path in paths:
                response = await client.get(path, headers=headers or {})
                answers.append((response.status_code, {k.lower(): v for k, v in response.headers.items()},
                                await response.get_data(as_text=True)))
            return answers

    return asyncio.run(scenario())


def test_json_is_the_charts_snapshot_as_rows():
    (status, headers, body), = call(["/api/v1/history?symbol=btc&range=24h&end=1790000000000"])
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(body)
    snap = json.loads(json.dumps(asyncio.run(synthetic("BTC", "24h", NOW))))
    assert answer["columns"] == ["time", "open", "high", "low", "close", "volume"]
    assert [r[:5] for r in answer["rows"]] == snap["candles"]
    assert [[r[0], r[5]] for r in answer["rows"]] == snap["volume"]
    assert answer["stats"] == snap["stats"] and answer["interval_ms"] == snap["bucket_ms"] == 60_000
    assert (answer["symbol"], answer["range"], answer["start"], answer["end"]) == ("BTC", "24h", NOW - 86_400_000, NOW)
    assert answer["interval"] == "1m" and answer["basis"] == "candles_1m"


def test_csv_has_a_header_and_one_line_per_candle_with_the_indicators_asked_for():
    (status, headers, body), = call(["/api/v1/history?symbol=ETH&range=24h&end=1790000000000&format=csv"
                                     "&indicators=sma20,rsi14"])
    assert status == 200 and headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["time", "time_iso", "open", "high", "low", "close", "volume", "sma20", "rsi14"]
    assert len(rows) == 1 + 1440
    assert rows[1][1].endswith("Z") and rows[1][7] == "" and rows[20][7] != "" and rows[15][8] != ""
    snap = json.loads(json.dumps(asyncio.run(synthetic("ETH", "24h", NOW))))
    assert [[int(r[0]), *map(float, r[2:6])] for r in rows[1:]] == snap["candles"]


def test_an_interval_and_a_start_end_window():
    hourly, window = call(["/api/v1/history?symbol=BTC&range=7d&end=1790000000000&interval=1h",
                           f"/api/v1/history?symbol=BTC&start={NOW - 7_200_000}&end={NOW}&interval=5m"])
    hourly_answer, window_answer = json.loads(hourly[2]), json.loads(window[2])
    assert hourly_answer["interval_ms"] == 3_600_000 and len(hourly_answer["rows"]) in (168, 169)
    assert window_answer["range"] is None and window_answer["interval_ms"] == 300_000
    assert (window_answer["start"], window_answer["end"]) == (NOW - 7_200_000, NOW)
    assert all(r[0] % 300_000 == 0 for r in window_answer["rows"]) and len(window_answer["rows"]) in (24, 25)


@pytest.mark.parametrize(("query", "says"), [
    ("", "symbol is required: one of BTC"),
    ("symbol=DOGE", "unknown symbol 'DOGE'"),
    ("symbol=BTC&range=2y", "unknown range '2y'"),
    ("symbol=BTC&end=yesterday", "end must be an integer"),
    ("symbol=BTC&end=-5", "end must be an integer"),
    ("symbol=BTC&end=0", "end must be epoch milliseconds from 1"),
    ("symbol=BTC&end=99999999999999999", "end must be an integer"),
    ("symbol=BTC&end=1e12", "end must be an integer"),
    ("symbol=BTC&start=5", "start needs an end"),
    ("symbol=BTC&start=5&end=4", "start must be before end"),
    ("symbol=BTC&start=5&end=40&range=1h", "either range"),
    (f"symbol=BTC&start=1&end={NOW}", "more bars than even 1w has"),
    (f"symbol=BTC&start={NOW - 8 * 86_400_000}&end={NOW}&interval=1m", "11520 bars of 1m from start to end is more "
                                                                       "than 2200"),
    ("symbol=BTC&interval=2m", "unknown interval '2m'"),
    ("symbol=BTC&range=7d&interval=1m", "10080 bars of 1m over 7d is more than 2200: choose one of 5m, 15m"),
    ("symbol=BTC&range=1h&interval=1d", "a 1d bar is wider than range 1h"),
    ("symbol=BTC&range=all&interval=1h", "range all is drawn in 1d or 1w bars"),
    ("symbol=BTC&format=xml", "unknown format 'xml'"),
    ("symbol=BTC&indicators=macd", "unknown indicator 'macd'"),
    ("symbol=BTC&limit=5", "a page needs an interval"),
    ("symbol=BTC&interval=1m&limit=0", "limit must be a whole number of bars from 1 to 2200"),
    ("symbol=BTC&interval=1m&limit=2201", "limit must be a whole number of bars from 1 to 2200"),
    ("symbol=BTC&interval=1m&before=soon", "before must be an integer"),
    ("symbol=BTC&interval=1m&before=5&range=24h", "a page is before and/or limit with an interval"),
    ("symbol=BTC&page=2", "unknown parameter 'page'"),
    ("symbol=BTC&symbol=ETH", "given more than once"),
])
def test_bad_parameters_get_400_with_a_reason(query, says):
    (status, headers, body), = call([f"/api/v1/history?{query}"])
    assert status == 400 and headers["content-type"] == "application/json"
    assert says in json.loads(body)["error"], body


def test_the_parameters_are_checked_without_a_server():
    query = parse_history_query({"symbol": "xrp", "indicators": "SMA20, rsi14,sma20"}, SYMBOLS, NAMES)
    assert (query.symbol, query.range, query.end, query.indicators) == ("XRP", "24h", None, ("sma20", "rsi14"))
    with pytest.raises(ProtocolError, match="day from now"):
        parse_history_query({"symbol": "BTC", "end": str(int(time.time() * 1000) + 3 * 86_400_000)}, SYMBOLS, NAMES)


def test_requests_draw_on_the_addresss_budget_and_get_429_past_it():
    answers = call(["/api/v1/history?symbol=BTC&range=1h"] * 12, address_rate=5)
    statuses = [a[0] for a in answers]
    assert statuses[:10] == [200] * 10 and 429 in statuses[10:], statuses
    refused = next(a for a in answers if a[0] == 429)
    assert refused[1]["retry-after"] == "1" and "rate limit" in json.loads(refused[2])["error"]


def test_past_windows_share_the_global_rate_and_get_503_busy():
    ends = [NOW - i * 60_000 for i in range(8)]
    answers = call([f"/api/v1/history?symbol=BTC&range=1h&end={end}" for end in ends], history_rate=2)
    statuses = [a[0] for a in answers]
    assert statuses.count(200) == 4 and 503 in statuses, statuses  # a burst of twice the rate, then busy
    busy = next(a for a in answers if a[0] == 503)
    assert "retry-after" in busy[1] and "history busy" in json.loads(busy[2])["error"]


def test_identical_requests_share_the_charts_answer():
    BUILDS.clear()
    answers = call(["/api/v1/history?symbol=BTC&range=24h"] * 3 + ["/api/v1/history?symbol=BTC&range=24h&format=csv"])
    assert [a[0] for a in answers] == [200] * 4
    assert BUILDS == [("BTC", "24h", None, None, None, None)]  # one build, the same the WebSocket's 24h snapshot uses


def test_tickers_and_openapi():
    tickers, described = call(["/api/v1/tickers", "/api/v1/openapi.json"])
    body = json.loads(tickers[2])
    assert [t["symbol"] for t in body["tickers"]] == list(SYMBOLS) and body["tickers"][0]["price"] is None
    document = json.loads(described[2])
    assert document["openapi"].startswith("3.1")
    history = document["paths"]["/api/v1/history"]["get"]
    assert {p["name"] for p in history["parameters"]} == {"symbol", "range", "start", "end", "interval", "before",
                                                          "limit", "format", "indicators"}
    interval = next(p for p in history["parameters"] if p["name"] == "interval")
    assert interval["schema"]["enum"] == ["5s", "1m", "5m", "15m", "1h", "4h", "1d", "1w"]
    symbol = re.compile(history["parameters"][0]["schema"]["pattern"])
    assert all(symbol.match(s) for s in ("BTC", "btc", "Eth", "xRp")) and not symbol.match("DOGE")
    assert "text/csv" in document["paths"]["/api/v1/tickers"]["get"]["responses"]["200"]["content"]


def test_a_tickers_csv_cell_is_never_a_formula():
    async def scenario() -> str:
        app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"),
                         start_consumer=False, views=False, probe_seconds=0, symbols=SYMBOLS)
        async with app.test_app() as test_app:
            shared = state(app)
            shared.history._recent = lambda symbol: [{"symbol": symbol, "source": '=HYPERLINK("http://x.example")',
                                                      "ts": NOW, "price": -1.5, "volume_24h": None}]
            response = await test_app.test_client().get("/api/v1/tickers?format=csv")
            return await response.get_data(as_text=True)

    rows = list(csv.DictReader(io.StringIO(asyncio.run(scenario()))))
    assert [r["source"] for r in rows] == ["\'=HYPERLINK(\"http://x.example\")"] * 3
    assert rows[0]["price"] == "-1.5" and rows[0]["volume_24h"] == ""  # numbers stay numbers


def test_a_candle_without_volume_has_no_volume_not_zero():
    rows = [CandleRow(NOW - 120_000, 1.0, 2.0, 0.5, 1.5, 3.0), CandleRow(NOW - 60_000, 1.5, 2.0, 1.0, 1.2, None)]
    snap = build_snapshot("BTC", None, NOW, ("simulated", rows), (None, []), [], 100, span_ms=180_000, interval="1m")
    columns, table_rows = table(snap, ())
    assert [r[columns.index("volume")] for r in table_rows] == [3.0, None]
    lines = as_csv(columns, table_rows).splitlines()
    assert lines[-1].endswith(",1.2,")  # an empty cell, not 0.0
    assert snap["stats"]["volume"] == 3.0


def test_errors_under_the_api_are_json():
    async def scenario() -> list[tuple[int, str, str]]:
        app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"),
                         start_consumer=False, views=False, probe_seconds=0, symbols=SYMBOLS)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            answers = [await client.get("/api/v1/nothing"), await client.post("/api/v1/tickers"),
                       await client.get("/api/v1/history"), await client.get("/no-such-page")]
            return [(a.status_code, a.content_type, await a.get_data(as_text=True)) for a in answers]

    missing, wrong_method, no_symbol, page = asyncio.run(scenario())
    assert missing[0] == 404 and missing[1] == "application/json" and "openapi.json" in json.loads(missing[2])["error"]
    assert wrong_method[0] == 405 and "use GET" in json.loads(wrong_method[2])["error"]
    assert no_symbol[0] == 400 and json.loads(no_symbol[2])["error"].startswith("symbol is required: one of BTC")
    assert page[0] == 404 and "json" not in page[1]  # the pages keep their own 404


def test_the_api_has_the_pages_hardening():
    (refused, _, body), (ok, headers, _) = call(["/api/v1/history?symbol=BTC"], {"Host": "evil.example"})[0], \
        call(["/api/v1/tickers"], {"Host": "localhost:8000"})[0]
    assert refused == 421 and "WEBUI_ALLOWED_HOSTS" in body
    assert ok == 200 and "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_a_page_names_the_next_one_until_the_history_ends():
    """Pages of 1d bars back from NOW, each `limit` bars, until FIRST: every bar once, in JSON and CSV alike."""
    path = f"/api/v1/history?symbol=BTC&interval=1d&limit=7&before={NOW}"
    seen: list[int] = []
    for _ in range(10):
        (status, headers, body), = call([path])
        answer = json.loads(body)
        assert status == 200 and answer["interval"] == "1d" and answer["limit"] == 7, body
        times = [r[0] for r in answer["rows"]]
        assert len(times) <= 7 and times == sorted(times) and all(t < answer["before"] for t in times)
        seen = times + seen
        if answer["next_before"] is None:
            assert answer["next"] is None and "link" not in headers
            break
        assert answer["next_before"] == times[0]
        assert headers["link"] == f'<{answer["next"]}>; rel="next"' and f"before={times[0]}" in answer["next"]
        path = answer["next"]
    else:
        pytest.fail("the pages never ended")
    assert seen == sorted(set(seen)) and seen[0] >= FIRST and len(seen) == 30
    (status, headers, body), = call([f"/api/v1/history?symbol=BTC&interval=1d&limit=7&before={NOW}&format=csv"])
    rows = list(csv.reader(io.StringIO(body)))
    assert status == 200 and [int(r[0]) for r in rows[1:]] == seen[-7:] and "format=csv" in headers["link"]


def test_a_slow_answer_is_503_busy_with_retry_after_and_kept_for_the_next_ask():
    async def slow(*args: Any) -> dict[str, Any]:
        await asyncio.sleep(0.6)
        return await synthetic(*args)

    async def scenario() -> list[tuple[int, dict[str, str], str]]:
        app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"),
                         start_consumer=False, views=False, probe_seconds=0, symbols=SYMBOLS, history_deadline=0.2)
        async with app.test_app() as test_app:
            state(app).history._build = slow
            client = test_app.test_client()
            answers = []
            # the second ask comes 2.5 s after the first: the build ended long before, and a fresh answer is reused
            # for 2 s only; one that outlived a client's deadline is kept for its next ask
            for pause in (0, 2.5):
                await asyncio.sleep(pause)
                response = await client.get(f"/api/v1/history?symbol=BTC&range=24h&end={NOW}")
                answers.append((response.status_code, {k.lower(): v for k, v in response.headers.items()},
                                await response.get_data(as_text=True)))
            return answers

    BUILDS.clear()
    (busy, headers, body), (ok, _, later) = asyncio.run(scenario())
    assert busy == 503 and headers["retry-after"] == "1"
    assert json.loads(body)["error"].startswith("history busy: this window takes long to read")
    assert ok == 200 and json.loads(later)["interval"] == "1m" and len(BUILDS) == 1
