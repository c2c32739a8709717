"""Issue 12, finding by finding: one socket must not exhaust the dashboard, and a dead one must go.

Each test runs the real server (hypercorn and the app as `webui serve` runs them, tests/security/conftest.py)
and fails on the code before the fix: frames up to 64 KiB were taken, Quart queued received frames without
limit while the reader was stuck on a send, nothing closed a client that kept breaking the rate limit or
stopped reading, no ping found dead sockets, and nothing capped the sockets of one address or in all.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.security import rawws

SUBSCRIBE = json.dumps({"type": "subscribe", "symbol": "BTC", "range": "1h"})


def run(coroutine):  # noqa: ANN001, ANN201 - a test helper
    return asyncio.run(coroutine)


async def receive(ws, timeout: float = 10) -> dict:  # noqa: ANN001 - a websockets connection
    """The next message other than `status` (the stub has no Kafka: the live feed says so once)."""
    while (message := json.loads(await asyncio.wait_for(ws.recv(), timeout)))["type"] == "status":
        pass
    return message


def test_a_frame_over_4_kib_is_refused_by_the_server(dashboard):
    """The protocol's limit is 4 KiB; hypercorn took 64 KiB frames and buffered them for the app."""
    board = dashboard()

    async def scenario() -> int | None:
        async with websockets.connect(board.ws) as ws:
            await ws.send(json.dumps({"type": "subscribe", "symbol": "BTC", "pad": "x" * 8000}))
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None

    assert run(scenario()) == 1009  # "message too big", from the server before the app reads anything


def test_a_client_that_floods_without_reading_is_closed_and_the_server_memory_stays_flat(dashboard):
    """Frames within the limit, sent as fast as the socket takes them, never reading a reply: Quart's unbounded
    queue grew by hundreds of MiB in seconds (measured 340 -> 1,319 MiB)."""
    board = dashboard(WEBUI_SEND_TIMEOUT="2")
    before = board.rss_mib()
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], board.rss_mib())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sock = rawws.connect(board.port, rcvbuf=4096, timeout=1.0)
    payload = rawws.frame(json.dumps({"type": "subscribe", "symbol": "BTC", "range": "1h",
                                      "pad": "x" * 3900}).encode())
    sent, deadline, checked = 0, time.monotonic() + 20, 0.0

    def closed() -> float:
        return sum(board.metric("webui_connections_closed_total", f'reason="{r}"') for r in ("rate_limit", "slow"))

    try:
        while sent < 200 * 2**20:  # at most 200 MiB
            assert time.monotonic() < deadline, "the flooding client was never closed"
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                if closed():
                    break
            try:
                sock.sendall(payload)
                sent += len(payload)
            except TimeoutError:
                continue  # the server stopped reading this socket: TCP pushes back, nothing queues up
            except OSError:
                break  # gone
        grown = peak[0] - before
        # the socket itself: the client reads nothing, not even the close frame, so the kernel drops it
        # (TCP_USER_TIMEOUT: send timeout + 10 s), and it stops counting against the caps
        board.wait_for(lambda: board.metric("webui_open_sockets") == 0, 30, "the unread socket's end")
    finally:
        done.set()
        watcher.join()
        sock.close()
    assert grown < 40, f"RSS grew {grown:.0f} MiB while {sent / 2**20:.0f} MiB were sent"
    assert closed() == 1
    assert board.metric("webui_connected_clients") == 0


def test_a_client_that_stops_reading_is_closed_with_a_reason(dashboard):
    """Snapshots (~100 KB each) to a client that reads nothing: its sends now time out and it is closed (1008);
    before, the server waited on it for ever, holding its buffers."""
    board = dashboard(WEBUI_SEND_TIMEOUT="2")
    sock = rawws.connect(board.port, rcvbuf=4096, timeout=1.0)
    try:
        deadline = time.monotonic() + 30
        while board.metric("webui_connections_closed_total", 'reason="slow"') < 1:
            assert time.monotonic() < deadline, "a client that reads nothing was never closed"
            try:
                sock.sendall(rawws.frame(SUBSCRIBE.encode()))  # 5 a second: within the rate limit
            except TimeoutError:
                pass
            except OSError:
                break
            time.sleep(0.2)
        board.wait_for(lambda: board.metric("webui_connected_clients") == 0, 10, "the slow client's close")
        board.wait_for(lambda: board.metric("webui_open_sockets") == 0, 30, "the unread socket's end")
    finally:
        sock.close()
    assert "not reading" in board.log_text()  # one line: who and why


def test_a_client_that_keeps_breaking_the_rate_limit_is_closed(dashboard):
    board = dashboard()

    async def scenario() -> tuple[int, str, int]:
        async with websockets.connect(board.ws) as ws:
            errors = 0

            async def read() -> ConnectionClosed:
                nonlocal errors
                try:
                    while True:
                        if json.loads(await ws.recv())["type"] == "error":
                            errors += 1
                except ConnectionClosed as closed:
                    return closed

            reading = asyncio.create_task(read())
            for _ in range(300):
                try:
                    await ws.send('{"type":"ping"}')
                except ConnectionClosed:
                    break
                await asyncio.sleep(0.002)
            closed = await asyncio.wait_for(reading, 10)
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code, closed.rcvd.reason, errors

    code, reason, errors = run(scenario())
    assert code == 1008 and "rate limit" in reason
    assert errors >= 50  # every message before the close was answered


def test_a_dead_socket_goes_and_a_live_one_stays(dashboard):
    """Pings every second here (20 s by default): a peer from which nothing arrives for three intervals is gone;
    a client that answers pings (every browser, the websockets library) stays. Before, a dead socket stayed."""
    board = dashboard(WEBUI_PING_SECONDS="1")
    dead = rawws.connect(board.port)  # answers nothing, not even a pong

    async def live_client() -> str:
        async with websockets.connect(board.ws) as ws:
            await asyncio.sleep(6)
            await ws.send(SUBSCRIBE)
            return (await receive(ws))["type"]

    try:
        assert run(live_client()) == "snapshot"
        board.wait_for(lambda: board.metric("webui_connected_clients") == 0, 10, "the dead socket's close")
    finally:
        dead.close()


def test_sockets_are_capped_per_address_and_in_all(dashboard):
    board = dashboard(WEBUI_MAX_CONNECTIONS_PER_ADDRESS="3", WEBUI_MAX_CONNECTIONS="5")

    async def scenario() -> tuple[int, int]:
        opened = []
        try:
            for _ in range(3):
                opened.append(await websockets.connect(board.ws))
            with pytest.raises(InvalidStatus) as per_address:
                opened.append(await websockets.connect(board.ws))
            for source in ("127.0.0.2", "127.0.0.3"):  # other addresses: still room in all
                opened.append(await websockets.connect(board.ws, local_addr=(source, 0)))
            with pytest.raises(InvalidStatus) as in_all:
                opened.append(await websockets.connect(board.ws, local_addr=("127.0.0.4", 0)))
            return per_address.value.response.status_code, in_all.value.response.status_code
        finally:
            for ws in opened:
                await ws.close()

    assert run(scenario()) == (429, 503)


def test_the_sockets_of_one_address_share_one_subscribe_budget(dashboard):
    """Ten sockets each within their own 10 a second made a hundred queries a second: the limit was per socket."""
    board = dashboard(WEBUI_ADDRESS_RATE="5")

    async def scenario() -> list[str]:
        sockets = [await websockets.connect(board.ws) for _ in range(4)]
        try:
            for ws in sockets:
                for _ in range(5):  # 20 subscribes, 5 per socket: each socket well within its own limit
                    await ws.send(SUBSCRIBE)
            kinds = []  # each socket's answers: an error per refused subscribe, a snapshot for its last accepted one
            for ws in sockets:
                try:
                    while True:
                        message = await receive(ws, timeout=2)
                        kinds.append(message["type"] if message["type"] != "error" else message["message"][:10])
                except TimeoutError:
                    pass
            return kinds
        finally:
            for ws in sockets:
                await ws.close()

    kinds = run(scenario())
    assert kinds.count("rate limit") >= 8, kinds  # at most 2 x 5 (a burst) of the 20 went through


@pytest.mark.parametrize("frame", [
    '{"type": "subscribe", "symbol": "BTC", "range": []}',
    "[" * 2000,
    '{"type": "subscribe", "symbol": "BTC", "range": "1h", "end": 1e20}',
    '{"type": "subscribe", "symbol": "BTC", "range": "1h", "end": 100000000000000000000}',
    '{"type": "subscribe", "symbol": "BTC", "range": "1h", "end": NaN}',
    '{"a":' * 100 + "1" + "}" * 100,
])
def test_a_malformed_message_gets_an_error_the_socket_stays_and_nothing_is_a_traceback(dashboard, frame):
    board = dashboard()

    async def scenario() -> tuple[dict, dict]:
        async with websockets.connect(board.ws) as ws:
            await ws.send(frame)
            answer = await receive(ws)
            await ws.send(SUBSCRIBE)
            return answer, await receive(ws)

    answer, after = run(scenario())
    assert answer["type"] == "error" and "Error" not in answer["message"]
    assert after["type"] == "snapshot"
    assert "Traceback" not in board.log_text()


def test_one_clients_resubscribe_does_not_cancel_anothers_shared_snapshot(dashboard):
    """A and B ask for the same window; the build is shared; A switches coin while it runs. B used to wait for
    ever: A's cancelled wait cancelled the query B was waiting on, and B's chart froze without an error."""
    board = dashboard(STUB_BUILD_SECONDS="1")
    end = int(time.time() * 1000) - 3_600_000
    same = json.dumps({"type": "subscribe", "symbol": "BTC", "range": "24h", "end": end})

    async def scenario() -> tuple[str, str]:
        async with websockets.connect(board.ws) as a, websockets.connect(board.ws) as b:
            await a.send(same)
            await asyncio.sleep(0.2)  # A's build runs
            await b.send(same)  # B shares it
            await asyncio.sleep(0.2)
            await a.send(json.dumps({"type": "subscribe", "symbol": "ETH", "range": "1h"}))  # A leaves it
            got_b = await receive(b)
            got_a = await receive(a)
            return f"{got_b['type']} {got_b.get('symbol')}", f"{got_a['type']} {got_a.get('symbol')}"

    assert run(scenario()) == ("snapshot BTC", "snapshot ETH")


def test_a_raw_socket_is_refused_a_handshake_over_the_cap(dashboard):
    """The cap counts a socket until the server has let it go, not only while the app serves it."""
    board = dashboard(WEBUI_MAX_CONNECTIONS_PER_ADDRESS="2")
    first, second = rawws.connect(board.port), rawws.connect(board.port)
    try:
        with pytest.raises(ConnectionError, match="429"):
            rawws.connect(board.port)
    finally:
        for sock in (first, second):
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_a_client_that_goes_on_sending_after_an_oversize_frame_is_disconnected(dashboard):
    """Hypercorn answered an oversize frame with a close frame, kept the socket and appended everything the client
    sent next to the refused message: ~110 MiB a second. Now the socket ends and nothing is kept."""
    board = dashboard()
    before = board.rss_mib()
    sock = rawws.connect(board.port, rcvbuf=4096, timeout=1.0)
    payload = rawws.frame(b"x" * 65536)
    sent, ended, deadline = 0, False, time.monotonic() + 15
    try:
        while time.monotonic() < deadline and sent < 3000:  # ~200 MiB at most
            try:
                sock.sendall(payload)
                sent += 1
            except TimeoutError:
                continue
            except OSError:
                ended = True
                break
    finally:
        sock.close()
    assert ended, f"the socket took {sent} frames of 64 KiB and stayed open"
    assert board.rss_mib() - before < 40


def test_reconnecting_is_no_way_around_the_limits(dashboard):
    """New sockets from one address are rate-limited, and an address whose socket was closed for abuse waits."""
    board = dashboard(WEBUI_ADDRESS_CONNECT_RATE="2", WEBUI_PENALTY_SECONDS="30")

    async def burst() -> list[int | None]:
        statuses, opened = [], []
        for _ in range(8):
            try:
                opened.append(await websockets.connect(board.ws, local_addr=("127.0.0.5", 0)))
                statuses.append(None)
            except InvalidStatus as refused:
                statuses.append(refused.response.status_code)
        for ws in opened:
            await ws.close()
        return statuses

    statuses = run(burst())
    assert statuses[:4] == [None] * 4 and 429 in statuses[4:]  # a burst of twice the rate, then refused

    async def abuse_then_reconnect() -> tuple[int, str | None]:
        async with websockets.connect(board.ws, local_addr=("127.0.0.6", 0)) as ws:
            try:
                for _ in range(300):
                    await ws.send('{"type":"ping"}')
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed:
                pass
        try:
            await websockets.connect(board.ws, local_addr=("127.0.0.6", 0))
            again = None
        except InvalidStatus as refused:
            again = refused.response.status_code
        async with websockets.connect(board.ws, local_addr=("127.0.0.7", 0)) as other:  # others are not punished
            await other.send(SUBSCRIBE)
            other_got = (await receive(other))["type"]
        return again, other_got

    assert run(abuse_then_reconnect()) == (429, "snapshot")


def test_the_socket_of_a_client_closed_for_abuse_really_ends(dashboard):
    """The app closed it while its queue of unread frames was full: hypercorn then waited for ever to hand the app
    its disconnect, and never closed the TCP connection, which kept counting against the caps."""
    board = dashboard()
    sock = rawws.connect(board.port, timeout=5)
    try:
        for _ in range(300):
            sock.sendall(rawws.frame(b'{"type":"ping"}'))
        data, deadline = b"", time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError("the server never closed the TCP connection")
    finally:
        sock.close()
    assert b"\x88" in data and b"rate limit" in data  # the close frame, with its reason, then the end
    board.wait_for(lambda: board.metric("webui_open_sockets") == 0, 10, "the socket to stop counting")


def test_no_socket_gets_per_message_compression(dashboard):
    """permessage-deflate cost each socket ~300 KB of zlib state (1,000 sockets: 300 MB) and a deflate per send."""
    board = dashboard()

    async def scenario() -> str | None:
        async with websockets.connect(board.ws, compression="deflate") as ws:  # offered, as browsers do
            return ws.response.headers.get("Sec-WebSocket-Extensions")

    assert run(scenario()) is None
