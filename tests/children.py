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
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TAIL_LINES = 60
TAIL_BYTES = 256 * 1024  # enough for 60 lines of any log; a long run's log is not read whole for its end

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


def start(command: Sequence[str], log: Path | None = None, *, stdout: Any = INTO_THE_LOG,
          **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen of a child that runs while the test goes on: its stderr, and its stdout unless `stdout`
    sends it elsewhere (PIPE, DEVNULL, None for the test's own), go to `log`, appended (a temporary file when no
    log is named), and the end of that log goes into the report of a failing test. stdin is /dev/null unless
    given."""
    command = [str(part) for part in command]
    temporary = log is None
    if log is None:
        handle, name = tempfile.mkstemp(prefix=f"{Path(command[0]).name}-", suffix=".log")
        os.close(handle)
        log = Path(name)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        process = subprocess.Popen(command, stdout=out if stdout is INTO_THE_LOG else stdout, stderr=out, **kwargs)
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
