"""The history API for analysts: GET /api/v1/history, /api/v1/tickers and the OpenAPI description.

Its answers are the charts' own: a history is the snapshot the WebSocket sends for the same window
(`HistoryStore.answer`: the same views, queries, shared builds and cache), as rows of candles, and its
indicators come from webui/indicators.py over those candles. Its parameters are checked like a subscribe
(webui/protocol.py: a 400 with a plain reason), every request draws on the subscribe budget of its address
(webui/guard.py: 429 past it), and past windows on the server's global rate (503 "busy", Retry-After).
docs/webui.md has curl examples.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import PyMongoError
from quart import Blueprint, Response, current_app, request

from cryptopulse.outage import RateLimitFilter
from webui.guard import client_address
from webui.health import plain
from webui.history import Busy, encode
from webui.indicators import NAMES, compute
from webui.protocol import (
    API_MAX_ROWS,
    API_MAX_SPAN_MS,
    FORMATS,
    INTERVALS_MS,
    HistoryQuery,
    ProtocolError,
    parse_history_query,
)
from webui.series import RANGES_MS
from webui.state import State, state

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


def table(snapshot: dict[str, Any], names: tuple[str, ...]) -> tuple[list[str], list[list[Any]]]:
    """The snapshot's candles as rows: time (epoch ms), open, high, low, close, volume, then each indicator."""
    candles, volume = snapshot["candles"], snapshot["volume"]
    by_time = {t: v for t, v in volume}
    values = compute(candles, volume, names)
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


def history_body(text: str, query: HistoryQuery) -> tuple[str, str]:
    """(body, content type) of a history answer, from the encoded snapshot of its window."""
    snapshot = json.loads(text)
    columns, rows = table(snapshot, query.indicators)
    if query.format == "csv":
        return as_csv(columns, rows), "text/csv; charset=utf-8"
    body = {key: snapshot[key] for key in ("symbol", "range", "start", "end", "basis", "source", "simulated")}
    body |= {"interval_ms": snapshot["bucket_ms"], "stats": snapshot["stats"], "columns": columns, "rows": rows,
             "server_ms": snapshot.get("server_ms")}
    return encode(body), "application/json"


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
        answer = await store.answer(query.symbol, query.range, query.end, span_ms=query.span_ms,
                                    bucket_ms=query.bucket_ms)
        body, kind = await store.in_worker(history_body, answer.text, query)
    except Busy as busy:
        return problem(503, f"history busy: too many past windows asked for; ask again in {busy.retry_ms / 1000:g} s",
                       busy.retry_ms / 1000, "busy")
    except PyMongoError as exc:
        if shared.monitor is not None:
            shared.monitor.poke()
        log.warning("history API for %s failed: %s", query.symbol, plain(exc))
        return problem(503, f"history unavailable: the database did not answer; ask again in {RETRY_S} s", RETRY_S,
                       "history")
    shared.metrics.snapshots += 1
    return Response(body, content_type=kind)


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
        for row in rows:
            writer.writerow(["" if v is None else v for v in row.values()])
        return Response(out.getvalue(), content_type="text/csv; charset=utf-8")
    return Response(encode({"time": now, "tickers": rows}), content_type="application/json")


TICK_KEYS = ("source", "ts", "price", "volume_24h", "change_24h_pct")


@api.get("/openapi.json")
async def openapi() -> Response:
    return Response(encode(openapi_document(state(current_app).config.symbols)), content_type="application/json")


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
                "summary": "Candles (OHLC and volume) of one coin over a window, with indicators",
                "parameters": [
                    parameter("symbol", {"type": "string", "enum": list(symbols)}, "the coin (case-insensitive)",
                              True),
                    parameter("range", {"type": "string", "enum": list(RANGES_MS), "default": "24h"},
                              "a chart's range, ending at `end` or now; not with `start`"),
                    parameter("start", epoch, f"with `end`: the window start..end, at most "
                              f"{API_MAX_SPAN_MS // 86_400_000} days"),
                    parameter("end", epoch, "the window's end (default now); up to a day ahead of the server's clock"),
                    parameter("interval", {"type": "string", "enum": list(INTERVALS_MS)},
                              f"bucket width (default: the chart's); at most {API_MAX_ROWS} rows"),
                    parameter("format", {"type": "string", "enum": list(FORMATS), "default": "json"},
                              "json, or csv (a header line, one line per candle, `time_iso` after `time`)"),
                    parameter("indicators", {"type": "string", "example": "sma20,rsi14"},
                              f"comma-separated, among {', '.join(NAMES)}: one column each"),
                ],
                "responses": {
                    "200": {"description": "the window", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/History"}},
                        "text/csv": {"schema": {"type": "string"}}}},
                    "400": error, "421": {"description": "a Host the dashboard does not serve"},
                    "429": {**error, "headers": retry}, "503": {**error, "headers": retry},
                }}},
            "/api/v1/tickers": {"get": {
                "summary": "The last tick of every configured coin",
                "parameters": [parameter("format", {"type": "string", "enum": list(FORMATS), "default": "json"},
                                         "json or csv")],
                "responses": {"200": {"description": "one entry per coin; null fields when no tick was seen",
                                      "content": {"application/json": {"schema": {
                                          "$ref": "#/components/schemas/Tickers"}}}},
                              "400": error, "429": {**error, "headers": retry}}}},
            "/api/v1/openapi.json": {"get": {"summary": "this description",
                                             "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
            "History": {"type": "object", "properties": {
                "symbol": {"type": "string"}, "range": {"type": ["string", "null"]}, "start": epoch, "end": epoch,
                "basis": {"enum": ["candles_1m", "ticks"]}, "source": {"type": ["string", "null"]},
                "simulated": {"type": "boolean"}, "interval_ms": {"type": "integer"},
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
