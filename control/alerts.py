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

from cryptopulse.alert import Rule
from cryptopulse.text import terminal_safe
from cryptopulse.times import iso_utc
from cryptopulse.topics import Definitions


def render(found: Definitions[Rule]) -> str:
    """The rules, oldest first; then each record no reader takes, by its key as it can be removed (`control alerts
    rm KEY`), with why. Every text from the topic terminal-safe."""
    rule_list = sorted(found.values.values(), key=lambda r: (r.created, r.id))
    lines = [] if rule_list else ["no alert rules (add one: control alerts add BTC above 70000)"]
    for rule in rule_list:
        owner = f"  of {terminal_safe(rule.owner)}" if rule.owner else ""
        lines.append(f"{terminal_safe(rule.id):10} {terminal_safe(rule.describe()):44} created "
                     f"{iso_utc(rule.created)}{owner}")
    for key, why in sorted(found.bad.items()):
        lines.append(f"{terminal_safe(key):10} (left out, no processor takes it: {why}; `control alerts rm "
                     f"{terminal_safe(key)}` removes it)")
    return "\n".join(lines)
