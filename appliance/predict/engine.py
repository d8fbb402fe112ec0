"""The predictor engine: channel frames in, rig state, derived channels and alarm events out.

    from appliance.predict.engine import Predictor

    p = Predictor()                                  # PredictorParams defaults, no limits
    r = p.step(ts_ms, {"DBTM": 5012.4, "HKLA": 212.0, ...})   # any subset of the catalogue
    r.state       # "rotary_drilling", ... (appliance.predict.states.RIG_STATES)
    r.derived     # {"RIGSTATE": 1.0, "ONBOTTOM": 1.0, "MSE": 31250.0, "PITDEV": 0.4, ...}
    r.alerts      # alarm lifecycle events for topic `alert` (appliance.predict.alarms)
    p.apply(event)                                   # ack / shelve from `alert`, limits from
                                                     # `control.thresholds`; returns events

Pure and deterministic: time is the samples' `ts_ms`, never the clock, so the same
samples give the same states and alerts live, in tests and in backtests. Per sample it
checks the sensors and works out the rig state and the mechanical channels; once per
second of data (EVAL_S) it runs the detectors on that second's means and the alarm book.
Samples a little older than the newest one seen only refresh the latest values (counted as
`late`); data more than REWIND_MS behind starts a new time line (a replay started over): what
was learned from the data is dropped, limits and alarms are kept (counted as `rewinds`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from appliance.predict import hydraulics
from appliance.predict.alarms import AlarmBook, Condition
from appliance.predict.anomaly import AnomalyWatch
from appliance.predict.derive import Inputs, Mechanics
from appliance.predict.dysfunction import DysfunctionWatch
from appliance.predict.flow import FlowWatch
from appliance.predict.models import MODEL_CHANNELS, Models
from appliance.predict.params import PredictorParams
from appliance.predict.sensors import SensorGuard
from appliance.predict.thresholds import Limits, ThresholdWatch, parse_limits

EVAL_S = 1.0
STALE_S = 10.0  # a channel not heard from for this long is treated as missing
MAX_DT_S = 10.0  # longer gaps in the data are stepped over, not integrated across
THRESHOLD_TOPIC = "control.thresholds"
REWIND_MS = 60_000  # data this far behind the newest seen starts a new time line

# derived channels the engine may publish, with unit and description (see the catalogue)
DERIVED = ("RIGSTATE", "ONBOTTOM", "ROPC", "MSE", "ECD", "FLOWDIFF", "PITDEV", "SPPDEV", *MODEL_CHANNELS)


class StepResult(NamedTuple):
    state: str  # rig state name
    derived: dict[str, float]  # derived channels, catalogue units
    alerts: list[dict[str, Any]]  # alarm lifecycle events, ready for topic `alert`


class Predictor:
    def __init__(self, params: PredictorParams | None = None, thresholds: dict | None = None) -> None:
        self.params = p = params or PredictorParams()
        self.limits = ThresholdWatch()
        self.book = AlarmBook(p)
        self.pending: list[Condition] = []  # conditions from outside the evaluation (limit changes)
        self.counts = {"steps": 0, "late": 0, "evaluations": 0, "rewinds": 0}
        self._fresh()
        if thresholds:
            self.set_thresholds(thresholds)

    def _fresh(self) -> None:
        """Everything learned from the data, from scratch (limits and alarms are kept)."""
        p = self.params
        self.guard = SensorGuard(p)
        self.mech = Mechanics(p)
        self.flow = FlowWatch(p)
        self.hydraulics = hydraulics.HydraulicsWatch(p)
        self.dysfunction = DysfunctionWatch(p)
        self.anomaly = AnomalyWatch(p)
        self.models = Models(target_depth_ft=p.target_depth_ft)  # predicted ROP, pit trend, ETA
        self.latest: dict[str, tuple[float, float]] = {}  # channel -> (t_s, value)
        self.sums: dict[str, list[float]] = {}  # channel -> [sum, count] this second
        self.last_ms: int | None = None
        self.last_eval_s: float | None = None
        self.state = "unknown"
        self.slow: dict[str, float] = {}  # derived channels computed once a second
        self.inputs: Inputs | None = None
        self.packoff_seen_s: dict[str, float] = {}  # channel -> last time pack-off signs explained its spikes

    # -- samples --------------------------------------------------------------------------

    def step(self, ts_ms: int, values: dict[str, float]) -> StepResult:
        """One frame of channel values (catalogue names and units, any subset) at `ts_ms`."""
        t = ts_ms / 1000.0
        latest = self.latest
        if self.last_ms is not None and ts_ms < self.last_ms - REWIND_MS:
            # the data went back in time: a replay started over, a recorder was reset.
            # What was learned belongs to the other time line; start again from here.
            self.counts["rewinds"] += 1
            self._fresh()
            latest = self.latest
        elif self.last_ms is not None and ts_ms < self.last_ms:
            self.counts["late"] += 1
            for k, x in values.items():
                if isinstance(x, (int, float)) and x == x and k not in latest:
                    latest[k] = (t, float(x))
            return StepResult(self.state, {}, [])
        self.counts["steps"] += 1
        self.last_ms = ts_ms
        clean = self.guard.clean(t, values)
        sums = self.sums
        for k, x in clean.items():
            latest[k] = (t, x)
            s = sums.get(k)
            if s is None:
                sums[k] = [x, 1.0]
            else:
                s[0] += x
                s[1] += 1.0
        cut = t - STALE_S
        v = {k: x for k, (tk, x) in latest.items() if tk >= cut}
        inputs, derived = self.mech.step(t, v)
        self.inputs = inputs
        self.state = inputs.state
        self.dysfunction.sample(t, inputs.state, clean)
        alerts: list[dict[str, Any]] = []
        if self.last_eval_s is None:
            self.last_eval_s = t
        elif t - self.last_eval_s >= EVAL_S:
            alerts = self._evaluate(ts_ms, t, inputs, v, derived)
        derived.update(self.slow)
        return StepResult(inputs.state, derived, alerts)

    def _evaluate(self, ts_ms: int, t: float, inputs: Inputs, v: dict[str, float],
                  derived: dict[str, float]) -> list[dict[str, Any]]:
        p = self.params
        dt = min(t - self.last_eval_s, MAX_DT_S)
        self.last_eval_s = t
        self.counts["evaluations"] += 1
        means = dict(v)
        for k, (total, n) in self.sums.items():
            if k in means:
                means[k] = total / n
        self.sums = {}
        slow, conditions = self.flow.update(inputs, means, dt)
        pumps_quiet = ("pumps off" if inputs.pumps_on is False
                       else "pumps changing" if self.flow.transient else None)
        h_slow, h_conds = self.hydraulics.update(inputs, means, dt, self.flow, self.guard)
        slow.update(h_slow)
        slow.update(self.models.step(ts_ms, means, inputs.state, derived.get("ROPC")))
        conditions += h_conds
        conditions += self.dysfunction.update(inputs, means, derived, self.book)
        conditions += self.anomaly.update(t, inputs, means, pumps_quiet, self.book)
        # limits apply to derived channels too: a PITDEV high limit is the classic pit alarm
        judged = {**means, **derived, **slow}
        conditions += self.limits.conditions(judged, pumps_quiet, p.threshold_off_delay_s, p.threshold_on_delay_s)
        for ch in self.hydraulics.explains:
            self.packoff_seen_s[ch] = t
        # pressure surges of a pack-off (over its pressure rise) and the spikes of its erratic
        # torque are not a broken gauge, for as long as they are counted; erratic torque or
        # an overpull says nothing about the pressure gauge
        excused = frozenset(ch for ch, seen in self.packoff_seen_s.items() if t - seen <= p.spike_window_s)
        conditions += self.guard.conditions(t, inputs.pumps_on, excused, self.book.records)
        if self.pending:
            conditions = self.pending + conditions
            self.pending = []
        self.slow = slow
        return self.book.evaluate(ts_ms, conditions)

    # -- events from the bus --------------------------------------------------------------

    def apply(self, event: dict[str, Any], topic: str | None = None) -> list[dict[str, Any]]:
        """An operator's ack or shelve (topic `alert`) or a limit change (`control.thresholds`).

        Returns alert events to publish (a correction when an ack crossed a clear, a
        shelve confirmation); limit changes take effect at the next evaluation. A limit
        set that cannot be used raises ValueError saying why.
        """
        if topic == THRESHOLD_TOPIC or (topic is None and "channel" in event and "id" not in event):
            channel = event.get("channel")
            if not isinstance(channel, str) or not channel:
                raise ValueError("a threshold change needs a 'channel'")
            self.set_threshold(channel, parse_limits(event))
            return []
        return self.book.apply(event, self.last_ms)

    def set_threshold(self, channel: str, limits: Limits | dict | None) -> None:
        """Set (or with None / all-null remove) one channel's HH/H/L/LL limits."""
        if isinstance(limits, dict):
            limits = parse_limits(limits)
        self.pending += self.limits.set(channel, limits)

    def set_thresholds(self, thresholds: dict[str, dict | Limits]) -> None:
        """Replace every channel's limits, e.g. with `store.read.current_thresholds(db)`."""
        for channel in list(self.limits.limits):
            if channel not in thresholds:
                self.set_threshold(channel, None)
        for channel, limits in thresholds.items():
            self.set_threshold(channel, limits)

    def restore(self, latest_events: list[dict[str, Any]]) -> None:
        """Take over the alarms a previous run of this predictor left raised."""
        self.book.restore(latest_events, self.last_ms or 0)

    def stats(self) -> dict[str, Any]:
        """Small figures for the heartbeat."""
        return {**self.counts, "state": self.state, **{f"alarms_{k}": v for k, v in self.book.counts.items()},
                "active_alarms": sum(r.active for r in self.book.records.values()), "flood": self.book.flood}
