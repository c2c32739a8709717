"""What the browser tests share: the dashboard as a subprocess, and apt's headless Chromium driven by Playwright's
Python package (no browser download)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import requests
from playwright.sync_api import Browser, sync_playwright

from tests import children
from tests.integration.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def dashboard(env: dict[str, str] | None = None, ready: Callable[[dict], bool] = lambda health: True,
              timeout: float = 60, what: str = "the dashboard's /healthz to say ok") -> Iterator[str]:
    """`webui` on a free port with `env` added to ours; its URL once /healthz answers 200 and `ready(its JSON)`."""
    port = free_port()
    app = children.start([sys.executable, "-m", "webui.cli"], cwd=ROOT,
                         env={**os.environ, "WEBUI_PORT": str(port), **(env or {})})
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert app.poll() is None, "the webui process exited"
        try:
            response = requests.get(f"{url}/healthz", timeout=5)
        except requests.ConnectionError:
            return False
        return response.status_code == 200 and ready(response.json())

    try:
        wait_for(healthy, timeout, what)
        yield url
    finally:
        stop(app)


@contextlib.contextmanager
def producing(symbols: str, seed: int) -> Iterator[subprocess.Popen]:
    """`producer run` of the simulated market for `symbols`, its walk seeded with `seed`."""
    process = children.start(["producer", "run", "--symbols", symbols, "--seed", str(seed)])
    try:
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "install chromium: apt-get install -y chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
