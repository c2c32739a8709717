"""The connect / subscribe / read / reconnect loop the WebSocket sources share.

Exchanges drop connections as a matter of course (Binance at 24 h, on deploys, on idle), so a
drop is routine: reconnect with exponential backoff and full jitter (no thundering herd, and
under Binance's 300 connection attempts per 5 minutes), one warning per outage and one line
when it ends. Besides drops the loop reconnects when:
- the connection nears `max_lifetime` (Binance cuts at 24 h; leaving first loses nothing);
- nothing arrived for `stall_timeout` seconds (a feed that is open but silent is dead);
- the adapter raises `TransientError`, e.g. on an announced server shutdown or a transient error message.
The backoff grows until a connection delivers a tick (or has lasted a minute), so a feed that keeps
erroring right after it connects is retried ever more slowly, not once a second. A refused handshake
follows the HTTP rules (Retry-After on 418/429/503, 5xx retried, other 4xx stop with advice) unless the
adapter's `refused` classifies the status itself (Binance waits out a 403 from its firewall).
Keepalive: the websockets library answers the server's pings itself (Binance pings every 20 s and
wants a pong within 1 min), and pings the server every 20 s, giving up after 60 s without a pong,
which finds a dead TCP connection long before the OS would. One ping per 20 s is far below
Binance's limit of 5 incoming messages/s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from cryptopulse.errors import SourceError, TransientError
from cryptopulse.retries import retry_after_seconds
from cryptopulse.tick import Tick
from producer.sources.base import PAYLOAD_ERRORS, Source, backoff
from producer.sources.http import ADVICE, HONOURS_RETRY_AFTER, RETRYABLE

log = logging.getLogger(__name__)

DAY_MINUS_10_MIN = 23 * 3600 + 50 * 60
HEALTHY_AFTER = 60.0  # a connection this old without ticks (a quiet market) still counts as good


class WebSocketSource(Source):
    """A source fed by one WebSocket; subclasses say what to send on open and how to read a message."""

    url_env: str  # the environment variable that sets the URL, named in error messages

    def __init__(self, symbols: Iterable[str], url: str, *, max_lifetime: float = DAY_MINUS_10_MIN,
                 stall_timeout: float | None = None, open_timeout: float = 10.0,
                 backoff_base: float = 1.0, backoff_max: float = 60.0,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        super().__init__(symbols)
        self.url, self.max_lifetime, self.stall_timeout = url, max_lifetime, stall_timeout
        self.open_timeout = open_timeout
        self.backoff_base, self.backoff_max, self.sleep, self.rng = backoff_base, backoff_max, sleep, rng

    async def on_open(self, ws: ClientConnection) -> None:
        """Send what the exchange needs first (subscriptions); nothing by default."""

    @abstractmethod
    def read(self, message: Any) -> Iterable[Tick]:
        """The ticks in one decoded JSON message; raise TransientError to reconnect, SourceError to stop."""

    def refused(self, status: int, headers: Mapping[str, str]) -> TransientError | None:
        """How to retry a handshake refused with `status` (a TransientError saying when), or None for the
        generic rules; raise SourceError to stop."""
        return None

    async def ticks(self) -> AsyncIterator[Tick]:
        failures = 0  # consecutive failed connections, reset by a good one's first tick or after HEALTHY_AFTER
        connected_before = False
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with connect(self.url, open_timeout=self.open_timeout, ping_interval=20, ping_timeout=60,
                                   close_timeout=5) as ws:
                    if connected_before:
                        self.reconnects += 1
                    connected_before = True
                    await self.on_open(ws)
                    opened = loop.time()
                    async for message in self._messages(ws):
                        ticks = self._read(message)
                        if failures and (ticks or loop.time() - opened >= HEALTHY_AFTER):
                            log.info("%s: reconnected after %d attempts", self.name, failures + 1)
                            failures = 0
                        for tick in ticks:
                            yield tick
                log.info("%s: connection is %.0f s old; reconnecting before the server cuts it",
                         self.name, self.max_lifetime)
                delay = 0.0
            except InvalidStatus as e:
                status = e.response.status_code
                wait = self.refused(status, e.response.headers)
                if wait is None and status not in RETRYABLE and status < 500:
                    advice = ADVICE.get(status, "check {url_env}").format(name=self.name, url_env=self.url_env,
                                                                          key_env="the API key")
                    raise SourceError(f"{self.name}: {self.url} refused the WebSocket with HTTP {status}; "
                                      f"{advice}") from e
                failures += 1
                if wait is not None:
                    delay = self._failed(failures, wait, wait.retry_after)
                else:
                    retry_after = e.response.headers.get("Retry-After") if status in HONOURS_RETRY_AFTER else None
                    delay = self._failed(failures, e, retry_after_seconds(retry_after))
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError, TransientError) as e:
                failures += 1
                delay = self._failed(failures, e, e.retry_after if isinstance(e, TransientError) else None)
            await self.sleep(delay)

    def _failed(self, failures: int, error: Exception, retry_after: float | None) -> float:
        """Log the first failure of an outage (later ones at debug); the delay before the next attempt."""
        delay = backoff(failures, self.backoff_base, self.backoff_max, self.rng) if retry_after is None else retry_after
        cause = f"{type(error).__name__}: {error}"
        if failures == 1:
            log.warning("%s: %s; reconnecting to %s with backoff", self.name, cause, self.url)
        log.debug("%s: attempt %d failed (%s), next in %.1f s", self.name, failures, cause, delay)
        return delay

    async def _messages(self, ws: ClientConnection) -> AsyncIterator[Any]:
        """Decoded messages until the connection's lifetime is up; raises on drop or stall."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_lifetime
        while (left := deadline - loop.time()) > 0:
            wait = left if self.stall_timeout is None else min(left, self.stall_timeout)
            try:
                raw = await asyncio.wait_for(ws.recv(), wait)
            except TimeoutError:
                if loop.time() < deadline:
                    raise TransientError(f"no message for {self.stall_timeout} s: the feed stalled") from None
                return
            try:
                message = json.loads(raw)
            except ValueError as e:
                self._skip(raw, e)
                continue
            yield message

    def _read(self, message: Any) -> Iterable[Tick]:
        try:
            return list(self.read(message))
        except PAYLOAD_ERRORS as e:
            self._skip(message, e)
            return []
