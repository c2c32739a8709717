"""tests/children.py: what a failing test's report shows of its child processes."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from tests import children


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
