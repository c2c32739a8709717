"""Local fake exchanges: a real HTTP server and a real WebSocket server on 127.0.0.1, each in its own thread.

Sources are pointed at them through their configurable base URLs, so the adapters' real network
code runs; the servers play scripted replies and record what the clients sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from cryptopulse.tick import Tick

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> Any:
    """A sample payload from tests/samples: decoded JSON for .json files, text otherwise."""
    text = (SAMPLES / name).read_text()
    return json.loads(text) if name.endswith(".json") else text


class Sleeps(list):
    """An injectable `sleep` that records the delays asked for and does not wait."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
        await asyncio.sleep(0)


async def take(ticks: AsyncIterator[Tick], n: int) -> list[Tick]:
    """The first `n` ticks of a stream, closing the stream afterwards."""
    out: list[Tick] = []
    async with aclosing(ticks) as stream:
        async for tick in stream:
            out.append(tick)
            if len(out) == n:
                break
    return out


def run(coro: Any, timeout: float = 5.0) -> Any:
    """Run a coroutine on a fresh event loop; a hang fails the test instead of blocking it."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # str/bytes as is, anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (to trip client timeouts)
    cut: bool = False  # promise more bytes than sent, then hang up (a truncated transfer)


class FakeHttp:
    """Scripted HTTP: `replies[path]` are played in order, the last one repeating; `requests` records calls."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                fake.requests.append({"path": url.path, "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                                      "headers": dict(self.headers)})
                queue = fake.replies.get(url.path) or [Reply(404, {"error": "no such path in the fake"})]
                reply = queue.pop(0) if len(queue) > 1 else queue[0]
                time.sleep(reply.delay)
                body = reply.body if isinstance(reply.body, str | bytes) else json.dumps(reply.body)
                body = body.encode() if isinstance(body, str) else body
                self.send_response(reply.status)
                for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body) + (50 if reply.cut else 0)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True).start()

    def reply(self, path: str, *replies: Reply) -> None:
        self.replies[path] = list(replies)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


RECV = "<recv>"  # script step: wait for one client message and record it
CLOSE = "<close>"  # script step: close the connection


class FakeWs:
    """Scripted WebSocket server: connection i plays `scripts[i]` (then stays open, silent).

    A step is a message to send (dict → JSON), RECV, CLOSE, or a number of seconds to wait.
    `reject` holds HTTP statuses to refuse the next handshakes with, one per attempt.
    """

    def __init__(self) -> None:
        self.scripts: list[list[Any]] = []
        self.reject: list[int] = []
        self.connections: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("the fake WebSocket server did not start")

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0, process_request=self._refuse) as server:
            self.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            self._ready.set()
            await self._stop.wait()

    def _refuse(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.reject:
            return connection.respond(self.reject.pop(0), "refused by the fake\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        record: dict[str, Any] = {"path": ws.request.path, "received": []}
        script = self.scripts[len(self.connections)] if len(self.connections) < len(self.scripts) else []
        self.connections.append(record)
        for step in script:
            if step == RECV:
                record["received"].append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            elif step == CLOSE:
                await ws.close()
                return
            elif isinstance(step, int | float):
                await asyncio.sleep(step)
            else:
                await ws.send(step if isinstance(step, str) else json.dumps(step))
        await ws.wait_closed()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
        self._loop.close()
