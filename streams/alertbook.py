"""Evaluating ticks against price-alert rules: pure, no Kafka (the processor around it is streams/alerts.py).

Event time throughout. Per (rule, symbol, source) the book keeps a small state (`RuleState`):
- the event time of the last tick it evaluated: a tick of that time or older (a redelivery, a late tick,
  a back-fill's history) is not evaluated again, so a replay fires nothing twice;
- `armed`: whether the rule may fire. above/below: the first tick at or after the rule's creation only says
  on which side of the line the price is (armed when it is on the other side than the condition); an armed rule
  fires on the first tick beyond the line, then waits until a tick is back on its side (or on the line) to
  re-arm. So it fires once per crossing, not on every tick above the line.
- move: the window of the last `minutes` (event time) as two monotonic queues, the candidates for its minimum
  and its maximum (a few dozen points for a random walk, whatever the tick rate), so the state stays small
  enough to be committed with every transaction. It fires when the price is more than `pct` % above the
  window's minimum or below its maximum, and re-arms once no point of the window is that far from the price.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cryptopulse.alert import Rule, alert_id, state_key
from cryptopulse.prices import price_text
from cryptopulse.times import MINUTE_MS


@dataclass
class RuleState:
    rule_id: str
    symbol: str
    source: str
    last_ts: int
    last_price: float
    armed: bool
    lows: deque[tuple[int, float]] = field(default_factory=deque)  # rising prices: lows[0] is the window's minimum
    highs: deque[tuple[int, float]] = field(default_factory=deque)  # falling prices: highs[0] is its maximum

    @property
    def key(self) -> str:
        return state_key(self.rule_id, self.symbol, self.source)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schemas/alert_state.avsc)."""
        return {"rule_id": self.rule_id, "symbol": self.symbol, "source": self.source, "last_ts": self.last_ts,
                "last_price": self.last_price, "armed": self.armed,
                "lows": [[float(t), p] for t, p in self.lows], "highs": [[float(t), p] for t, p in self.highs]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RuleState:
        return cls(record["rule_id"], record["symbol"], record["source"], int(record["last_ts"]),
                   float(record["last_price"]), bool(record["armed"]),
                   deque((int(t), float(p)) for t, p in record.get("lows") or []),
                   deque((int(t), float(p)) for t, p in record.get("highs") or []))


class AlertBook:
    """The rules and their states; `evaluate` turns one tick into the alerts it fires (Avro records)."""

    def __init__(self) -> None:
        self.rules: dict[str, Rule] = {}
        self.states: dict[str, RuleState] = {}
        self.changed: set[str] = set()  # state keys changed since the last `take_changes`
        self.removed: set[str] = set()  # state keys of removed rules, to be deleted from the state topic

    # --- rules ---

    def set_rule(self, rule: Rule) -> None:
        """Add a rule, or replace one (a changed rule starts afresh)."""
        old = self.rules.get(rule.id)
        self.rules[rule.id] = rule
        if old is not None and old != rule:
            self._drop_states(rule.id)

    def remove_rule(self, rule_id: str) -> None:
        if self.rules.pop(rule_id, None) is not None:
            self._drop_states(rule_id)

    def _drop_states(self, rule_id: str) -> None:
        for key in [k for k, s in self.states.items() if s.rule_id == rule_id]:
            del self.states[key]
            self.changed.discard(key)
            self.removed.add(key)

    # --- state, for the processor's transactions ---

    def load_state(self, state: RuleState) -> None:
        """A state read back from the state topic (a restart)."""
        self.states[state.key] = state

    def take_changes(self) -> tuple[list[RuleState], list[str]]:
        """The states changed and the keys removed since the last call, which forgets them."""
        changed = [self.states[k] for k in sorted(self.changed) if k in self.states]
        removed = sorted(self.removed)
        self.changed.clear()
        self.removed.clear()
        return changed, removed

    def snapshot(self) -> dict[str, RuleState]:
        return copy.deepcopy(self.states)

    def restore(self, states: dict[str, RuleState]) -> None:
        """Back to a snapshot (an aborted transaction): the ticks after it are evaluated again."""
        self.states = copy.deepcopy(states)
        self.changed.clear()
        self.removed.clear()

    # --- evaluation ---

    def evaluate(self, symbol: str, source: str, ts: int, price: float, fired_at: int = 0,
                 published_at: int | None = None) -> list[dict[str, Any]]:
        """The alerts this tick fires (schemas/alert.avsc records), updating the states it touches."""
        alerts = []
        for rule in self.rules.values():
            if not rule.matches(symbol, source) or ts < rule.created:
                continue
            key = state_key(rule.id, symbol, source)
            state = self.states.get(key)
            if state is not None and ts <= state.last_ts:
                continue  # seen already, or late: event time only moves forward
            if rule.kind == "move":
                alert = self._move(rule, state, symbol, source, ts, price)
            else:
                alert = self._line(rule, state, symbol, source, ts, price)
            self.changed.add(key)
            if alert is not None:
                alert.update({"_id": alert_id(rule.id, symbol, source, ts), "rule_id": rule.id, "symbol": symbol,
                              "source": source, "kind": rule.kind, "price": price, "ts": ts,
                              "minutes": rule.minutes, "fired_at": fired_at, "tick_published_at": published_at,
                              "channels": list(rule.channels), "owner": rule.owner})
                alerts.append(alert)
        return alerts

    def _line(self, rule: Rule, state: RuleState | None, symbol: str, source: str, ts: int,
              price: float) -> dict[str, Any] | None:
        line = float(rule.price)  # type: ignore[arg-type]
        beyond = price > line if rule.kind == "above" else price < line
        if state is None:  # the first tick says on which side the price is; it fires nothing
            self.states[state_key(rule.id, symbol, source)] = RuleState(rule.id, symbol, source, ts, price, not beyond)
            return None
        previous_price, previous_ts = state.last_price, state.last_ts
        state.last_ts, state.last_price = ts, price
        if not beyond:
            state.armed = True
            return None
        if not state.armed:
            return None
        state.armed = False
        word = "above" if rule.kind == "above" else "below"
        return {"direction": "up" if rule.kind == "above" else "down", "threshold": line,
                "reference_price": previous_price, "reference_ts": previous_ts, "change_pct": None,
                "message": f"{symbol} crossed {word} {price_text(line)}: {price_text(price)} ({source})"}

    def _move(self, rule: Rule, state: RuleState | None, symbol: str, source: str, ts: int,
              price: float) -> dict[str, Any] | None:
        if state is None:
            state = self.states[state_key(rule.id, symbol, source)] = RuleState(rule.id, symbol, source, ts, price,
                                                                                True)
        else:
            state.last_ts, state.last_price = ts, price
        window_start = ts - int(rule.minutes) * MINUTE_MS  # type: ignore[arg-type]
        for queue in (state.lows, state.highs):
            while queue and queue[0][0] < window_start:
                queue.popleft()
        alert = None
        pct = float(rule.pct)  # type: ignore[arg-type]
        rise = (price / state.lows[0][1] - 1) * 100 if state.lows else 0.0
        fall = (price / state.highs[0][1] - 1) * 100 if state.highs else 0.0
        moved = rise > pct or -fall > pct
        if moved and state.armed:
            state.armed = False
            up = rise >= -fall
            ref_ts, ref_price = state.lows[0] if up else state.highs[0]
            change = rise if up else fall
            minutes = (ts - ref_ts) / MINUTE_MS
            alert = {"direction": "up" if up else "down", "threshold": pct, "reference_price": ref_price,
                     "reference_ts": ref_ts, "change_pct": change,
                     "message": f"{symbol} {'rose' if up else 'fell'} {abs(change):.2f}% in {minutes:.1f} min to "
                                f"{price_text(price)} ({source}; rule: more than {pct:g}% within {rule.minutes} min)"}
        elif not moved:
            state.armed = True
        while state.lows and state.lows[-1][1] >= price:
            state.lows.pop()
        state.lows.append((ts, price))
        while state.highs and state.highs[-1][1] <= price:
            state.highs.pop()
        state.highs.append((ts, price))
        return alert
