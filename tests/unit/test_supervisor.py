"""control/supervisor.py against real processes (`sleep`), no stack: restart, backoff, holds, flapping."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from control.stack import components, processes, supervision
from control.supervisor import Supervisor
from cryptopulse.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def sleeper(name: str = "worker") -> components.Component:
    return components.Component(name=name, port=None, command=lambda s: ["sleep", "600"], ready=lambda: True,
                           startup_timeout=5)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def supervisor(state: Path):
    clock = Clock()
    component = sleeper()
    sup = Supervisor(Settings(state_dir=state), max_restarts=3, flap_window=300, clock=clock, components=[component])
    processes.start(component, state, say=lambda line: None)
    yield sup, component, clock
    processes.stop(component, state, say=lambda line: None, timeout=5)


def kill(component: components.Component, state: Path) -> int:
    pid = component.pid(state)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while component.pid(state) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


def test_a_killed_process_is_started_again_after_a_second_and_counted(supervisor, state):
    sup, component, clock = supervisor
    sup.check_components()
    first = kill(component, state)
    sup.check_components()
    record = sup.records["components"]["worker"]
    assert record.state == "down" and component.pid(state) is None  # not at once: after 1 s
    clock.now += 1.5
    sup.check_components()
    assert record.state == "running" and record.restarts == 1
    assert component.pid(state) not in (None, first)
    sup._save()
    assert supervision.supervision_report(state)["components"]["worker"]["restarts"] == 1


def test_a_process_that_keeps_dying_is_flapping_and_left_alone_until_stack_up(supervisor, state):
    sup, component, clock = supervisor
    sup.check_components()
    for _ in range(3):
        kill(component, state)
        sup.check_components()
        clock.now += 61  # past any backoff
        sup.check_components()
    assert sup.records["components"]["worker"].restarts == 3
    kill(component, state)
    sup.check_components()
    clock.now += 61
    sup.check_components()
    assert sup.records["components"]["worker"].state == "flapping" and component.pid(state) is None
    sup._save()
    supervision.reset_supervision(state)
    again = Supervisor(Settings(state_dir=state), max_restarts=3, clock=clock, components=[component])
    again.check_components()
    assert component.pid(state) is not None and again.records["components"]["worker"].restarts == 4


def test_a_held_component_stays_down_until_released(supervisor, state):
    sup, component, clock = supervisor
    supervision.hold_file(state, "worker").parent.mkdir(parents=True, exist_ok=True)
    supervision.hold_file(state, "worker").write_text("test")
    kill(component, state)
    clock.now += 120
    sup.check_components()
    assert sup.records["components"]["worker"].state == "held" and component.pid(state) is None
    supervision.hold_file(state, "worker").unlink()
    sup.check_components()
    clock.now += 2
    sup.check_components()
    assert component.pid(state) is not None


def test_a_component_stopped_on_purpose_is_not_restarted(supervisor, state):
    sup, component, clock = supervisor
    sup.check_components()
    processes.stop(component, state, say=lambda line: None, timeout=5)
    clock.now += 120
    sup.check_components()
    assert sup.records["components"]["worker"].state == "stopped" and component.pid(state) is None
