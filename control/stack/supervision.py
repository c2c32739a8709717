"""The files the supervisor (control/supervisor.py) and the rest of the control plane share under `<state>/run/`:
the supervisor's report (what it restarted, what is down, held or flapping) and an operator's holds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def supervision_file(state_dir: Path) -> Path:
    return state_dir / "run" / "supervisor.json"


def supervision_report(state_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The supervisor's last report: {"components": {name: record}, "connectors": {name: record}}."""
    try:
        data = json.loads(supervision_file(state_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"components": {}, "connectors": {}}
    return {"components": data.get("components", {}), "connectors": data.get("connectors", {}),
            "updated": data.get("updated")}


def hold_file(state_dir: Path, name: str) -> Path:
    return state_dir / "run" / f"{name}.hold"


def reset_supervision(state_dir: Path) -> None:
    """Forget flapping states (on `control stack up`): the operator asked to try again."""
    path = supervision_file(state_dir)
    data = supervision_report(state_dir)
    if not path.exists():
        return
    for record in data["components"].values():
        if record.get("state") == "flapping":
            record.update(state="down", recent=[], delay=0.0, next_try=0.0)
    path.write_text(json.dumps(data, indent=1))



def supervisor_reporting(state_dir: Path) -> bool:
    """The supervisor has written its report within the last 10 s: it is up."""
    try:
        return time.time() - supervision_file(state_dir).stat().st_mtime < 10
    except FileNotFoundError:
        return False
