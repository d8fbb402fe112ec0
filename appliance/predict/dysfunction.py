"""Drilling dysfunction: stick-slip, and MSE rising while ROP falls.

- stick-slip: the bit stalls and whips free, so the surface torque swings. While rotary
  drilling, the torque's coefficient of variation over 30 s at or above `stick_slip_cv`
  — and, when the rig sends RPMA, the rotary speed swinging too (at least half that
  figure) — is stick-slip. Torque scatter without speed swings is left to the pack-off
  detector.
- MSE up, ROP down: a balled or dull bit turns more energy into less hole. Over the last
  15 minutes of rotary drilling (per-second MSE and ROP), MSE up and ROP down by
  `mse_rop_pct` % each, step by step through the four quarters of the window (a new rock
  layer is a step, not a trend) while the driller kept WOB and RPM within 10 %.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Sequence

from appliance.predict.alarms import AlarmBook, Condition
from appliance.predict.derive import Inputs
from appliance.predict.params import PredictorParams
from appliance.predict.signals import TimeWindow

SLIP_WINDOW_S = 30.0
TREND_WINDOW_S = 900.0
PARAMETER_STEADY = 0.10
TREND_EVERY_S = 10.0


class DysfunctionWatch:
    def __init__(self, params: PredictorParams) -> None:
        self.params = params
        self.torque = TimeWindow(SLIP_WINDOW_S)
        self.rpm = TimeWindow(SLIP_WINDOW_S)
        self.next_trend_s = 0.0
        self.last_trend: tuple[bool | None, dict] = (None, {})
        self.trend: deque[tuple[float, float, float, float, float]] = deque()  # t, mse, rop, wob, rpm

    def sample(self, t_s: float, state: str, clean: dict[str, float]) -> None:
        """Raw samples, for oscillations faster than a second."""
        if state != "rotary_drilling":
            if len(self.torque):
                self.torque.clear()
                self.rpm.clear()
            return
        tq, rpm = clean.get("TQA"), clean.get("RPMA")
        if tq is not None:
            self.torque.add(t_s, tq)
        if rpm is not None:
            self.rpm.add(t_s, rpm)

    def update(self, inp: Inputs, v: dict[str, float], derived: dict[str, float], book: AlarmBook) -> list[Condition]:
        p = self.params
        t = inp.t_s
        out: list[Condition] = []
        packoff = book.records.get("packoff")
        explained = "pack-off raised" if packoff is not None and packoff.active else None

        # stick-slip
        slip = None
        ev = {}
        if inp.state == "rotary_drilling" and self.torque.covered_s >= SLIP_WINDOW_S * 0.8:
            mean = self.torque.mean()
            cv = self.torque.std() / mean if mean > 0.5 else 0.0
            rpm_cv = None
            if self.rpm.covered_s >= SLIP_WINDOW_S * 0.8 and self.rpm.mean() > 1.0:
                rpm_cv = self.rpm.std() / self.rpm.mean()
            slip = cv >= p.stick_slip_cv and (rpm_cv is None or rpm_cv >= p.stick_slip_cv / 2)
            ev = {"torque_cv": round(cv, 3), "rpm_cv": round(rpm_cv, 3) if rpm_cv is not None else None,
                  "torque_mean": round(mean, 2), "limit_cv": p.stick_slip_cv,
                  "relied_on": ["TQA"] + (["RPMA"] if rpm_cv is not None else [])}
        elif inp.state in ("rotary_drilling", "slide_drilling") or inp.state == "unknown":
            slip = None
        else:
            slip = False
        out.append(Condition("stick_slip", "stick_slip", slip, "medium",
                             f"Stick-slip: torque varies {ev.get('torque_cv', 0) * 100:.0f} % while drilling", ev,
                             suppressed=explained, on_delay_s=30.0, off_delay_s=120.0))

        # MSE rising while ROP falls
        mse, rop = derived.get("MSE"), inp.rop_fph
        wob, rpm = v.get("WOBA"), v.get("RPMA")
        trend = self.trend
        if inp.state == "rotary_drilling" and mse is not None and rop and wob is not None and rpm is not None:
            trend.append((t, mse, rop, wob, rpm))
        while trend and trend[0][0] < t - TREND_WINDOW_S:
            trend.popleft()
        if t < self.next_trend_s:
            bad, tev = self.last_trend
        else:
            self.next_trend_s = t + TREND_EVERY_S
            bad, tev = self.last_trend = self._trend(inp)
        out.append(Condition("mse_rop", "mse_rop", bad, "low",
                             f"MSE up {tev.get('mse_up_pct', 0):.0f} % while ROP down {tev.get('rop_down_pct', 0):.0f} %"
                             " at the same WOB and RPM: bit balling or a dull bit?", tev,
                             suppressed=explained, on_delay_s=120.0, off_delay_s=300.0))
        return out

    def _trend(self, inp: Inputs) -> tuple[bool | None, dict]:
        p = self.params
        trend = self.trend
        bad = None
        tev: dict = {}
        if len(trend) >= 120 and trend[-1][0] - trend[0][0] >= TREND_WINDOW_S * 0.8:
            q = _quarter_means(trend)  # mse, rop, wob, rpm per quarter
            mse_q, rop_q, wob_q, rpm_q = ([row[c] for row in q] for c in range(4))
            mse_up = (_div(mse_q[-1], mse_q[0]) - 1.0) * 100.0
            rop_down = (1.0 - _div(rop_q[-1], rop_q[0])) * 100.0
            gradual = (all(b - a >= 0.1 * (mse_q[-1] - mse_q[0]) for a, b in zip(mse_q, mse_q[1:]))
                       and all(-(b - a) >= 0.1 * (rop_q[0] - rop_q[-1]) for a, b in zip(rop_q, rop_q[1:])))
            steady = (max(wob_q) - min(wob_q) <= PARAMETER_STEADY * (sum(wob_q) / 4)
                      and max(rpm_q) - min(rpm_q) <= PARAMETER_STEADY * (sum(rpm_q) / 4))
            bad = bool(mse_up >= p.mse_rop_pct and rop_down >= p.mse_rop_pct and gradual and steady)
            tev = {"mse_up_pct": round(float(mse_up), 1), "rop_down_pct": round(float(rop_down), 1),
                   "gradual": bool(gradual), "wob_rpm_steady": bool(steady), "window_s": TREND_WINDOW_S,
                   "relied_on": ["WOBA", "RPMA", "TQA", inp.rop_from or "ROP"]}
        return bad, tev


def _quarter_means(rows: Sequence[tuple[float, ...]]) -> list[list[float]]:
    """The column means (all but the first, the time) of the rows split into four parts in
    order, the first parts one row longer when they do not divide evenly (np.array_split).
    Summed row by row from the first, as numpy sums these columns: the same values."""
    rows = list(rows)  # a deque's middle is slow to index
    size, extra = divmod(len(rows), 4)
    out, start = [], 0
    for k in range(4):
        end = start + size + (k < extra)
        sums = [0.0] * (len(rows[0]) - 1)
        for r in range(start, end):
            row = rows[r]
            for c in range(len(sums)):
                sums[c] += row[c + 1]
        out.append([x / (end - start) for x in sums])
        start = end
    return out


def _div(a: float, b: float) -> float:
    """a / b with IEEE results for b == 0 (inf, or NaN for 0 / 0), as numpy divides."""
    try:
        return a / b
    except ZeroDivisionError:
        return math.nan if a == 0 or a != a else math.copysign(math.inf, a) * math.copysign(1.0, b)
