"""Installing the stack: the Java artifacts through Maven, FerretDB through Go, each step only when it is out of date.

The Java artifacts are resolved by the project's own pom (control/stack/pom.xml, beside this module); the FerretDB
embedding program (control/ferretdb/) is built with the Go module proxy. A step is skipped when its inputs have not
changed since it last ran and its outputs exist. Everything lands under the state folder (`.state/`, ignored).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cryptopulse.errors import StackError
from cryptopulse.settings import PROJECT_DIR
from cryptopulse.text import terminal_safe

STACK_DIR = Path(__file__).resolve().parent  # the pom and the config templates
FERRETDB_DIR = PROJECT_DIR / "control" / "ferretdb"


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()


def ferretdb_inputs() -> list[Path]:
    """Every file the FerretDB build reads from control/ferretdb/: the module files and all Go sources."""
    return sorted([FERRETDB_DIR / "go.mod", FERRETDB_DIR / "go.sum", *FERRETDB_DIR.glob("*.go")])


def _step(state: Path, name: str, inputs: list[Path], outputs: list[Path], run: Callable[[], None], say) -> None:
    """Run an install step unless its outputs exist and its inputs are unchanged since last time."""
    marker = state / "installed" / name
    digest = _digest(*inputs)
    if marker.exists() and marker.read_text() == digest and all(p.exists() for p in outputs):
        return
    say(f"installing {name} (first use; cached afterwards)")
    started = time.monotonic()
    run()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest)
    say(f"installed {name} in {time.monotonic() - started:.0f}s")


def run_logged(cmd: list[str], cwd: Path, log: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run a command to its end with its output appended to `log`; a non-zero exit is a StackError."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        start = out.tell()
        result = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        with log.open("rb") as written:
            written.seek(start)
            said = [line.strip() for line in written.read().decode(errors="replace").splitlines() if line.strip()]
        last = f": {terminal_safe(said[-1])[:300]}" if said else ""
        raise StackError(f"{what} failed (exit {result.returncode}){last}; see {log}")


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise StackError(f"`{tool}` is not on PATH; {hint}")
    return path


def java_home(min_version: int) -> Path:
    """The JDK to run with: $JAVA<N>_HOME, else the oldest JDK of at least `min_version` among
    $JAVA_HOME and /usr/lib/jvm/* (Kafka and Connect are tested most on 17; the registry needs 21+)."""
    explicit = os.environ.get(f"JAVA{min_version}_HOME")
    if explicit:
        return Path(explicit)
    candidates = [os.environ.get("JAVA_HOME")]
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += [str(p) for p in jvm.iterdir() if not p.is_symlink()]
    found: dict[int, Path] = {}
    for candidate in filter(None, candidates):
        release = Path(candidate) / "release"
        if not release.is_file():
            continue
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                major = int(line.split("=", 1)[1].strip('"').split(".")[0])
                if major >= min_version:
                    found.setdefault(major, Path(candidate))
    if not found:
        raise StackError(f"no JDK {min_version}+ found; install one or set JAVA{min_version}_HOME")
    return found[min(found)]


def install(state: Path, say=print) -> None:
    """Fetch the Java artifacts and build FerretDB, each only when missing or out of date."""
    pom = STACK_DIR / "pom.xml"
    # -C (--strict-checksums): an artifact whose checksum does not match the repository's fails the step
    mvn = [_require("mvn", "install Maven (apt-get install maven)"), "-B", "-q", "-C", "-f", str(pom),
           f"-Dstate.dir={state}"]
    log = state / "logs" / "install.log"
    # (step, output folder, Maven arguments): each step of control/stack/pom.xml fills one folder.
    maven_steps = [
        ("broker-libs", state / "lib" / "broker", ["-P", "broker", "dependency:copy-dependencies"]),
        ("connect-libs", state / "lib" / "connect", ["-P", "connect", "dependency:copy-dependencies"]),
        ("apicurio-converter", state / "connect-plugins" / "apicurio-converter",
         ["-P", "converter", "dependency:copy-dependencies"]),
        ("mongo-kafka-connect", state / "connect-plugins" / "mongo-kafka-connect", ["dependency:copy@plugins"]),
        ("registry", state / "apicurio", ["dependency:unpack@registry"]),
    ]
    for name, folder, args in maven_steps:

        def fetch(folder: Path = folder, args: list[str] = args, name: str = name) -> None:
            shutil.rmtree(folder, ignore_errors=True)
            run_logged([*mvn, *args, f"-DoutputDirectory={folder}"], STACK_DIR, log, f"Maven ({name})")

        _step(state, name, [pom], [folder], fetch, say)

    binary = state / "bin" / "ferretdb"
    go = [_require("go", "install Go 1.24+"), "build", "-trimpath", "-o", str(binary), "."]
    _step(state, "ferretdb", ferretdb_inputs(), [binary],
          lambda: run_logged(go, FERRETDB_DIR, log, "go build of FerretDB"), say)

