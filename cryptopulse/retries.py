"""What a failed HTTP call says about trying again: the server's `Retry-After`, and the reason a connection failed,
in the words of the network rather than a library's wrapper (which repeats the whole URL, credentials and all).
Shared by the producer's sources and the notifier's senders."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds from now: a number of seconds, or an HTTP-date (RFC 9110); None when absent or
    unreadable (the caller's backoff then decides). Never negative."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def failure_reason(error: BaseException) -> str:
    """Why a connection or a request failed: the innermost OS-level reason found in the exception's chain and
    arguments (`ConnectionRefusedError: [Errno 111] Connection refused`, `TimeoutError: timed out`), else the
    exception's type. Never the URL the library's own message repeats."""
    seen: set[int] = set()
    found: BaseException | None = None
    todo: list[object] = [error]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and (current.strerror or isinstance(current, TimeoutError)):
            found = current
        todo.extend([current.__cause__, current.__context__, getattr(current, "reason", None), *current.args])
    if found is None:
        return type(error).__name__
    words = found.strerror or str(found) or "timed out"
    return f"{type(found).__name__}: {words}"
