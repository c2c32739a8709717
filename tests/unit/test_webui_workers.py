"""`webui serve --processes N` without services: the options, the limits each worker applies, the port's reservation
and the supervisor's restarts (with workers that are tiny scripts, not dashboards)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import threading
import time

import pytest

from tests import children
from webui.config import WebConfig
from webui.workers import Supervisor, reserve, worker_limits


def config(**overrides: int) -> WebConfig:
    return WebConfig(start_consumer=False).with_overrides(**overrides)


@pytest.mark.parametrize(("total", "per_address", "processes", "expected"), [
    (1000, 32, 1, (1000, 32)),
    (1000, 32, 2, (500, 16)),
    (1000, 32, 3, (333, 10)),  # rounded down: all workers together never exceed the cap
    (1000, 0, 2, (500, 0)),  # 0 (no cap per address, behind a proxy) stays 0
    (3, 1, 4, (1, 1)),  # at least one socket each
])
def test_each_worker_gets_its_share_of_the_socket_caps(total, per_address, processes, expected):
    limits = worker_limits(config(max_connections=total, max_connections_per_address=per_address), processes)
    assert (limits["max_connections"], limits["max_connections_per_address"]) == expected
    if processes > 1 and per_address > processes:
        assert limits["max_connections_per_address"] * processes <= per_address


def test_zero_processes_is_refused():
    with pytest.raises(ValueError):
        worker_limits(config(), 0)


@pytest.mark.parametrize(("value", "ok"), [("1", True), ("4", True), ("0", False), ("-2", False), ("two", False)])
def test_webui_processes_from_the_environment(monkeypatch, value, ok):
    monkeypatch.setenv("WEBUI_PROCESSES", value)
    if ok:
        assert WebConfig(start_consumer=False).processes == int(value)
    else:
        with pytest.raises(ValueError, match="WEBUI_PROCESSES"):
            WebConfig(start_consumer=False)


@pytest.mark.parametrize(("args", "env"), [(["--processes", "0"], {}), (["serve", "--processes", "x"], {}),
                                           ([], {"WEBUI_PROCESSES": "0"})])
def test_a_bad_process_count_is_one_line(args, env):
    result = children.run([sys.executable, "-m", "webui.cli", *args], timeout=60, env={**os.environ, **env})
    assert result.returncode == 2, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("webui") and "processes" in lines[0].lower(), result.stderr


def test_the_reservation_keeps_the_port_for_the_workers_only():
    with reserve("127.0.0.1", 0) as reserved:
        port = reserved.getsockname()[1]
        plain = socket.socket()
        with plain, pytest.raises(OSError) as refused:
            plain.bind(("127.0.0.1", port))  # another program (no SO_REUSEPORT) cannot take the port
        assert refused.value.errno == errno.EADDRINUSE
        listeners = []
        for _ in range(2):  # workers join it
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            listeners.append(sock)
        # connections go to the listening workers, none to the reservation; the kernel spreads them
        connections = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        accepted = []
        for sock in listeners:
            sock.setblocking(False)
            count = 0
            while True:
                try:
                    sock.accept()[0].close()
                except BlockingIOError:
                    break
                count += 1
            accepted.append(count)
        for item in [*connections, *listeners]:
            item.close()
    assert sum(accepted) == 40 and min(accepted) > 0, accepted


def test_a_busy_port_fails_before_any_worker_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = children.run([sys.executable, "-m", "webui.cli", "--processes", "2", "--port",
                               str(taken.getsockname()[1])], timeout=60)
    assert result.returncode == 1 and "address already in use" in result.stderr.lower(), result.stderr
    assert "worker" not in result.stderr and "Traceback" not in result.stderr, result.stderr


class Scripted(Supervisor):
    """Workers that are a few lines of Python: one dies at once, the other says it serves and sleeps."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", DYING_OR_SERVING, str(self.attempts)]

    def start(self, worker) -> None:
        self.attempts += 1
        self.started.append((worker.index, time.monotonic()))
        super().start(worker)


# argv: [-c, attempt number, --ready-fd, fd]; worker 1's first three attempts die, everything else serves
DYING_OR_SERVING = """
import os, sys, time
attempt, fd = int(sys.argv[1]), int(sys.argv[3])
if attempt in (1, 3, 4):
    sys.exit(3)
os.write(fd, b"r")
time.sleep(120)
"""


def test_a_dying_worker_is_restarted_with_a_growing_delay_and_logged_once_each_way(caplog):
    supervisor = Scripted("127.0.0.1", 0, 2)
    supervisor.attempts, supervisor.started = 0, []
    caplog.set_level(logging.INFO, logger="webui.workers")
    asked = threading.Timer(9.0, lambda: setattr(supervisor, "stopping", signal.SIGTERM))  # as SIGTERM would
    asked.start()
    assert supervisor.run() == 0
    first = [t for index, t in supervisor.started if index == 1]
    # attempts: 1 (worker 1, dies), 2 (worker 2, serves), 3 and 4 (worker 1, die), 5 (worker 1, serves)
    assert len(first) == 4, supervisor.started
    delays = [b - a for a, b in zip(first, first[1:], strict=False)]
    assert 0.9 < delays[0] < 1.6 and 1.9 < delays[1] < 2.6 and 3.9 < delays[2] < 4.6, delays
    messages = [r.getMessage() for r in caplog.records]
    assert sum("worker 1" in m and "died (exit status 3)" in m for m in messages) == 1, messages
    assert sum("worker 1 is back" in m and "(3 restarts)" in m for m in messages) == 1, messages
    assert any("worker 2 (pid" in m and "serving" in m for m in messages), messages
    assert all(w.process is None for w in supervisor.workers)  # stopped and waited for
