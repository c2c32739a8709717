"""The tests' child processes (`control`, `producer`, `streams`, `webui`, ...), started so that a failing test shows
what they said.

pytest captures what a child writes to the test's own stdout and stderr, but not what it writes to a pipe the test
reads or to a log file, which is where most children write. So every child started through `run` or `start` is
remembered while its test runs, and tests/conftest.py adds the end of each one's output to the report of a test
that fails (`sections`).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TAIL_LINES = 60
TAIL_BYTES = 256 * 1024  # enough for 60 lines of any log; a long run's log is not read whole for its end

# How a terminal starts a foreground command, as far as Ctrl-C goes: SIGINT (and SIGQUIT) at the default
# disposition, not blocked. A child inherits both across fork and exec (exec resets handlers, not SIG_IGN), and a
# test run started in the background by a non-interactive shell (`./run test &`, a CI harness that backgrounds it)
# has SIGINT and SIGQUIT ignored: its children would ignore a test's Ctrl-C too (Python installs no
# KeyboardInterrupt handler when it starts with SIGINT ignored), wait out what they were waiting for and exit 1.
# A session or process group of its own (start_new_session, process_group) changes whom a terminal's Ctrl-C
# reaches, not what the process does with it: neither helps. preexec_fn could reset it, but it runs Python in the
# forked child of a test process with threads (Kafka clients, pymongo's monitors, the fake servers), which Python
# documents as unsafe (the child may deadlock before exec). So a fresh interpreter, which has no threads, resets
# them and execs the command: same process, same pid for the test to signal. It also resets SIGPIPE and SIGXFSZ,
# which the interpreter itself ignores, as Popen's restore_signals does.
_AS_A_FOREGROUND_COMMAND = [
    sys.executable, "-S", "-c",
    "import os, signal as s, sys\n"
    "for number in (s.SIGINT, s.SIGQUIT, s.SIGPIPE, s.SIGXFSZ):\n"
    "    s.signal(number, s.SIG_DFL)\n"
    "s.pthread_sigmask(s.SIG_UNBLOCK, [s.SIGINT, s.SIGQUIT])\n"
    "os.execvp(sys.argv[1], sys.argv[1:])",
]

# `start`'s default for stdout: into the log, with stderr
INTO_THE_LOG: Any = object()


class Finished(subprocess.CompletedProcess):
    """A command run to its end, which prints as what a failure needs: the command, its exit status and the end
    of its stdout and stderr (`assert result.returncode == 0, str(result)`)."""

    def __str__(self) -> str:
        status = "killed at its timeout" if self.returncode is None else f"exit {self.returncode}"
        return (f"$ {shlex.join(self.args)}  ({status})\n{_headed('stdout', self.stdout)}\n"
                f"{_headed('stderr', self.stderr)}")


@dataclass
class Child:
    """One child of the running test: a finished command (`result`), or a process left running (`process`) whose
    output goes to `log`."""

    command: list[str]
    result: Finished | None = None
    process: subprocess.Popen | None = None
    log: Path | None = None
    temporary: bool = False  # the log is ours to remove (no test asked for it)

    def status(self) -> str:
        if self.result is not None:
            return "killed at its timeout" if self.result.returncode is None else f"exit {self.result.returncode}"
        assert self.process is not None
        code = self.process.poll()
        return f"pid {self.process.pid}, running" if code is None else f"pid {self.process.pid}, exit {code}"

    def output(self) -> str:
        if self.result is not None:
            return f"{_headed('stdout', self.result.stdout)}\n{_headed('stderr', self.result.stderr)}"
        assert self.log is not None
        return f"{self.log}:\n{tail(self.log)}"

    def ended(self) -> bool:
        return self.process is None or self.process.poll() is not None


_children: list[Child] = []


def run(command: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None, check: bool = False,
        **kwargs: Any) -> Finished:
    """subprocess.run with its output captured as text, remembered for the report of a failing test; `env` is
    the whole environment, as for subprocess.run. A command still running at `timeout` is killed (what it said
    until then is remembered too) and subprocess.TimeoutExpired raised; `check` raises CalledProcessError on a
    non-zero exit, after remembering."""
    command = [str(part) for part in command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    except subprocess.TimeoutExpired as expired:
        _children.append(Child(command, result=Finished(command, None, _text(expired.stdout), _text(expired.stderr))))
        raise
    result = Finished(command, done.returncode, done.stdout, done.stderr)
    _children.append(Child(command, result=result))
    if check:
        result.check_returncode()
    return result


def start(command: Sequence[str], log: Path | None = None, *, stdout: Any = INTO_THE_LOG, at_a_terminal: bool = False,
          **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen of a child that runs while the test goes on: its stderr, and its stdout unless `stdout`
    sends it elsewhere (PIPE, DEVNULL, None for the test's own), go to `log`, appended (a temporary file when no
    log is named), and the end of that log goes into the report of a failing test. stdin is /dev/null unless
    given. `at_a_terminal`: started as a terminal starts a foreground command, for a test that sends it SIGINT
    as Ctrl-C would."""
    command = [str(part) for part in command]
    temporary = log is None
    if log is None:
        handle, name = tempfile.mkstemp(prefix=f"{Path(command[0]).name}-", suffix=".log")
        os.close(handle)
        log = Path(name)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    argv = [*_AS_A_FOREGROUND_COMMAND, *command] if at_a_terminal else command
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        process = subprocess.Popen(argv, stdout=out if stdout is INTO_THE_LOG else stdout, stderr=out, **kwargs)
    _children.append(Child(command, process=process, log=log, temporary=temporary))
    return process


def wait(process: subprocess.Popen, timeout: float) -> int:
    """The exit status of a child `start`ed; one still running after `timeout` seconds is killed, and the test
    fails with the end of its output (rather than hang, or fail on a bare TimeoutExpired)."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        child = next((c for c in _children if c.process is process), None)
        if child is None:
            raise AssertionError(f"{_short(list(map(str, process.args)))} did not end within {timeout:g} s; "
                                 "killed it") from None
        raise AssertionError(f"{_short(child.command)} did not end within {timeout:g} s; killed it. Its output:\n"
                             f"{child.output()}") from None


@dataclass
class Interrupted:
    """How a command took Ctrl-C: its exit status, its whole stderr, what it said after the line Ctrl-C waited
    for, and the seconds from Ctrl-C to its end."""

    status: int
    stderr: str
    after: str
    seconds: float

    @property
    def last_line(self) -> str:
        lines = self.after.strip().splitlines()
        return lines[-1] if lines else ""


def ctrl_c(command: Sequence[str], stderr: Path, *, once: str, then_wait: float = 0.0, within: float = 30.0,
           env: Mapping[str, str] | None = None, say_within: float = 120.0) -> Interrupted:
    """Run `command` as a terminal runs a foreground command, its stderr in the file `stderr`, and press Ctrl-C
    (SIGINT) once its stderr says `once` (and `then_wait` seconds more). Nothing waits without a bound: a command
    that has not said `once` after `say_within` seconds, or that Ctrl-C has not ended after `within` seconds, is
    killed and the test fails with its stderr."""
    process = start(command, stderr, stdout=None, at_a_terminal=True, env=env)
    try:
        deadline = time.monotonic() + say_within
        while once not in stderr.read_text(errors="replace"):
            if process.poll() is not None:
                raise AssertionError(f"{_short(list(command))} ended (exit {process.returncode}) before it said "
                                     f"{once!r}, so before Ctrl-C; its stderr:\n{tail(stderr)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{_short(list(command))} did not say {once!r} within {say_within:g} s; "
                                     f"its stderr:\n{tail(stderr)}")
            time.sleep(0.1)
        time.sleep(then_wait)
        pressed = time.monotonic()
        process.send_signal(signal.SIGINT)
        status = wait(process, within)
        seconds = time.monotonic() - pressed
    finally:
        if process.poll() is None:  # the test failed: leave nothing running
            process.kill()
            process.wait()
    said = stderr.read_text(errors="replace")
    return Interrupted(status, said, said[said.index(once):].partition("\n")[2], seconds)


def tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a log file."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = handle.read().decode(errors="replace")
    except OSError as error:
        return f"(cannot read it: {error})"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else "(empty)"


def sections() -> list[tuple[str, str]]:
    """For the report of a failing test, one (title, text) per child it ran or that still runs: the end of its
    output. A command run several times (polled) shows its last run."""
    runs: dict[tuple[str, ...], list[Child]] = {}
    for child in _children:
        if child.result is not None:
            runs.setdefault(tuple(child.command), []).append(child)
    found = []
    for child in _children:
        times = ""
        if child.result is not None:
            same = runs[tuple(child.command)]
            if child is not same[-1]:
                continue
            times = f", the last of {len(same)} runs" if len(same) > 1 else ""
        found.append((f"child process `{_short(child.command)}` ({child.status()}{times}): last {TAIL_LINES} lines",
                      child.output()))
    return found


def forget_ended() -> None:
    """After a test: forget its finished commands and ended children. One still running (a module's dashboard)
    is kept, and shown if a later test fails while it runs."""
    for child in [c for c in _children if c.ended()]:
        _children.remove(child)
        if child.temporary and child.log is not None:
            child.log.unlink(missing_ok=True)


def _headed(name: str, text: str | None) -> str:
    kept = (text or "").splitlines()[-TAIL_LINES:]
    return f"--- {name} ---\n" + ("\n".join(kept) if kept else "(empty)")


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _short(command: list[str], width: int = 100) -> str:
    text = shlex.join(["python" if part == sys.executable else part for part in command])
    return text if len(text) <= width else text[: width - 3] + "..."
