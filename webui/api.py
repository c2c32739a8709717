"""The history API for analysts: GET /api/v1/history, /api/v1/tickers and the OpenAPI description.

Its answers are the charts' own: a history is the snapshot the WebSocket sends for the same window
(`HistoryStore.answer`: the same views, queries, shared builds and cache), or a page of older bars (the one the
chart loads when scrolled back, `HistoryStore.page`), as rows of candles, and its indicators come from
webui/indicators.py over those candles. Its parameters are checked like a subscribe (webui/protocol.py: a 400 with
a plain reason), every request draws on the subscribe budget of its address (webui/guard.py: 429 past it), windows
the store must read on the server's global rate, and no answer takes longer than the deadline (503 "busy",
Retry-After). docs/webui.md has curl examples.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from pymongo.errors import PyMongoError
from quart import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from cryptopulse.outage import RateLimitFilter
from cryptopulse.text import csv_safe, terminal_safe
from webui.guard import client_address
from webui.health import plain
from webui.history import Answer, Busy, encode
from webui.indicators import NAMES, compute
from webui.protocol import FORMATS, PAGE_BARS, HistoryQuery, ProtocolError, parse_history_query
from webui.state import State, state
from webui.timeframes import DEFAULT_TIMEFRAME, MAX_BARS, RANGES, TIMEFRAMES

log = logging.getLogger(__name__)
log.addFilter(RateLimitFilter(period=60, burst=5))
RETRY_S = 5  # a client told the history is unavailable may ask again after this long
COLUMNS = ("time", "open", "high", "low", "close", "volume")

api = Blueprint("api", __name__, url_prefix="/api/v1")


def problem(status: int, reason: str, retry_s: float | None = None, metric: str | None = None) -> Response:
    """An error as JSON, {"error": reason}; Retry-After when asking again later may work."""
    if metric is not None:
        state(current_app).metrics.errors[metric] += 1
    response = Response(json.dumps({"error": reason}), status=status, content_type="application/json")
    if retry_s is not None:
        response.headers["Retry-After"] = str(max(1, round(retry_s)))
    return response


@api.app_errorhandler(404)
@api.app_errorhandler(405)
async def not_here(error: HTTPException) -> Response | HTTPException:
    """Under /api/v1, a wrong path or method is answered in JSON like every other error of the API; elsewhere as
    before."""
    if not request.path.startswith(api.url_prefix or "/api/v1"):
        return error
    allowed = sorted(getattr(error, "valid_methods", None) or [])
    reason = (f"{request.method} is not allowed here: use {', '.join(allowed)}" if error.code == 405 else
              f"no such endpoint {terminal_safe(request.path)!r}: see /api/v1/openapi.json")
    response = problem(error.code or 404, reason, metric="invalid")
    if allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def admitted(shared: State) -> Response | None:
    """A 429 when the address has spent its budget (the one its WebSockets' subscribes draw on), else None."""
    config = shared.config
    if not shared.connections.budget(client_address(request.scope), config).allow():
        return problem(429, f"rate limit: at most {config.address_rate:g} requests per second from one address "
                       "(API and WebSocket subscribes together); slow down", 1, "rate_limited")
    return None


def single(args: Any) -> dict[str, str] | str:
    """The query string as {name: value}, or the reason it is refused (a parameter given twice)."""
    for name in args:
        if len(args.getlist(name)) > 1:
            return f"parameter {name!r} is given more than once"
    return {name: args[name] for name in args}


def admitted_query(shared: State) -> dict[str, str] | Response:
    """The query string of an admitted request as {name: value}, or the answer refusing it (429, 400)."""
    refused = admitted(shared)
    if refused is not None:
        return refused
    args = single(request.args)
    return problem(400, args, metric="invalid") if isinstance(args, str) else args


def table(snapshot: dict[str, Any], names: tuple[str, ...],
          warmup: list[Any] | None = None) -> tuple[list[str], list[list[Any]]]:
    """The snapshot's candles as rows: time (epoch ms), open, high, low, close, volume, then each indicator (its
    warm-up bars read first)."""
    candles, volume = snapshot["candles"], snapshot["volume"]
    by_time = {t: v for t, v in volume}
    values = compute(candles, volume, names, warmup or ())
    rows = [[c[0], c[1], c[2], c[3], c[4], by_time.get(c[0]), *(values[n][i] for n in names)]
            for i, c in enumerate(candles)]
    return [*COLUMNS, *names], rows


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_csv(columns: list[str], rows: list[list[Any]]) -> str:
    """A header line and one line per row; `time_iso` after `time`; numbers as Python writes them back exactly
    (repr), an undefined value empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([columns[0], "time_iso", *columns[1:]])
    for row in rows:
        writer.writerow([row[0], iso(row[0]), *("" if v is None else repr(v) for v in row[1:])])
    return out.getvalue()


def next_page(query: HistoryQuery, before: int | None) -> str | None:
    """The URL of the page after `query`'s (older), ending at `before`; None when the history ends."""
    if before is None:
        return None
    asked = {"symbol": query.symbol, "interval": query.interval, "before": before, "limit": query.limit,
             "format": query.format, "indicators": ",".join(query.indicators)}
    return f"{api.url_prefix}/history?{urlencode({k: v for k, v in asked.items() if v})}"


def history_body(answer: Answer, query: HistoryQuery) -> tuple[str, str, str | None]:
    """(body, content type, the next page's URL) of a history answer, from the encoded snapshot of its window."""
    snapshot = json.loads(answer.text)
    columns, rows = table(snapshot, query.indicators, answer.warmup)
    following = next_page(query, snapshot.get("next_before")) if query.page else None
    if query.format == "csv":
        return as_csv(columns, rows), "text/csv; charset=utf-8", following
    body = {key: snapshot[key] for key in ("symbol", "range", "interval", "start", "end", "basis", "source",
                                           "simulated")}
    if query.page:
        body |= {"before": query.before, "limit": query.limit, "next_before": snapshot["next_before"],
                 "next": following}
    body |= {"interval_ms": snapshot["bucket_ms"], "stats": snapshot["stats"], "columns": columns, "rows": rows,
             "server_ms": snapshot.get("server_ms")}
    return encode(body), "application/json", following


@api.get("/history")
async def history() -> Response:
    shared = state(current_app)
    args = admitted_query(shared)
    if isinstance(args, Response):
        return args
    try:
        query = parse_history_query(args, shared.config.symbols, NAMES)
    except ProtocolError as exc:
        return problem(400, str(exc), metric="invalid")
    store = shared.history
    assert store is not None, "history store is created before serving"
    try:
        if query.page:
            answer = await store.page(query.symbol, query.interval, query.before, query.limit or PAGE_BARS)
        else:
            answer = await store.answer(query.symbol, query.range, query.end, span_ms=query.span_ms,
                                        interval=query.interval)
        body, kind, following = await store.in_worker(history_body, answer, query)
    except Busy as busy:
        return problem(503, busy.message, busy.retry_ms / 1000, "busy")
    except PyMongoError as exc:
        if shared.monitor is not None:
            shared.monitor.poke()
        log.warning("history API for %s failed: %s", query.symbol, plain(exc))
        return problem(503, f"history unavailable: the database did not answer; ask again in {RETRY_S} s", RETRY_S,
                       "history")
    shared.metrics.snapshots += 1
    response = Response(body, content_type=kind)
    if following is not None:  # the cursor, also for CSV (RFC 8288)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return response


@api.get("/tickers")
async def tickers() -> Response:
    """The last tick of every configured coin that the dashboard has seen (live feed, or the last hour's view)."""
    shared = state(current_app)
    args = admitted_query(shared)
    if isinstance(args, Response):
        return args
    if set(args) - {"format"} or args.get("format", "json") not in FORMATS:
        return problem(400, "the only parameter is format: json or csv", metric="invalid")
    store = shared.history
    assert store is not None, "history store is created before serving"
    now = int(time.time() * 1000)
    rows = []
    for symbol in shared.config.symbols:
        tick = store.last_tick(symbol)
        rows.append({"symbol": symbol, **({key: tick.get(key) for key in TICK_KEYS} if tick else
                                          dict.fromkeys(TICK_KEYS)),
                     "age_ms": now - tick["ts"] if tick else None})
    if args.get("format") == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["symbol", *TICK_KEYS, "age_ms"])
        for row in rows:  # a tick's source is text from outside: never a formula in a spreadsheet
            writer.writerow(["" if v is None else csv_safe(v) for v in row.values()])
        return Response(out.getvalue(), content_type="text/csv; charset=utf-8")
    return Response(encode({"time": now, "tickers": rows}), content_type="application/json")


TICK_KEYS = ("source", "ts", "price", "volume_24h", "change_24h_pct")


@api.get("/openapi.json")
async def openapi() -> Response:
    return Response(encode(openapi_document(state(current_app).config.symbols)), content_type="application/json")


def any_case(symbols: tuple[str, ...]) -> str:
    """A JSON Schema pattern (ECMA 262: no case flag) matching each symbol in any case: BTC -> [Bb][Tt][Cc]."""
    def letters(symbol: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in symbol)

    return "^(?:" + "|".join(letters(s) for s in symbols) + ")$"


def openapi_document(symbols: tuple[str, ...]) -> dict[str, Any]:
    """The API's OpenAPI 3.1 description (symbols as configured)."""
    error = {"description": "the reason",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    retry = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before asking again"}}
    epoch = {"type": "integer", "minimum": 1, "description": "epoch milliseconds (UTC)"}

    def parameter(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}

    return {
        "openapi": "3.1.0",
        "info": {"title": "CryptoPulse history API", "version": "1",
                 "description": "The dashboard's history: the same candles, statistics and indicators its charts "
                                "show. Rate limited per client address; past windows also on a global rate."},
        "paths": {
            "/api/v1/history": {"get": {
                "summary": "Candles (OHLC and volume) of one coin over a window or a page, with indicators",
                "description": "Three kinds of request: a chart's `range` (with an optional `end`); a window "
                               "`start`..`end`; or a page: `before` and/or `limit` with an `interval`, the `limit` "
                               "bars that begin before `before` (default now). A page's answer names the next "
                               "(older) one: `next_before` and `next` in JSON, a `Link: <...>; rel=\"next\"` header "
                               "in both formats; none when the history ends. Every answer holds at most "
                               f"{MAX_BARS} bars.",
                "parameters": [
                    parameter("symbol", {"type": "string", "pattern": any_case(symbols), "examples": list(symbols)},
                              f"the coin, in any case: {', '.join(symbols)}", True),
                    parameter("range", {"type": "string", "enum": list(RANGES), "default": "24h"},
                              "a chart's range, ending at `end` or now (`all`: the newest bars of 1d or 1w); not with "
                              "`start`, `before` or `limit`"),
                    parameter("start", epoch, "with `end`: the window start..end"),
                    parameter("end", epoch, "the window's end (default now); up to a day ahead of the server's clock"),
                    parameter("interval", {"type": "string", "enum": list(TIMEFRAMES)},
                              "the bars: 5s (from raw ticks, the last hour only) or the candles of 1m ... 1w; default: "
                              "the range's (" + ", ".join(f"{r} {t}" for r, t in DEFAULT_TIMEFRAME.items())
                              + "), for start/end the finest that fits; required for a page"),
                    parameter("before", epoch, "a page: its bars begin before this time (default now)"),
                    parameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_BARS, "default": PAGE_BARS},
                              "a page: how many bars it spans (fewer rows where the market had no data)"),
                    parameter("format", {"type": "string", "enum": list(FORMATS), "default": "json"},
                              "json, or csv (a header line, one line per candle, `time_iso` after `time`)"),
                    parameter("indicators", {"type": "string", "example": "sma20,rsi14"},
                              f"comma-separated, among {', '.join(NAMES)}: one column each"),
                ],
                "responses": {
                    "200": {"description": "the window, or the page", "headers": {
                        "Link": {"schema": {"type": "string"}, "description": "a page: the next (older) page"}},
                        "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/History"}},
                        "text/csv": {"schema": {"type": "string"}}}},
                    "400": error, "421": {"description": "a Host the dashboard does not serve"},
                    "429": {**error, "headers": retry}, "503": {**error, "headers": retry},
                }}},
            "/api/v1/tickers": {"get": {
                "summary": "The last tick of every configured coin",
                "parameters": [parameter("format", {"type": "string", "enum": list(FORMATS), "default": "json"},
                                         "json or csv")],
                "responses": {"200": {"description": "one entry per coin; null fields when no tick was seen (empty "
                                                     "cells in CSV)",
                                      "content": {"application/json": {"schema": {
                                          "$ref": "#/components/schemas/Tickers"}},
                                          "text/csv": {"schema": {"type": "string"}}}},
                              "400": error, "429": {**error, "headers": retry}}}},
            "/api/v1/openapi.json": {"get": {"summary": "this description",
                                             "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
            "History": {"type": "object", "properties": {
                "symbol": {"type": "string"}, "range": {"type": ["string", "null"]},
                "interval": {"enum": list(TIMEFRAMES)}, "start": epoch, "end": epoch,
                "basis": {"type": "string", "description": "candles_<interval> (the candles of the interval), or "
                          "ticks (none in the window: raw ticks bucketed at the interval)"},
                "source": {"type": ["string", "null"]}, "simulated": {"type": "boolean"},
                "before": {"type": ["integer", "null"], "description": "a page: as asked"},
                "limit": {"type": "integer", "description": "a page: as asked"},
                "next_before": {"type": ["integer", "null"], "description": "a page: `before` of the next (older) "
                                "page; null when the history ends"},
                "next": {"type": ["string", "null"], "description": "a page: the next page's URL"},
                "interval_ms": {"type": "integer"},
                "stats": {"type": "object", "description": "the chart's side panel: price, first, change, "
                          "change_pct, min, max, volume, last_update, count"},
                "columns": {"type": "array", "items": {"type": "string"},
                            "description": "time, open, high, low, close, volume, then the indicators asked for"},
                "rows": {"type": "array", "items": {"type": "array", "items": {"type": ["number", "null"]}}},
                "server_ms": {"type": "number"}}},
            "Tickers": {"type": "object", "properties": {
                "time": epoch, "tickers": {"type": "array", "items": {"type": "object", "properties": {
                    "symbol": {"type": "string"}, "source": {"type": ["string", "null"]},
                    "ts": {"type": ["integer", "null"]}, "price": {"type": ["number", "null"]},
                    "volume_24h": {"type": ["number", "null"]}, "change_24h_pct": {"type": ["number", "null"]},
                    "age_ms": {"type": ["integer", "null"]}}}}}},
        }},
    }
