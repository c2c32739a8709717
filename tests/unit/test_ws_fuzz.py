"""The WebSocket protocol survives any input: the real Quart app's /ws, in-process, fed by hypothesis.

Any JSON value in every field, any JSON at the top, arbitrary text and binary frames, deep nesting:
the answer is a snapshot (the message happened to be a valid subscribe) or an `error` whose message is
one of the protocol's plain reasons, and the same socket answers the next frame. No service is needed:
no Kafka consumer, no views, and a stub in place of the history store (this is about the protocol).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo.errors import ServerSelectionTimeoutError

from cryptopulse.settings import Settings
from webui.app import create_app
from webui.state import state

SYMBOLS = ("BTC", "ETH", "XRP")
PLAIN = re.compile(
    r"^(malformed JSON: [^\n]{1,80}"
    r"|a message must be a JSON object such as .*"
    r"|unknown message type .{1,60}: the types are \"subscribe\" and \"overview\""
    r"|unknown symbol .{1,60}: choose one of BTC, ETH, XRP"
    r"|unknown range .{1,60}: choose one of 1h, 24h, 7d, 30d, 90d, 1y, all"
    r"|unknown interval .{1,60}: choose one of 5s, 1m, 5m, 15m, 1h, 4h, 1d, 1w"
    r"|\d+ bars of \w+ over \w+ is more than 2200: choose one of [\w, ]+"
    r"|a \w+ bar is wider than range \w+: choose one of [\w, ]+"
    r"|range all is drawn in 1d or 1w bars \(the intervals kept for ever\)"
    r"|end must be [^\n]+"
    r"|frame too large: \d+ bytes, the limit is 4096"
    r"|frames must be UTF-8 JSON text)$",
    re.DOTALL,
)


class StubHistory:
    """Answers every subscribe with an empty snapshot at once, or fails as told."""

    def __init__(self) -> None:
        self.fail: BaseException | None = None

    async def snapshot(self, symbol: str, range_: str, end: int | None = None) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        end = end if end is not None else int(time.time() * 1000)
        return {"type": "snapshot", "symbol": symbol, "range": range_, "start": end - 3_600_000, "end": end,
                "line": [], "candles": [], "volume": [], "stats": {"last_update": None, "count": 0}}

    async def answer(self, symbol: str, range_: str, end: int | None = None, **_: Any) -> Any:
        from webui.history import Answer

        return Answer.of(await self.snapshot(symbol, range_, end))

    async def overview(self, symbols: tuple[str, ...]) -> Any:
        from webui.history import Answer

        return Answer('{"type":"overview","coins":[]}', 1, None)

    async def close(self) -> None:
        pass


@dataclass
class Client:
    loop: asyncio.AbstractEventLoop
    ws: Any
    app: Any
    history: StubHistory

    def ask(self, frame: str | bytes, timeout: float = 10) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            await self.ws.send(frame)
            return json.loads(await asyncio.wait_for(self.ws.receive(), timeout))

        return self.loop.run_until_complete(go())


def open_client(**overrides: Any) -> tuple[Client, Any]:
    """The app's /ws on an event loop of its own, kept open across hypothesis's examples."""
    loop = asyncio.new_event_loop()
    config = {"start_consumer": False, "views": False, "probe_seconds": 0, "symbols": SYMBOLS,
              "rate_per_second": 1e9, "rate_burst": 1e9, **overrides}
    app = create_app(Settings(mongodb_uri="mongodb://127.0.0.1:1"), **config)
    serving = app.test_app()
    test_app = loop.run_until_complete(serving.__aenter__())
    shared = state(app)
    real, history = shared.history, StubHistory()
    shared.history = history
    socket = test_app.test_client().websocket("/ws")
    ws = loop.run_until_complete(socket.__aenter__())

    def close() -> None:
        loop.run_until_complete(socket.__aexit__(None, None, None))
        shared.history = real
        loop.run_until_complete(serving.__aexit__(None, None, None))
        loop.close()

    return Client(loop, ws, app, history), close


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    opened, close = open_client()
    yield opened
    close()


SUBSCRIBE = json.dumps({"type": "subscribe", "symbol": "BTC", "range": "1h"})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
messages = st.fixed_dictionaries({}, optional={
    "type": st.one_of(st.just("subscribe"), st.sampled_from(["unsubscribe", "", "SUBSCRIBE"]), json_values),
    "symbol": st.one_of(st.sampled_from(["BTC", "eth", "DOGE", ""]), json_values),
    "range": st.one_of(st.sampled_from(["1h", "24h", "7d", "1y", "all", "2y"]), json_values),
    "interval": st.one_of(st.sampled_from(["5s", "1m", "1w", "2m"]), json_values),
    "end": st.one_of(st.integers(), st.integers(min_value=10**15), st.integers(max_value=0),
                     st.integers(1_000_000_000_000, 1_900_000_000_000), json_values),
    "extra": json_values,
})
# Binary frames of at least one byte: Quart's test client hands an empty one to the app without a "text" key,
# which Quart's ASGI layer does not expect (hypercorn sends "text": None, which the app answers like any frame).
frames = st.one_of(
    messages.map(json.dumps),
    messages.map(lambda m: json.dumps(m).encode()),  # the same as binary frames
    json_values.map(json.dumps),
    st.text(max_size=300),
    st.text(min_size=4000, max_size=4200),
    st.binary(min_size=1, max_size=300),
    st.binary(min_size=4000, max_size=4200),
    st.integers(1, 6000).map(lambda n: "[" * n),
    st.integers(1, 2000).map(lambda n: '{"a":' * n),
    st.integers(1, 1500).map(lambda n: '{"type":"subscribe","symbol":"BTC","range":' + "[" * n + "]" * n + "}"),
)


def check_answer(frame: str | bytes, answer: dict[str, Any]) -> None:
    if answer["type"] == "overview":  # the frame was an overview request after all
        assert json.loads(frame)["type"] == "overview"
        return
    if answer["type"] == "snapshot":  # the frame was a valid subscribe after all
        message = json.loads(frame)
        assert message["type"] == "subscribe" and message["symbol"].upper() == answer["symbol"]
        return
    assert answer["type"] == "error", answer
    assert isinstance(answer["message"], str) and PLAIN.match(answer["message"]), answer["message"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(frame=frames)
@example(frame='{"type":"subscribe","symbol":"BTC","range":{}}')  # unhashable: used to close the socket
@example(frame='{"type":"subscribe","symbol":"BTC","range":[]}')
@example(frame="[" * 2000)  # RecursionError: used to close the socket
@example(frame='{"type":"subscribe","symbol":"BTC","range":"1h","end":100000000000000000000}')  # used to be Errno 75
@example(frame='{"type":"subscribe","symbol":"BTC","range":"1h","end":-1}')
@example(frame='{"type":"subscribe","symbol":"BTC","range":"1h","end":1e3}')
@example(frame='{"type":"subscribe","symbol":"BTC","range":"1h","end":NaN}')
@example(frame='{"type":"subscribe","symbol":{"a":1},"range":"1h"}')
@example(frame='{"type":["subscribe"]}')
@example(frame="1" * 4090)  # more digits than Python converts to an int by default
@example(frame=b"\xff\xfe\x00")
@example(frame=b"\x00")
@example(frame="")
def test_any_frame_gets_a_plain_answer_and_the_socket_stays_open(client, frame):
    check_answer(frame, client.ask(frame))


def test_after_all_that_a_valid_subscribe_still_gets_its_snapshot(client):
    for frame in ["[" * 3000, '{"type":"subscribe","symbol":"BTC","range":{}}', b"\x80"]:
        assert client.ask(frame)["type"] == "error"
    snap = client.ask(SUBSCRIBE)
    assert snap["type"] == "snapshot" and snap["symbol"] == "BTC"


@pytest.mark.parametrize(("end", "ok"), [
    (1, True), (1_000_000, True), (int(time.time() * 1000), True), (int(time.time() * 1000) + 3_600_000, True),
    (0, False), (-5, False), (int(time.time() * 1000) + 2 * 86_400_000, False), (10**20, False), (True, False),
    (1.5e12, False), ("1700000000000", False),
], ids=["1", "1000000", "now", "an-hour-ahead", "0", "-5", "two-days-ahead", "10^20", "True", "1.5e12", "a-string"])
def test_end_is_checked_against_a_sane_range(client, end, ok):
    answer = client.ask(json.dumps({"type": "subscribe", "symbol": "ETH", "range": "24h", "end": end}))
    if ok:
        assert answer["type"] == "snapshot" and answer["end"] == end
    else:
        assert answer["type"] == "error" and answer["message"].startswith("end must be"), answer


def test_bad_messages_are_logged_once_per_client_without_traceback(caplog):
    opened, close = open_client()
    try:
        with caplog.at_level(logging.DEBUG, logger="webui"):
            for frame in ["{nope", "[" * 2500, '{"type":"subscribe","symbol":"BTC","range":[]}', b"\xff"] * 5:
                assert opened.ask(frame)["type"] == "error"
    finally:
        close()
    records = [r for r in caplog.records if r.name.startswith("webui.ws")]
    assert len(records) == 1 and records[0].exc_info is None, [r.getMessage() for r in records]
    assert "invalid message" in records[0].getMessage()


@pytest.mark.parametrize("failure", [
    OSError(75, "Value too large for defined data type"),
    ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused, Timeout: 5.0s, Topology Description: x"),
    RuntimeError("internal detail the client must not see"),
])
def test_a_failing_history_gets_a_plain_reason_and_a_retry_hint(client, failure, caplog):
    client.history.fail = failure
    try:
        with caplog.at_level(logging.WARNING, logger="webui"):
            answer = client.ask(SUBSCRIBE)
    finally:
        client.history.fail = None
    assert answer["type"] == "error" and answer["retry_ms"] == 5000
    assert answer["message"].startswith("history unavailable: ")
    for leak in ("Errno", "Value too large", "Topology", "internal detail", "Traceback", "Error"):
        assert leak not in answer["message"]
    assert client.ask(SUBSCRIBE)["type"] == "snapshot"  # the same socket, once the store answers again


def test_the_live_feed_state_is_pushed_to_open_sockets(client):
    hub = state(client.app).hub

    async def scenario() -> list[dict[str, Any]]:
        hub.set_status({"type": "status", "live": False, "down": ["kafka"],
                        "message": "live feed interrupted: Kafka is unavailable; ticks resume when it is back"})
        stale = json.loads(await asyncio.wait_for(client.ws.receive(), 5))
        hub.set_status({"type": "status", "live": True, "down": [], "message": "live feed flowing"})
        back = json.loads(await asyncio.wait_for(client.ws.receive(), 5))
        return [stale, back]

    stale, back = client.loop.run_until_complete(scenario())
    assert stale["type"] == "status" and stale["live"] is False and stale["down"] == ["kafka"]
    assert back == {"type": "status", "live": True, "down": [], "message": "live feed flowing"}
    assert state(client.app).metrics.live_stale == 0


def test_a_socket_opened_while_the_feed_is_stale_is_told_at_once():
    opened, close = open_client()
    try:
        hub = state(opened.app).hub
        hub.set_status({"type": "status", "live": False, "down": ["registry"], "message": "live feed interrupted"})

        async def second_socket() -> dict[str, Any]:
            async with opened.app.test_client().websocket("/ws") as ws:
                return json.loads(await asyncio.wait_for(ws.receive(), 5))

        assert opened.loop.run_until_complete(second_socket())["down"] == ["registry"]
    finally:
        close()


def test_the_answer_cache_does_not_grow_with_every_end_a_client_asks_for():
    from webui.history import HistoryStore

    async def scenario() -> int:
        store = HistoryStore("mongodb://127.0.0.1:1", "x", pool=1, max_points=10, cache_seconds=0.05,
                             recent=lambda _symbol: [])

        async def build(symbol: str, range_: str, end: int | None) -> dict[str, Any]:
            return {"end": end, "start": 0, "stats": {"last_update": None}}

        store._build = build  # no MongoDB: only the cache is under test
        try:
            for end in range(1, 1001):
                await store.snapshot("BTC", "1h", end)
                if end % 50 == 0:
                    await asyncio.sleep(0.06)
            return len(store._cache)
        finally:
            await store.close()

    assert asyncio.run(scenario()) <= 64
