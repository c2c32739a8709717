"""JSON over HTTP that survives flaky APIs and paces itself, and the polling loop the REST sources share.

Free market-data APIs rate-limit hard, sit behind CDNs that answer with HTML pages, and have bad
minutes. So: timeouts on every request; retries with exponential backoff and full jitter for
connection errors, timeouts, 5xx, 408, 418, 429 and bodies that are not JSON; the server's
`Retry-After` obeyed on 429/418/503 (Binance bans IPs that ignore it); other 4xx raised at once,
because retrying a bad key or a geo block only burns the rate limit. Before these generic rules an
adapter's `check` sees every reply and classifies its API's own error codes (wait, retry, stop with
advice). One warning per outage and one line when it ends, not one per retry.

Pacing: at most one request per `min_gap` seconds, and after each good reply an adapter's `pace` may
hold the next request back (Binance, when the minute's request weight nears its limit).
`requests` is blocking, so each call runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from cryptopulse.errors import SourceError, TransientError
from cryptopulse.retries import retry_after_seconds
from cryptopulse.tick import Tick
from producer.sources.base import Source, backoff

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[Any]]
# Called with (seconds, why) before each wait between retries, and before a pacing hold, so a caller can show it.
OnWait = Callable[[float, str], None]

RETRYABLE = {408, 418, 429}  # and every 5xx
HONOURS_RETRY_AFTER = {418, 429, 503}
ADVICE = {
    400: "the API rejected the request; check the symbols and options",
    401: "the API key is missing or wrong; check {key_env}",
    402: "the API plan is inactive or expired; check the account behind {key_env}",
    403: "access refused (key, plan or firewall); check {key_env}, or point {url_env} at a mirror",
    404: "no such endpoint; check {url_env}",
    451: "{name} refuses this location; point {url_env} at a mirror",
}


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, as an adapter's `check` and `pace` see it."""

    url: str
    status: int
    data: Any  # the decoded JSON body; None when the body is not JSON
    text: str
    headers: Mapping[str, str]  # case-insensitive
    retry_after: float | None  # the Retry-After header in seconds, on any status

    def describe(self) -> str:
        """`GET url -> HTTP 429: 'body...'`, for error messages."""
        if self.data is None:
            return f"GET {self.url} -> HTTP {self.status} with a body that is not JSON: {self.text[:100]!r}"
        return f"GET {self.url} -> HTTP {self.status}: {self.text[:100]!r}"


# Called with every reply before the generic status rules; raises SourceError (stop) or TransientError (retry).
Check = Callable[[Reply], None]
# Called with every good reply: (seconds, why) to hold the next request back, or None.
Pace = Callable[[Reply], tuple[float, str] | None]


class KeySession(requests.Session):
    """A session that drops its API-key headers when a redirect leaves the host (or goes from https to http), as
    requests itself drops `Authorization`: a mirror or a CDN that redirects elsewhere never receives the key."""

    def __init__(self, secret_headers: Iterable[str] = ()) -> None:
        super().__init__()
        self.secret_headers = {name.lower() for name in secret_headers}

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if response.request.url and prepared_request.url and self.should_strip_auth(response.request.url,
                                                                                    prepared_request.url):
            for name in [h for h in prepared_request.headers if h.lower() in self.secret_headers]:
                del prepared_request.headers[name]


class JsonClient:
    """GETs JSON from `base_url`, retrying what is worth retrying; see the module docstring for the rules.

    `headers` are the adapter's own (its API key): they are sent to `base_url`'s host only, never after a
    redirect to another host."""

    def __init__(self, name: str, base_url: str, url_env: str, *, key_env: str = "the API key",
                 headers: dict[str, str] | None = None, timeout: float = 10.0, check: Check | None = None,
                 pace: Pace | None = None, min_gap: float = 0.0,
                 backoff_base: float = 1.0, backoff_max: float = 60.0,
                 sleep: Sleep = asyncio.sleep, rng: Callable[[], float] = random.random,
                 monotonic: Callable[[], float] = time.monotonic, on_wait: OnWait | None = None) -> None:
        self.name, self.base_url, self.url_env, self.key_env = name, base_url.rstrip("/"), url_env, key_env
        self.timeout, self.check, self.pace, self.min_gap = timeout, check, pace, min_gap
        self.backoff_base, self.backoff_max, self.sleep, self.rng = backoff_base, backoff_max, sleep, rng
        self.monotonic = monotonic
        self.on_wait = on_wait
        self.recoveries = 0  # requests that succeeded after failing
        self.holds = 0  # times `pace` held a request back
        self._next_at = float("-inf")  # no request starts before this (in `_now()` time)
        self._early = 0.0  # seconds that sleeps returned early (only an injected test sleep does)
        self._session = KeySession(headers or {})
        self._session.headers.update({"Accept": "application/json", "User-Agent": "cryptopulse-producer"})
        self._session.headers.update(headers or {})

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The decoded JSON of GET base_url+path; retries transient failures until one succeeds."""
        failures = 0
        while True:
            if (gap := self._next_at - self._now()) > 0:
                await self.pause(gap)
            self._next_at = self._now() + self.min_gap
            try:
                reply = await asyncio.to_thread(self._get, self.base_url + path, params)
            except TransientError as e:
                failures += 1
                delay = e.retry_after if e.retry_after is not None else backoff(
                    failures, self.backoff_base, self.backoff_max, self.rng)
                if failures == 1 and e.retry_after is None:
                    log.warning("%s: %s; retrying with backoff until it answers", self.name, e)
                elif failures == 1:
                    log.warning("%s: %s; retrying in %.0f s", self.name, e, delay)
                log.debug("%s: attempt %d failed, next in %.1f s", self.name, failures, delay)
                if self.on_wait is not None:
                    self.on_wait(delay, str(e))
                await self.pause(delay)
                continue
            if failures:
                self.recoveries += 1
                log.info("%s: recovered after %d attempts", self.name, failures + 1)
            if self.pace is not None and (hold := self.pace(reply)) is not None:
                self._hold(*hold)
            return reply.data

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds` (the poll interval, a backoff, a pacing gap); counted by the pacing."""
        before = self.monotonic()
        await self.sleep(seconds)
        self._early += max(0.0, seconds - (self.monotonic() - before))

    def _now(self) -> float:
        """The monotonic clock plus the sleeps that returned early, so pacing never counts a wait twice."""
        return self.monotonic() + self._early

    def _hold(self, seconds: float, why: str) -> None:
        self.holds += 1
        (log.info if self.holds == 1 else log.debug)("%s: %s; holding the next request %.1f s", self.name, why,
                                                     seconds)
        if self.on_wait is not None:
            self.on_wait(seconds, why)
        self._next_at = max(self._next_at, self._now() + seconds)

    def _get(self, url: str, params: dict[str, str] | None) -> Reply:
        try:
            response = self._session.get(url, params=params, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            # urllib3's reason (a name that does not resolve, a refused connection), not requests' wrapper of it,
            # which repeats the whole URL with its query
            reason = getattr(e.args[0], "reason", None) if e.args else None
            cause = reason if isinstance(reason, Exception) else e
            raise TransientError(f"GET {url} failed: {type(cause).__name__}: {cause}") from e
        except requests.RequestException as e:
            raise SourceError(f"GET {url} failed: {e}; check {self.url_env}") from e
        status, text = response.status_code, response.text
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        reply = Reply(response.url, status, data, text, response.headers,
                      retry_after_seconds(response.headers.get("Retry-After")))
        if self.check:
            self.check(reply)
        if status in RETRYABLE or status >= 500:
            raise TransientError(reply.describe(), reply.retry_after if status in HONOURS_RETRY_AFTER else None)
        if status >= 400:
            raise SourceError(f"{self.name}: {reply.describe()}; {self.advice(status)}")
        if data is None:
            raise TransientError(reply.describe())
        return reply

    def advice(self, status: int) -> str:
        """What to do about a client error `status` that stops the source."""
        return ADVICE.get(status, "check {url_env} and the request").format(
            name=self.name, url_env=self.url_env, key_env=self.key_env)


class PollingSource(Source):
    """A REST source: one request per poll for all symbols, ticks yielded once per change of their timestamp.

    APIs cache their answers (CoinGecko ~60 s, CMC 60 s), so polls often repeat the last
    observation; skipping a symbol whose timestamp did not move keeps duplicates out of Kafka.
    """

    def __init__(self, symbols: Iterable[str], client: JsonClient, interval: float) -> None:
        super().__init__(symbols)
        if interval <= 0:
            raise ValueError(f"{self.name}: the poll interval must be positive, got {interval}")
        self.client, self.interval = client, interval
        self._last_ts: dict[str, int] = {}

    @abstractmethod
    async def poll(self) -> list[Tick]:
        """One request; the ticks it gave (every requested symbol that could be read)."""

    async def ticks(self) -> AsyncIterator[Tick]:
        while True:
            ticks = await self.poll()
            self.reconnects = self.client.recoveries
            for tick in ticks:
                if self._last_ts.get(tick.symbol) != tick.ts:
                    self._last_ts[tick.symbol] = tick.ts
                    yield tick
            await self.client.pause(self.interval)
