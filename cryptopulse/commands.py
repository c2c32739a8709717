"""The contract every console script (`producer`, `streams`, `webui`, `control`) keeps with its user.

- One logging set-up: `setup_logging`.
- Options and environment values are checked before anything starts: `Parser` (one line for a bad option,
  not argparse's usage block) and its argument types (`port`, `positive_int`, ...), and the `env_*`
  readers of cryptopulse.settings, which name the variable.
- `run_command` checks the URL variables (`check_urls`), then wraps a command's main: an error of ours, a bad
  value, a busy port, an unreachable host, Ctrl-C or a closed pipe (`control status | head`) ends it with one
  line on stderr and a non-zero exit, never a traceback. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from cryptopulse.errors import ConfigError, CryptoPulseError
from cryptopulse.settings import check_urls

# libraries that log every request at INFO
QUIET_LOGGERS = ("httpx2", "httpx", "urllib3", "hypercorn.access")


def setup_logging(level: int = logging.INFO, times: bool = True) -> None:
    """The same log format for every process: time (for long-running ones), level, logger, message."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if times else "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported on one line: `prog: what is wrong (see prog --help)`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _number(kind: type, low: float | None, high: float | None, what: str) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in its message
    return parse


positive_int = _number(int, 1, None, "a whole number of at least 1")
positive_float = _number(float, 1e-9, 1e12, "a positive number")
non_negative_float = _number(float, 0, 1e12, "a number of at least 0")
port = _number(int, 0, 65535, "a port number (0-65535)")
port_or_off = _number(int, -1, 65535, "a port number (0-65535), or -1 for off")


def run_command(name: str, main: Callable[[], int]) -> int:
    """Run a console script's main and turn every expected failure into one line and an exit status."""
    try:
        check_urls()  # before anything starts
        status = main()
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not in the interpreter's exit
        return status
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`control status | head`): nothing left to say, and nothing to flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ConfigError, ValueError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 2
    except CryptoPulseError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a busy port, an unresolvable host, a refused connection
        detail = error.strerror or str(error) or type(error).__name__
        print(f"{name}: {detail}{f' ({error.filename})' if error.filename else ''}", file=sys.stderr)
        return 1
