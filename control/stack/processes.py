"""Running the stack: starting a component and waiting until it is ready, stopping it (only ever its own process),
the operator's holds, what runs where and its memory, the logs.

Each component runs on loopback in a session of its own, with its output in `<state>/logs/<name>.log` and its pid
(with the command line it runs, checked before any signal) in `<state>/run/<name>.pid`. Everything the stack writes
is readable by its owner only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from control.stack import probes
from control.stack.components import Component, components, named, process_env
from control.stack.installation import install
from control.stack.supervision import hold_file, reset_supervision, supervision_report
from cryptopulse.errors import StackError
from cryptopulse.settings import Settings, StackLayout

PRIVATE = 0o077  # the umask of everything the stack writes: files 0600, folders 0700


def make_private(state: Path) -> None:
    """The state folder and everything in it readable by its owner only (0700 folders, 0600 files): it holds
    the store's data, logs that may quote connection strings, and the pid files the stack signals by."""
    os.umask(PRIVATE)
    state.mkdir(parents=True, exist_ok=True)
    for folder, _folders, files in os.walk(state):
        os.chmod(folder, 0o700)
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                mode = path.stat().st_mode & 0o777
                os.chmod(path, (mode & 0o700) | (0o100 if mode & 0o111 else 0))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log yet)"


def _where(component: Component) -> str:
    return f" on 127.0.0.1:{component.port}" if component.port is not None else ""


def start(component: Component, state: Path, say=print) -> None:
    """Start one component unless it already runs, and wait until it is ready."""
    wait_ready(component, state, launch(component, state, say), say)


def launch(component: Component, state: Path, say=print) -> bool:
    """Start one component's process unless it already runs, without waiting for it; False if it ran already."""
    os.umask(PRIVATE)
    if component.pid(state) is not None:
        return False
    if component.port is not None and probes.port_open(component.port):
        raise StackError(
            f"{component.name}: port {component.port} is taken by a process the stack did not start; "
            "stop it or run `control stack down` first"
        )
    if component.prepare:
        component.prepare(state)
    log = component.log_file(state)
    log.parent.mkdir(parents=True, exist_ok=True)
    component.pid_file(state).parent.mkdir(parents=True, exist_ok=True)
    command = component.command(state)
    with log.open("ab") as out:
        out.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command,
            cwd=component.workdir(state) if component.workdir else state,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=process_env(component, state), start_new_session=True, umask=PRIVATE,
        )
    # what `pid` checks before anyone signals it: this pid running this command line
    component.pid_file(state).write_text(json.dumps({"pid": proc.pid, "cmdline": command}))  # argv, as exec'd
    deadline = time.monotonic() + 2
    while probes.cmdline(proc.pid) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the kernel shows the new program's arguments a moment after exec returns
    say(f"{component.name}: starting (pid {proc.pid}, log {log})")
    return True


def wait_ready(component: Component, state: Path, launched: bool, say=print) -> None:
    """Wait until a component is ready; a StackError with its log's tail if it exits or takes too long."""
    if not launched and component.ready():
        say(f"{component.name}: already running{_where(component)}")
        return
    started = time.monotonic()
    while time.monotonic() - started < component.startup_timeout:
        if component.pid(state) is None:
            raise StackError(
                f"{component.name} exited during start-up; see {component.log_file(state)}\n"
                f"{_tail(component.log_file(state))}"
            )
        if component.ready():
            say(f"{component.name}: ready{_where(component)} after {time.monotonic() - started:.1f}s")
            return
        time.sleep(0.5)
    raise StackError(
        f"{component.name} did not become ready within {component.startup_timeout:.0f}s; "
        f"see {component.log_file(state)}\n{_tail(component.log_file(state))}"
    )


def stop(component: Component, state: Path, say=print, timeout: float = 60) -> None:
    """SIGTERM the component's process group, SIGKILL it if it does not exit in time."""
    stop_together([component], state, say, timeout)


def stop_together(together: list[Component], state: Path, say=print, timeout: float = 60) -> None:
    """Stop components side by side: a cluster's Kafka nodes leave while a majority of them can still agree on it
    (stopped one after the other, the last would wait for a quorum that is gone)."""
    signalled = {}
    for component in together:
        pid = component.pid(state)
        # the pid file goes first: a component without one is stopped on purpose, and the supervisor leaves it so
        component.pid_file(state).unlink(missing_ok=True)
        if pid is None:
            continue
        say(f"{component.name}: stopping (pid {pid})")
        # `pid` checked the command line; the group is signalled only if the process still leads it (it was
        # started in a session of its own), so nothing outside the component is ever hit
        signalled[component.name] = (pid, probes.cmdline(pid))
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(probes.alive(pid) for pid, _ in signalled.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for name, (pid, command) in signalled.items():
        if probes.alive(pid) and probes.cmdline(pid) == command:
            say(f"{name}: did not stop in {timeout:.0f}s, killing it")
            _signal(pid, signal.SIGKILL)
    for component in together:
        component.pid_file(state).unlink(missing_ok=True)


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process's group when it leads one, else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def by_role(stack: list[Component]) -> list[list[Component]]:
    """The components grouped by role, in start order: a cluster's Kafka nodes, then the registry, ..."""
    return [[c for c in stack if c.role == role] for role in dict.fromkeys(c.role for c in stack)]


def up(settings: Settings, say=print) -> None:
    """Install what is missing and start every component that is not running; an operator's holds and the
    supervisor's "flapping" verdicts are cleared (being asked to start is being asked to try again).

    Components of one role start together, then are waited for: a cluster's Kafka nodes elect a controller only
    once a majority of them runs, and Connect workers join their group side by side."""
    state = settings.state_dir
    make_private(state)
    install(state, say)
    reset_supervision(state)
    for together in by_role(components(settings)):
        for component in together:
            hold_file(state, component.name).unlink(missing_ok=True)
        launched = [launch(component, state, say) for component in together]
        for component, fresh in zip(together, launched, strict=True):
            wait_ready(component, state, fresh, say)


def set_layout(settings: Settings, layout: StackLayout) -> Settings:
    """Set up the state folder for `layout` (brokers, Connect workers, port offset) and return the settings that
    follow from it. A folder keeps the layout it first ran with: its Kafka data belongs to that cluster."""
    current = StackLayout.of(settings.state_dir)
    if layout == current:
        return settings
    ran = [p.name for p in settings.state_dir.glob("kafka*/data") if any(p.iterdir())]
    if ran:
        raise StackError(
            f"{settings.state_dir} holds the data of a stack of {current.brokers} broker(s) and "
            f"{current.connect_workers} Connect worker(s); give another folder (CRYPTOPULSE_STATE_DIR) for "
            f"{layout.brokers} and {layout.connect_workers}, or remove this one after `control stack down`"
        )
    layout.save(settings.state_dir)
    return Settings()


def hold(settings: Settings, name: str) -> None:
    """Keep a component down on purpose: the supervisor does not restart it until `release`."""
    named(settings, name)
    path = hold_file(settings.state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))


def release(settings: Settings, name: str) -> None:
    """Let the supervisor start a held component again (it does so within a few seconds)."""
    named(settings, name)
    hold_file(settings.state_dir, name).unlink(missing_ok=True)


def down(settings: Settings, say=print) -> None:
    """Stop every component, in the reverse order of `up`; those of one role side by side."""
    for together in reversed(by_role(components(settings))):
        stop_together(together, settings.state_dir, say)


def rss_mib(pid: int, others: frozenset[int] = frozenset()) -> float:
    """Resident memory of a process and its children, in MiB; `others` (components the supervisor started, so
    its children) are counted on their own rows."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        if current != pid and current in others:
            continue
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        pids.extend(int(c) for c in children)
    return total / 1024


def status(settings: Settings) -> list[dict]:
    """One row per component; `restarts` and `supervision` (running, down, restarting, held, flapping)
    come from the supervisor's report."""
    report = supervision_report(settings.state_dir)["components"]
    running = frozenset(filter(None, (c.pid(settings.state_dir) for c in components(settings))))
    rows = []
    for component in components(settings):
        pid = component.pid(settings.state_dir)
        seen = report.get(component.name, {})
        state = "ready" if pid and component.ready() else ("starting" if pid else "stopped")
        if seen.get("state") in ("down", "restarting", "flapping", "held") and state != "ready":
            state = seen["state"]
        rows.append({
            "name": component.name,
            "role": component.role,
            "port": component.port,
            "address": f"127.0.0.1:{component.port}" if component.port is not None else "-",
            "pid": pid,
            "state": state,
            "restarts": seen.get("restarts", 0),
            "last_error": seen.get("last_error") if state != "ready" else None,
            "rss_mib": round(rss_mib(pid, running), 1) if pid else None,
            "log": str(component.log_file(settings.state_dir)),
        })
    return rows


def logs(settings: Settings, name: str, lines: int, follow: bool) -> None:
    log = named(settings, name).log_file(settings.state_dir)
    if not log.exists():
        raise StackError(f"{name} has no log yet ({log}); start it with `control stack up`")
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", str(log)])
    sys.stdout.write(_tail(log, lines) + "\n")
