"""The real `webui serve` (hypercorn, the app, all its limits) with a synthetic history: no service needed.

    python -m tests.security.stub_dashboard serve --port N

Kafka, the registry and MongoDB point at closed ports (the app rides that out, as in any outage); every
snapshot is made of STUB_POINTS ticks (default 1500) ending at the requested time, after STUB_BUILD_SECONDS
(default 0) of pretend query. Only `HistoryStore._build` is replaced, so the server, the protocol, the cache and
the sharing of queries are the real ones.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from webui import cli, history
from webui.series import TickRow

BUILDS = 0


async def _build(self: Any, symbol: str, range_: str, end: int | None) -> dict[str, Any]:
    global BUILDS
    BUILDS += 1
    await asyncio.sleep(float(os.environ.get("STUB_BUILD_SECONDS", "0")))
    stop = end if end is not None else int(time.time() * 1000)
    points = int(os.environ.get("STUB_POINTS", "1500"))
    ticks = [TickRow(stop - (points - i) * 2000, 100.0 + (i % 97) * 0.01, 1e6 + i) for i in range(points)]
    snap = history.build_snapshot(symbol, range_, stop, (None, []), ("simulated", ticks), [], self.max_points)
    snap["server_ms"] = 0.0
    return snap


def main() -> int:
    os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    os.environ.setdefault("SCHEMA_REGISTRY_URL", "http://127.0.0.1:1/apis/ccompat/v7")
    os.environ.setdefault("MONGODB_URI", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500")
    os.environ.setdefault("WEBUI_VIEWS", "0")
    history.HistoryStore._build = _build
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
