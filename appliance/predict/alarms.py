"""Alarm lifecycle in the spirit of ISA-18.2 and EEMUA 191.

Detectors say, every time they look, whether each of their alarm conditions holds
(`Condition.active` True/False, or None when they cannot tell: inputs missing). The book
turns that into alarm states and publishes an event only on a change:

    normal ──(condition held for on_delay)──▶ active_unack ──ack──▶ active_ack
      ▲                                          │                      │
      │                  (condition gone for off_delay)                 │
      │                                          ▼                      ▼
      └──────────────ack──────────────── cleared_unack              normal

plus `shelved` (an admin hides an alarm until a time; its condition is still tracked and
announced when the shelf expires), suppression of consequential alarms (a condition
reported with `suppressed` set clears at once and cannot raise — pumps off makes flow and
pressure alarms meaningless), chattering protection (an alarm that comes back within
`chatter_s` of clearing gets a doubled off-delay, up to ten minutes), and flood protection:
when `flood_alarms` alarms were raised within `flood_window_s`, new low and medium priority
alarms are held back (counted, announced when the flood ends if still active) and one
`alarm_flood` alarm says so.

An event is the dict published on topic `alert`, the shape the saver stores and the
dashboard shows: id, kind, state, priority, message, evidence, action, by, raised_ms and,
for channel alarms, channel. Times are the samples' epoch milliseconds, never the clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from appliance.predict.params import PredictorParams

PRIORITIES = ("critical", "high", "medium", "low")
RANK = {p: i for i, p in enumerate(PRIORITIES)}
ACTIVE = ("active_unack", "active_ack")
FLOOD_ID = "alarm-flood"
MAX_OFF_DELAY_S = 600.0
RESTORED_GRACE_S = 900.0  # alarms restored after a restart that no detector reports again clear after this
BY = "predictor"


class Condition(NamedTuple):
    """One alarm condition as a detector sees it now."""

    id: str  # stable per alarm point, e.g. "kick", "sensor.flatline.SPPA", "threshold.SPPA.hh"
    kind: str  # kick, loss, washout, packoff, stick_slip, mse_rop, sensor_fault, anomaly, threshold
    active: bool | None  # None: cannot tell (inputs missing); the alarm keeps its state
    priority: str
    message: str
    evidence: dict[str, Any]
    channel: str | None = None
    suppressed: str | None = None  # why it cannot be raised now (consequential), or None
    on_delay_s: float | None = None  # None: the book's default
    off_delay_s: float | None = None


@dataclass
class Record:
    id: str
    kind: str
    priority: str
    state: str = "normal"
    channel: str | None = None
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    pending_on_ms: int | None = None
    pending_off_ms: int | None = None
    raised_ms: int | None = None
    cleared_ms: int | None = None
    chatter: int = 0
    shelved_until_ms: int | None = None
    held: bool = False  # raised during a flood and not yet announced
    restored_ms: int | None = None  # came from the database at start-up, not yet seen again

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class AlarmBook:
    def __init__(self, params: PredictorParams) -> None:
        self.params = params
        self.records: dict[str, Record] = {}
        self.raises: deque[int] = deque()  # ms of recent raises, for flood detection
        self.flood = False
        self.flood_held = 0
        self.now_ms = 0
        self.counts = {"raised": 0, "cleared": 0, "held": 0, "suppressed": 0}

    # -- events -------------------------------------------------------------------------

    def _event(self, r: Record, action: str, state: str | None = None, **extra: Any) -> dict[str, Any]:
        e: dict[str, Any] = {"id": r.id, "kind": r.kind, "state": state or r.state, "priority": r.priority,
                             "message": r.message, "evidence": r.evidence, "action": action, "by": BY}
        if r.channel:
            e["channel"] = r.channel
        if r.raised_ms is not None:
            e["raised_ms"] = r.raised_ms
        e.update(extra)
        return e

    def _announce(self, r: Record, action: str, out: list[dict[str, Any]], **extra: Any) -> None:
        if r.shelved_until_ms is not None or r.held:
            return
        out.append(self._event(r, action, **extra))

    # -- conditions ---------------------------------------------------------------------

    def evaluate(self, t_ms: int, conditions: list[Condition]) -> list[dict[str, Any]]:
        """Apply what the detectors see now; returns the events to publish."""
        self.now_ms = t_ms
        out: list[dict[str, Any]] = []
        p = self.params
        for c in conditions:
            r = self.records.get(c.id)
            if r is None:
                if not c.active:
                    continue  # a point that never alarmed needs no record yet
                r = self.records[c.id] = Record(c.id, c.kind, c.priority, channel=c.channel)
            if c.active is None:
                continue
            r.restored_ms = None
            if c.active and not c.suppressed:
                r.pending_off_ms = None
                if r.active:
                    r.evidence, r.message = c.evidence, c.message
                    if RANK.get(c.priority, 9) < RANK.get(r.priority, 9):  # escalation
                        r.priority, r.state = c.priority, "active_unack"
                        self._announce(r, "escalate", out)
                    continue
                if r.pending_on_ms is None:
                    r.pending_on_ms = t_ms
                delay = p.alarm_on_delay_s if c.on_delay_s is None else c.on_delay_s
                if t_ms - r.pending_on_ms >= delay * 1000:
                    r.priority, r.message, r.evidence = c.priority, c.message, c.evidence
                    self._raise(r, t_ms, out)
            else:
                r.pending_on_ms = None
                if not r.active:
                    continue
                if r.pending_off_ms is None:
                    r.pending_off_ms = t_ms
                delay = p.alarm_off_delay_s if c.off_delay_s is None else c.off_delay_s
                delay = min(delay * 2 ** r.chatter, MAX_OFF_DELAY_S)
                if c.suppressed:
                    delay = 0.0
                    self.counts["suppressed"] += 1
                if t_ms - r.pending_off_ms >= delay * 1000:
                    why = f"suppressed: {c.suppressed}" if c.suppressed else "condition gone"
                    r.evidence = {**c.evidence, "cleared": why}
                    self._clear(r, t_ms, out)
        self._housekeeping(t_ms, out)
        return out

    def _raise(self, r: Record, t_ms: int, out: list[dict[str, Any]]) -> None:
        p = self.params
        r.chatter = r.chatter + 1 if r.cleared_ms is not None and t_ms - r.cleared_ms < p.chatter_s * 1000 else 0
        r.state, r.raised_ms, r.pending_on_ms = "active_unack", t_ms, None
        self.counts["raised"] += 1
        self.raises.append(t_ms)
        if self.flood and RANK.get(r.priority, 9) >= RANK["medium"]:
            r.held = True
            self.flood_held += 1
            self.counts["held"] += 1
            return
        self._announce(r, "raise", out)

    def _clear(self, r: Record, t_ms: int, out: list[dict[str, Any]]) -> None:
        r.state = "cleared_unack" if r.state == "active_unack" else "normal"
        r.cleared_ms, r.pending_off_ms = t_ms, None
        self.counts["cleared"] += 1
        if r.held:  # never announced: nothing to take back
            r.held, r.state = False, "normal"
            return
        self._announce(r, "clear", out)

    def _housekeeping(self, t_ms: int, out: list[dict[str, Any]]) -> None:
        p = self.params
        for r in self.records.values():
            if r.shelved_until_ms is not None and t_ms >= r.shelved_until_ms:
                r.shelved_until_ms = None
                if r.state == "cleared_unack":
                    r.state = "normal"  # it came and went while shelved
                self._announce(r, "unshelve", out)
            if r.restored_ms == -1:  # restored before the first sample: the grace starts now
                r.restored_ms = t_ms
            if r.restored_ms is not None and t_ms - r.restored_ms >= RESTORED_GRACE_S * 1000:
                r.restored_ms = None
                if r.active:
                    r.evidence = {"cleared": "no detector reported it again after a restart"}
                    self._clear(r, t_ms, out)
        raises = self.raises
        cut = t_ms - p.flood_window_s * 1000
        while raises and raises[0] < cut:
            raises.popleft()
        if not self.flood and len(raises) >= p.flood_alarms:
            self.flood = True
            self.flood_held = 0
            f = self.records.setdefault(FLOOD_ID, Record(FLOOD_ID, "alarm_flood", "high"))
            f.message = (f"Alarm flood: {len(raises)} alarms in {p.flood_window_s / 60:g} min; "
                         f"new low and medium priority alarms are held back")
            f.evidence = {"alarms_in_window": len(raises), "window_s": p.flood_window_s}
            f.state, f.raised_ms = "active_unack", t_ms
            self._announce(f, "raise", out)
        elif self.flood and len(raises) <= p.flood_alarms // 2:
            self.flood = False
            f = self.records[FLOOD_ID]
            f.evidence = {"held_back": self.flood_held, "cleared": "alarm rate back to normal"}
            f.state = "cleared_unack" if f.state == "active_unack" else "normal"
            self._announce(f, "clear", out)
            for r in self.records.values():
                if r.held:
                    r.held = False
                    if r.active:
                        self._announce(r, "raise", out, held_in_flood=True)

    # -- operator actions ---------------------------------------------------------------

    def apply(self, event: dict[str, Any], t_ms: int | None = None) -> list[dict[str, Any]]:
        """An ack, shelve or unshelve from the bus; returns events that put the record right.

        The web publishes the state it expects after an ack; when this book knows better
        (the alarm cleared meanwhile) it publishes the right one.
        """
        t = self.now_ms if t_ms is None else t_ms
        r = self.records.get(str(event.get("id", "")))
        action = event.get("action")
        if r is None or event.get("by") == BY:
            return []
        out: list[dict[str, Any]] = []
        if action == "ack":
            if r.state == "active_unack":
                r.state = "active_ack"
            elif r.state == "cleared_unack":
                r.state = "normal"
            proposed = event.get("state")
            if proposed != r.state and r.shelved_until_ms is None:
                out.append(self._event(r, "sync"))
        elif action == "shelve":
            minutes = event.get("minutes")
            if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or not 0 < minutes <= 7 * 1440:
                return []
            r.shelved_until_ms = int(t + minutes * 60_000)
            if event.get("state") != "shelved":
                out.append(self._event(r, "shelve", state="shelved", until_ms=r.shelved_until_ms))
        elif action == "unshelve" and r.shelved_until_ms is not None:
            r.shelved_until_ms = t
            self._housekeeping(t, out)
        return out

    def restore(self, latest: list[dict[str, Any]], t_ms: int) -> None:
        """Take over alarms a previous run left raised (latest event per id, this source's)."""
        for e in latest:
            state = e.get("state")
            if state not in ("active_unack", "active_ack", "cleared_unack", "shelved") or not e.get("id"):
                continue
            r = Record(str(e["id"]), str(e.get("kind") or "unknown"), str(e.get("priority") or "medium"),
                       state="active_unack" if state == "shelved" else state, channel=e.get("channel"),
                       message=str(e.get("message") or ""), evidence=dict(e.get("evidence") or {}),
                       raised_ms=e.get("raised_ms"), restored_ms=t_ms or -1)
            if state == "shelved" and isinstance(e.get("until_ms"), int):
                r.shelved_until_ms = e["until_ms"]
            self.records[r.id] = r

    def active(self) -> list[Record]:
        return [r for r in self.records.values() if r.active or r.state == "cleared_unack"]
