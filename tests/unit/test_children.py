"""tests/children.py: what a failing test's report shows of its child processes, and Ctrl-C that reaches a child
even when the test run itself ignores SIGINT (started in the background by a non-interactive shell)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest

from tests import children

SAYS_ITS_SIGINT = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """This process as a background job of a non-interactive shell is: SIGINT ignored."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_finished_command_prints_its_exit_status_and_output():
    result = children.run([sys.executable, "-c", "import sys; print('out'); sys.exit('went wrong')"], timeout=30)
    text = str(result)
    assert result.returncode == 1 and "(exit 1)" in text, text
    assert "--- stdout ---\nout" in text and "--- stderr ---\nwent wrong" in text, text


def test_the_report_shows_each_childs_output_and_a_polled_command_once(tmp_path):
    for attempt in range(3):  # one command polled three times: the report shows its last run
        children.run([sys.executable, "-c", "import os; print('attempt', os.environ['ATTEMPT'])"], timeout=30,
                     env={**os.environ, "ATTEMPT": str(attempt)})
    log = tmp_path / "child.log"
    children.wait(children.start([sys.executable, "-c", "import sys; print('to the log', file=sys.stderr)"], log), 30)
    shown = dict(children.sections())
    polled = [title for title in shown if "attempt" in title]
    assert len(polled) == 1 and "the last of 3 runs" in polled[0], list(shown)
    assert "attempt 2" in shown[polled[0]]
    logged = [text for text in shown.values() if "to the log" in text]
    assert len(logged) == 1 and str(log) in logged[0], list(shown)


def test_a_child_that_does_not_end_is_killed_and_its_output_shown(tmp_path):
    log = tmp_path / "slow.log"
    process = children.start([sys.executable, "-c", "import time; print('still here', flush=True); time.sleep(60)"],
                             log)
    deadline = time.monotonic() + 30
    while "still here" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(AssertionError, match=r"(?s)did not end within 1 s; killed it.*still here"):
        children.wait(process, 1)
    assert process.returncode == -signal.SIGKILL


def test_at_a_terminal_a_child_takes_ctrl_c_even_when_the_test_run_ignores_it(sigint_ignored, tmp_path):
    inherited = children.start([sys.executable, "-c", SAYS_ITS_SIGINT], tmp_path / "inherited.log")
    foreground = children.start([sys.executable, "-c", SAYS_ITS_SIGINT], tmp_path / "foreground.log",
                                at_a_terminal=True)
    assert children.wait(inherited, 30) == 0 and children.wait(foreground, 30) == 0
    # the bug this fixes: a plain child inherits SIG_IGN, and Python then installs no KeyboardInterrupt handler
    assert (tmp_path / "inherited.log").read_text().strip() == "False"
    assert (tmp_path / "foreground.log").read_text().strip() == "True"


def test_ctrl_c_ends_a_child_waiting_for_something_and_says_how(sigint_ignored, tmp_path):
    waiting = ("import sys, time\nprint('waiting', file=sys.stderr, flush=True)\ntry:\n    time.sleep(60)\n"
               "except KeyboardInterrupt:\n    print('interrupted', file=sys.stderr)\n    sys.exit(130)\n")
    ended = children.ctrl_c([sys.executable, "-c", waiting], tmp_path / "waiting.stderr", once="waiting", within=10)
    assert ended.status == 130 and ended.last_line == "interrupted" and ended.seconds < 10, ended
