"""`control channels` and `control alerts deliveries`: where alerts go, and what became of them.

    control channels add phone ntfy https://ntfy.sh/my-btc-alerts
    control channels add ops webhook https://hooks.example.com/alerts --secret-env OPS_HOOK_SECRET
    control channels add me telegram --token-env TELEGRAM_BOT_TOKEN --chat 123456789
    control channels add mail email alice@example.com --smtp smtps://alerts%40example.com@smtp.example.com \\
        --password-env SMTP_PASSWORD
    control channels list | rm NAME | test NAME
    control alerts deliveries [--rule ID] [-n 20]

Reading, adding and removing channels is cryptopulse/alert_channels.py; each value is checked by
cryptopulse/channel.py; `test` sends with the notifier's own senders (streams/senders.py), the secret read from
this shell's environment. Nothing here prints a secret: a channel holds only where its secret is, and every
answer is scrubbed of the values read (cryptopulse/secrets.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import DESCENDING

from cryptopulse import store
from cryptopulse.channel import Channel
from cryptopulse.settings import Settings, env
from cryptopulse.text import terminal_safe
from cryptopulse.times import iso_utc
from streams.senders import TELEGRAM_API, Answer, sender_for, trial_notice


def render(channels: list[Channel], used_by: dict[str, list[str]]) -> str:
    if not channels:
        return "no channels (add one: control channels add phone ntfy https://ntfy.sh/<a-topic-of-yours>)"
    lines = []
    for channel in channels:
        rules = used_by.get(channel.name, [])
        owner = f"of {terminal_safe(channel.owner)}; " if channel.owner else ""
        lines.append(f"{channel.name:12} {terminal_safe(channel.describe())}  "
                     f"({owner}created {iso_utc(channel.created)}; "
                     + (f"rules {', '.join(rules)})" if rules else "no rule names it)"))
    return "\n".join(lines)


def test(channel: Channel, timeout: float = 10.0) -> Answer:
    """Send the channel a test message from here (the secret from this shell's environment); what it answered."""
    sender = sender_for(channel, timeout, env("TELEGRAM_API_URL", TELEGRAM_API))
    try:
        return sender.send(trial_notice(channel, f"test-{uuid.uuid4().hex[:12]}"))
    finally:
        sender.close()


def test_report(channel: Channel, answer: Answer) -> str:
    verdict = "delivered" if answer.ok else ("REFUSED" if answer.permanent else "NOT delivered")
    said = terminal_safe(answer.describe()) or "(nothing)"  # the receiver's words: data, not ours
    after = f" (it asked to wait {answer.retry_after:g} s)" if answer.retry_after is not None else ""
    return f"{channel.name} ({terminal_safe(channel.describe())}): {verdict}; the receiver answered: {said}{after}"


def deliveries(settings: Settings, rule_id: str | None = None, most: int = 20) -> list[dict[str, Any]]:
    """The latest outcome of each (alert, channel), newest first, with the number of outcomes recorded for it."""
    query = {"rule_id": rule_id} if rule_id else {}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    with store.database(settings) as db:
        for doc in db[store.ALERT_DELIVERIES].find(query).sort("at", DESCENDING).limit(most * 20):
            key = (doc["alert_id"], doc["channel"])
            if key in latest:
                latest[key]["outcomes"] += 1
            elif len(latest) < most:
                latest[key] = {**doc, "outcomes": 1}
    return list(latest.values())


def render_deliveries(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ("no deliveries yet (rules name their channels with `control alerts add ... --notify NAME`; "
                "`streams notify` delivers)")
    lines = []
    for row in rows:
        said = terminal_safe(" ".join(str(part) for part in (row.get("status"), row.get("reason") or row.get("answer"))
                                      if part not in (None, "")))
        latency = f", {row['latency_ms'] / 1000:.2f} s after the tick" if row.get("latency_ms") is not None else ""
        via = f", in summary {terminal_safe(row['summary'])}" if row.get("summary") else ""
        lines.append(f"{iso_utc(row['at'])}  {terminal_safe(row['alert_id'])}  -> {terminal_safe(row['channel'])} "
                     f"({terminal_safe(row['channel_kind'])}): "
                     f"{row['outcome']}" + (f" ({said})" if said else "") + latency + via
                     + f"; {row['outcomes']} outcome(s)")
    return "\n".join(lines)
