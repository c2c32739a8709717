"""The real dashboard server for the security tests: `python -m tests.security.stub_dashboard serve` in a process
of its own (hypercorn and every limit as in production, a synthetic history, no service needed), so its memory
can be measured and its log read."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests import children

PROJECT_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dashboard:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def metric(self, name: str, labels: str = "") -> float:
        """One series of /metrics (0 when absent: a counter that never counted)."""
        text = requests.get(f"{self.http}/metrics", timeout=5).text
        pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" ([0-9.e+-]+)$"
        found = re.search(pattern, text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
            time.sleep(0.2)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Callable[..., Dashboard]]:
    """Start the stub dashboard with extra environment variables; stopped after the test."""
    started: list[Dashboard] = []

    def start(check: str = "http", **env: str) -> Dashboard:
        port = free_port()
        log = tmp_path / f"dashboard-{port}.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("WEBUI_", "STUB_"))}
        full.update({"WEBUI_GROUP_PREFIX": "test-security", "PYTHONUNBUFFERED": "1",
                     "WEBUI_SECRET_FILE": str(tmp_path / "session-secret"), **env})
        process = children.start([sys.executable, "-m", "tests.security.stub_dashboard", "serve", "--host",
                                  "127.0.0.1", "--port", str(port)], log, cwd=PROJECT_DIR, env=full)
        board = Dashboard(process, port, log)
        started.append(board)
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{check}://127.0.0.1:{port}/metrics", timeout=2, verify=False)
                return board
            except requests.ConnectionError:
                assert process.poll() is None, f"the dashboard exited: {board.log_text()[-2000:]}"
                assert time.monotonic() < deadline, "the dashboard did not answer within 30 s"
                time.sleep(0.2)

    yield start
    for board in started:  # a stub keeps nothing: a socket a test left open need not be waited for (3 s each)
        board.process.terminate()
        try:
            board.process.wait(0.5)
        except subprocess.TimeoutExpired:
            board.process.kill()
            board.process.wait(10)
