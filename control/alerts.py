"""`control alerts`: price-alert rules as data in Kafka (the compacted rules topic, key = rule id).

    control alerts add BTC above 70000 [--source binance]
    control alerts add ETH move 5 --minutes 15
    control alerts list
    control alerts rm 1a2b3c4d

Reading, adding and removing rules is cryptopulse/alert_rules.py (the dashboard's rule form uses it too); the
checks of each value are cryptopulse/alert.py's rule_* functions. This module prints the list.
`streams alerts` follows the topic and evaluates ticks against what is there (docs/alerts.md).
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptopulse.alert import Rule
from cryptopulse.times import epoch_ms


def render(rule_list: list[Rule]) -> str:
    if not rule_list:
        return "no alert rules (add one: control alerts add BTC above 70000)"
    lines = []
    for rule in rule_list:
        created = datetime.fromtimestamp(epoch_ms(rule.created) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        owner = f"  of {rule.owner}" if rule.owner else ""
        lines.append(f"{rule.id:10} {rule.describe():44} created {created} UTC{owner}")
    return "\n".join(lines)
