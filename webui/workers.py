"""`webui serve --processes N`: one dashboard on one port, served by N processes (docs/webui.md, "Several processes").

The parent serves nothing. It reserves host:port (a bound socket with SO_REUSEPORT that never listens, so no other
program takes the port while a worker restarts, and `--port 0` picks one port for all), starts N workers, each a
`webui serve` of its own binding the same address with SO_REUSEPORT (the kernel spreads new connections over the
listening workers by their addresses and ports), forwards SIGTERM and SIGINT to them and waits for them, and
restarts a worker that dies unasked (after 1 s, doubling to 30 s while it keeps dying before it serves): one log
line when it dies, one when it is back. Each worker is the whole app: its own Kafka consumer (a consumer group of
its own: webui/live.py `group_id`), views, caches, /metrics and limits. The per-address and total socket caps are
divided among the workers (`worker_limits`) so the documented caps still hold for the port as a whole.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptopulse.outage import Backoff

if TYPE_CHECKING:
    from webui.config import WebConfig

log = logging.getLogger("webui.workers")

FIRST_RESTART = 1.0  # seconds before a dead worker is started again, doubling while it keeps dying unserved
LAST_RESTART = 30.0
STOP_SECONDS = 40.0  # how long the workers get to finish after SIGTERM (hypercorn's grace, the consumer's stop)
PR_SET_PDEATHSIG = 1


def worker_limits(config: WebConfig, processes: int) -> dict[str, int]:
    """The socket caps one of `processes` workers applies, so that all of them together keep the configured ones:
    each cap divided by the number of workers, rounded down (at least 1; 0, no cap per address, stays 0). An
    address's sockets are spread by the kernel, not evenly: it may be refused a little before its cap."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    per_address = config.max_connections_per_address
    return {"max_connections": max(1, config.max_connections // processes),
            "max_connections_per_address": per_address if per_address <= 0 else max(1, per_address // processes)}


def reserve(host: str, port: int) -> socket.socket:
    """host:port bound with SO_REUSEPORT and never listening: the workers join it; nothing else can take the port
    (a busy port or an unknown host fails here, once, before any worker starts). Connections go to listeners only."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def follow_parent(parent: int) -> None:
    """In a worker: end (SIGTERM) when the parent does, even if it was killed with -9 (Linux's PR_SET_PDEATHSIG);
    if the parent has gone already, end now."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


async def tell_ready(sock: socket.socket, fd: int) -> None:
    """In a worker: once its socket listens (hypercorn listens after the app's startup), one byte on `fd`."""
    import asyncio

    try:
        while not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            await asyncio.sleep(0.05)
        os.write(fd, b"r")
    finally:
        sock.close()
        os.close(fd)


@dataclass
class Worker:
    """One worker process and what the parent knows of it."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None  # the read end of its readiness pipe, until it said it serves or ended
    serving: bool = False
    died_at: float | None = None  # when it died unasked, until it serves again
    deaths: int = 0  # deaths since it last served
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(FIRST_RESTART, LAST_RESTART))


class Supervisor:
    """Starts the workers, restarts the ones that die, stops them all when asked (`run`)."""

    def __init__(self, host: str, port: int, processes: int, python: str = sys.executable) -> None:
        self.host, self.port, self.processes, self.python = host, port, processes, python
        self.workers = [Worker(i + 1) for i in range(processes)]
        self.selector = selectors.DefaultSelector()
        self.stopping: int | None = None  # the signal that asked us to stop

    def command(self) -> list[str]:
        return [self.python, "-m", "webui.cli", "serve", "--host", self.host, "--port", str(self.port),
                "--processes", "1", "--worker-of", str(self.processes), "--parent", str(os.getpid())]

    def start(self, worker: Worker) -> None:
        read, write = os.pipe()
        try:
            worker.process = subprocess.Popen([*self.command(), "--ready-fd", str(write)], pass_fds=(write,))
        except OSError:
            os.close(read)
            raise
        finally:
            os.close(write)
        worker.ready_fd, worker.serving, worker.restart_at = read, False, None
        self.selector.register(read, selectors.EVENT_READ, worker)

    def _forget_pipe(self, worker: Worker) -> None:
        if worker.ready_fd is not None:
            self.selector.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None

    def _ready(self, worker: Worker) -> None:
        said = b""
        with contextlib.suppress(OSError):
            said = os.read(worker.ready_fd, 1)
        self._forget_pipe(worker)
        if said != b"r" or worker.process is None:
            return  # it ended before it served: seen by `_reap`
        worker.serving = True
        worker.backoff.reset()
        if worker.died_at is not None:
            log.info("worker %d is back (pid %d), %.1f s after it died%s", worker.index, worker.process.pid,
                     time.monotonic() - worker.died_at, f" ({worker.deaths} restarts)" if worker.deaths > 1 else "")
        else:
            log.info("worker %d (pid %d) serving http://%s:%d", worker.index, worker.process.pid, self.host, self.port)
        worker.died_at, worker.deaths = None, 0

    def _reap(self, worker: Worker, now: float) -> None:
        if worker.process is None or (status := worker.process.poll()) is None:
            return
        pid = worker.process.pid
        self._forget_pipe(worker)
        worker.process = None
        delay = worker.backoff.next()
        worker.restart_at = now + delay
        worker.deaths += 1
        if worker.died_at is None:  # once, not at every failed attempt of a worker that keeps dying
            worker.died_at = now
            how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"
            log.warning("worker %d (pid %d) died (%s); starting it again in %g s", worker.index, pid, how, delay)

    def _ask_to_stop(self, signum: int, _frame: Any) -> None:
        if self.stopping is None:
            self.stopping = signum

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; then forward it to every worker and wait for them (at most STOP_SECONDS,
        then SIGKILL). 0 when asked to stop."""
        previous = {signum: signal.signal(signum, self._ask_to_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._serve()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    def _serve(self) -> None:
        with reserve(self.host, self.port) as reserved:
            self.port = reserved.getsockname()[1]
            log.info("serving http://%s:%d with %d processes", self.host, self.port, self.processes)
            try:
                for worker in self.workers:
                    self.start(worker)
                while self.stopping is None:
                    for key, _ in self.selector.select(timeout=0.2):
                        self._ready(key.data)
                    now = time.monotonic()
                    for worker in self.workers:
                        self._reap(worker, now)
                        if self.stopping is None and worker.restart_at is not None and now >= worker.restart_at:
                            self.start(worker)
            finally:
                self.stop(self.stopping or signal.SIGTERM)

    def stop(self, signum: int) -> None:
        running = [w.process for w in self.workers if w.process is not None and w.process.poll() is None]
        if running:
            log.info("stopping %d worker(s) (%s)", len(running), signal.Signals(signum).name)
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop within %g s: killed", process.pid, STOP_SECONDS)
                process.kill()
                process.wait()
        for worker in self.workers:
            self._forget_pipe(worker)
            worker.process = None
        self.selector.close()


def supervise(host: str, port: int, processes: int) -> int:
    """`webui serve --processes N` with N > 1: the parent (module docstring)."""
    return Supervisor(host, port, processes).run()
