"""WebSocket blueprint: validate each client message, answer subscribe with a snapshot, then push live ticks.

One reader task (client messages), one writer task (live ticks) and one status task (the live feed's
state) per connection. Whatever a client sends, it gets a snapshot or an `error` with a plain reason, and
the connection stays open; a client's bad messages are logged once, a failing history query's reason
goes to the log (rate-limited), never to the client. Two things close a socket, with a reason in the
close frame and one log line: a client that goes on breaking the rate limit, and one that stops reading
(a message that cannot be sent within `send_timeout`). docs/security.md lists every limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from pymongo.errors import PyMongoError
from quart import Blueprint, abort, current_app, websocket

from cryptopulse.outage import RateLimitFilter
from webui.alerts import push_alerts
from webui.auth import principal, watch_session
from webui.guard import client_address
from webui.health import plain
from webui.history import Busy
from webui.live import ALL, Subscriber, encode
from webui.protocol import Overview, ProtocolError, Subscribe, TokenBucket, error, origin_allowed, parse_message
from webui.state import State, state

log = logging.getLogger(__name__)
history_log = logging.getLogger(f"{__name__}.history")  # one failing store must not log once per client request
history_log.addFilter(RateLimitFilter(period=60, burst=5))
MAX_BATCH = 500  # ticks in one `ticks` message at most
HISTORY_RETRY_MS = 5000  # a client told the history is unavailable may ask again after this long

ws = Blueprint("ws", __name__)


class Closing(Exception):  # noqa: N818 - not an error: how a connection asks to be closed
    """The connection ends: `code` and `reason` go into the close frame."""

    def __init__(self, code: int, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.code, self.reason, self.metric = code, reason, metric


class Connection:
    def __init__(self, shared: State) -> None:
        self.shared = shared
        config = shared.config
        self.sub = Subscriber(config.client_queue)
        self.send_lock = asyncio.Lock()
        self.ready = asyncio.Event()  # set once the current subscription's snapshot is sent
        self.window: tuple[int, int] = (0, 0)  # ticks inside the snapshot's [start, newest] are not sent again
        self.loading: asyncio.Task[None] | None = None
        self.logged_invalid = False  # a client's bad messages are logged once, answered always
        self.peer = client_address(websocket.scope)
        self.strikes = TokenBucket(1.0, config.rate_strikes)  # over-limit messages forgiven before closing
        self.budget = shared.connections.budget(self.peer, config)  # subscribes of all this address's sockets
        self.closing: asyncio.Future[Closing] = asyncio.get_running_loop().create_future()
        self.sending: asyncio.Timeout | None = None  # the send under way, if any (`watchdog` expires a late one)
        self.send_due = 0.0

    def close(self, reason: Closing) -> None:
        """End the connection (from any of its tasks): `feed` closes the socket with this reason."""
        if not self.closing.done():
            self.closing.set_result(reason)

    async def send(self, message: dict[str, Any] | str) -> None:
        """Send a message, or its JSON text as it is; a client that takes none within send_timeout is closed."""
        text = message if isinstance(message, str) else encode(message)
        timeout = self.shared.config.send_timeout
        async with self.send_lock:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that arrives as the
                # send completes, and the cancelled reader then waited for ever on a socket that had gone. Armed by
                # `watchdog` only when a send is late: a timer per send took 5-10 % of the loop's time under load.
                async with asyncio.timeout(None) as self.sending:
                    self.send_due = asyncio.get_running_loop().time() + timeout
                    await websocket.send(text)
            except TimeoutError:
                raise Closing(1008, f"not reading: a message waited {timeout:g} s to be sent", "slow") from None
            finally:
                self.sending = None

    async def watchdog(self) -> None:
        """Expire a send that is still waiting `send_timeout` after it began (checked a few times a timeout)."""
        loop = asyncio.get_running_loop()
        every = min(1.0, max(0.05, self.shared.config.send_timeout / 4))
        while True:
            await asyncio.sleep(every)
            sending = self.sending
            if sending is not None and sending.when() is None and loop.time() >= self.send_due:
                sending.reschedule(loop.time())  # the send raises TimeoutError: closed as not reading

    async def reply_error(self, reason: str, message: str, retry_ms: int | None = None) -> None:
        self.shared.metrics.errors[reason] += 1
        await self.send(error(message, retry_ms))

    def invalid(self, message: str) -> tuple[str, str]:
        if not self.logged_invalid:
            self.logged_invalid = True
            log.info("client %s sent an invalid message (%s); its further ones are answered, not logged",
                     self.peer, message)
        return "invalid", message

    def read(self, raw: Any, bucket: TokenBucket) -> Subscribe | Overview | tuple[str, str]:
        """One frame as a Subscribe, or (metrics reason, plain message) to answer with; raises only Closing."""
        config = self.shared.config
        if not bucket.allow():
            if not self.strikes.allow():
                raise Closing(1008, f"rate limit: more than {config.rate_per_second:g} messages a second, "
                              "again and again", "rate_limit")
            return "rate_limited", (f"rate limit: at most {config.rate_per_second:g} messages per second; "
                                    "this one was ignored, slow down")
        try:
            request = parse_message(raw, config.symbols, config.max_frame_bytes, max_depth=config.max_json_depth)
        except ProtocolError as exc:
            return self.invalid(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug in the parser: the client still gets an answer, no traceback
            return self.invalid(f"this message could not be read ({type(exc).__name__}); it was ignored")
        if not self.budget.allow():
            if not self.strikes.allow():
                raise Closing(1008, "rate limit: too many subscribes from your address, again and again", "rate_limit")
            return "rate_limited", (f"rate limit: at most {config.address_rate:g} subscribes per second from one "
                                    "address, over all its sockets; this one was ignored, slow down")
        return request

    async def reader(self) -> None:
        config = self.shared.config
        bucket = TokenBucket(config.rate_per_second, config.rate_burst)
        while True:
            raw = await websocket.receive()
            request = self.read(raw, bucket)
            if isinstance(request, tuple):
                await self.reply_error(*request)
                continue
            if self.loading is not None:
                self.loading.cancel()  # this client's wait only: a query others share goes on for them
            self.ready.clear()
            self.shared.hub.subscribe(self.sub, ALL if isinstance(request, Overview) else request.symbol)
            self.loading = asyncio.create_task(self.guarded(self.load(request)))

    async def guarded(self, work: Any) -> None:
        """Run one of the connection's tasks; a Closing it raises ends the connection."""
        try:
            await work
        except Closing as reason:
            self.close(reason)

    async def load(self, request: Subscribe | Overview) -> None:
        history = self.shared.history
        assert history is not None, "history store is created before serving"
        started = time.perf_counter()
        overview = isinstance(request, Overview)
        what = ("overview", "24h") if overview else (request.symbol, f"{request.range} of {request.timeframe}")
        try:
            if overview:
                answer = await history.overview(self.shared.config.symbols)
            else:
                answer = await history.answer(request.symbol, request.range, request.end, interval=request.timeframe)
        except asyncio.CancelledError:
            raise
        except Busy as busy:  # too many store windows asked for by everyone, or a slow one: this one later
            await self.reply_error("busy", busy.message, busy.retry_ms)
            return
        except PyMongoError as exc:  # the store is away or failing: the monitor says so once, the log briefly
            if self.shared.monitor is not None:
                self.shared.monitor.poke()
            history_log.warning("history for %s %s failed: %s", *what, plain(exc))
            await self.reply_error("history", "history unavailable: the database did not answer; "
                                   f"ask again in {HISTORY_RETRY_MS // 1000} s", HISTORY_RETRY_MS)
            return
        except Exception as exc:  # noqa: BLE001 - a bug: the client gets a plain reason, the log one line
            history_log.warning("history for %s %s failed: %s: %s", *what, type(exc).__name__, plain(exc))
            await self.reply_error("history", "history unavailable: this chart could not be built; "
                                   f"ask again in {HISTORY_RETRY_MS // 1000} s", HISTORY_RETRY_MS)
            return
        self.shared.metrics.history_seconds.observe(time.perf_counter() - started)
        newest = answer.newest
        self.window = (answer.start, newest if newest is not None else answer.start - 1)
        await self.send(answer.text)
        self.shared.metrics.snapshots += 1
        if not overview and request.indicators:  # the window's indicators, computed once for all (webui/indicators.py)
            await self.send(await history.indicators(answer))
        self.ready.set()

    async def writer(self) -> None:
        """One message per tick while the client keeps up; what queued meanwhile goes out as one `ticks` batch.

        A WebSocket send costs far more than the tick it carries: under load (1,000 ticks/s to 200 clients
        is 67,000 sends a second one at a time) batching whatever is waiting keeps every client current.
        """
        metrics = self.shared.metrics
        while True:
            await self.ready.wait()
            waiting = await self.sub.take(MAX_BATCH)  # only the subscribed symbol's (the hub routes them)
            if not self.ready.is_set():
                continue
            low, high = self.window
            batch = [t for t in waiting if not low <= t["ts"] <= high]  # not those already in the snapshot
            if not batch:
                continue
            try:
                texts = [t.text for t in batch]  # each tick encoded once, by the consumer (live.tick_message)
            except AttributeError:
                texts = [getattr(t, "text", None) or encode(t) for t in batch]
            await self.send(texts[0] if len(texts) == 1 else
                            f'{{"type":"ticks","symbol":{json.dumps(self.sub.symbol)},"ticks":[{",".join(texts)}]}}')
            metrics.pushed += len(batch)
            metrics.push_latency.observe_ages(time.time(), batch)

    async def session_ends(self, watch: Any) -> None:
        """Close the socket when its session or token is no longer valid (a logout, a removed account, expiry)."""
        await watch
        raise Closing(1008, "session ended: log in again", "session")

    async def status_writer(self) -> None:
        """The live feed's state: at once if it is stale now, then at every change (docs/webui.md, `status`)."""
        hub = self.shared.hub
        changed = hub.status_changed
        if not hub.status.get("live", True):
            await self.send(hub.status)
        while True:
            await changed.wait()
            changed = hub.status_changed
            await self.send(hub.status)


@ws.websocket("/ws")
async def feed() -> None:
    shared = state(current_app)
    # the Host header was checked first (webui/app.py), so a rebound name never reaches the Origin rule
    if not origin_allowed(websocket.headers.get("Origin"), websocket.headers.get("Host"),
                          shared.config.allowed_origins):
        shared.metrics.errors["origin"] += 1
        abort(403, "Origin not allowed: set WEBUI_ALLOWED_ORIGINS to the dashboard's public origin")
    refusal = shared.connections.refusal(client_address(websocket.scope), shared.config)
    if refusal is not None:
        shared.metrics.refused["connections"] += 1
        abort(*refusal)
    await websocket.accept()
    conn = Connection(shared)
    shared.metrics.clients += 1
    who = principal()  # its account's alerts only (an admin's: all); the socket ends with its session
    works = (conn.reader(), conn.writer(), conn.status_writer(), conn.watchdog(),
             push_alerts(shared.alerts, conn.send, lambda alert: who.sees(alert.get("owner"))),
             conn.session_ends(watch_session(shared, who, websocket.headers, websocket.cookies, websocket.scope)))
    tasks = [asyncio.create_task(conn.guarded(work)) for work in works]
    try:
        await asyncio.wait([*tasks, conn.closing], return_when=asyncio.FIRST_COMPLETED)
    finally:
        shared.metrics.clients -= 1
        shared.hub.unsubscribe(conn.sub)
        if conn.loading is not None:
            conn.loading.cancel()
        pending = set(tasks)
        while pending:  # cancelled again until they end: a cancellation may be lost in a library's await
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                _, pending = await asyncio.wait(pending, timeout=1.0)
    if conn.closing.done():
        reason = conn.closing.result()
        shared.metrics.closed[reason.metric] += 1
        if reason.metric != "session":  # not abuse: its session ended
            shared.connections.penalize(conn.peer, shared.config.penalty_seconds)
        log.info("closing client %s: %s", conn.peer, reason.reason)
        with contextlib.suppress(Exception):  # a client that reads nothing does not read the close frame either
            async with asyncio.timeout(1.0):
                await websocket.close(reason.code, reason.reason)
