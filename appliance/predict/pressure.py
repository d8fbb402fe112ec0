"""The standpipe pressure the flow should need, and one-sided CUSUMs on what it really needs.

At steady pumping the standpipe pressure is the bit nozzles (∝ Q²) plus friction in the
string, the annulus and the surface lines (turbulent: ∝ Q^1.75–1.8), all ∝ mud weight, so
over a range of pump rates

    ln SPP = a + n · ln Q + ln MW          n ≈ 1.8–2

`PressureModel` learns the two separately, because they change on different time scales:

- the level a: the average of ln SPP/MW − n·ln Q over the recent steady pumping (one-hour
  memory, so it follows the friction growing with depth; relearned when the bit circulates
  more than RELEARN_FT from where it last learned, e.g. after a wiper trip);
- the flow exponent n, from pump-rate changes: when the pumps settle at a rate more than
  3 % from the one before (after a connection, or the driller changing it), the pressure
  over the first RATE_LEARN_S against the pressure just before the change gives
  n = Δln SPP / Δln Q, averaged over such changes (N_PRIOR until the first). Within one
  steady period the rate is the average of the flow readings, not each reading: the
  pressure follows the pumps, not the flow gauge's scatter (regressing on each reading
  would pull n towards 0).

The residual r = ln SPP − expected (in %) is what a washout pulls down (mud leaks through a
hole in the string and skips the nozzles) and a pack-off pushes up (cuttings choking the
annulus). It feeds two one-sided CUSUMs (Page 1954), one per direction:

    L ← min(2h, max(0, L + (−r − k_low)·dt))     washout when L ≥ h
    U ← min(2h, max(0, U + (r − k_high)·dt))     "pressure up for the flow" (a pack-off sign)

k (%) is the drift allowance: deviations within it never add up; it is widened to twice the
residual's own measured scatter (its mean absolute value, so k ≥ 1.6 σ of the gauge noise),
so a noisy gauge needs a larger change. h (%·s) is how much deviation beyond k must add
up, which sets the delay: a step of d % is found after h / (d − k) s, a ramp of slope
s (%/s) √(2h / s) after it passes k. The cap at 2h lets an
alarm clear within h / k s of the pressure coming back instead of paying back everything
a long washout added up. Each second's residual is clipped to ±5k, so one or two odd
readings (a glitch of +60 % the spike check took for a step) cannot add up to h alone. The sums hold through connections (pumps off or changing) and
through the first RATE_LEARN_S at a new rate, so a drift that began before a connection is
still counted after it; a deviation is never learned (the level learns only while r is
within the allowance and both sums are below h / 2, n only then too).

Pure and deterministic: times are data seconds; `update` is called once per second of data
with that second's means.
"""

from __future__ import annotations

import math
from typing import NamedTuple

N_PRIOR = 1.85  # flow exponent before a rate change shows it: nozzles Q², turbulent friction Q^1.75-1.8
N_MIN, N_MAX = 1.5, 2.2
N_WEIGHT = 0.5  # each rate change moves n this far towards what it showed
RATE_NEW = 0.03  # a steady rate this far (in ln Q, ~3 %) from the last one is a new rate
RATE_LEARN_S = 30.0  # of steady pumping at a new rate: it teaches n; the CUSUMs hold meanwhile
FLOW_TAU_S = 30.0  # the rate of a steady period: its readings' average (an EWMA once this old)
BEFORE_TAU_S = 60.0  # the pressure and rate just before a change: EWMAs over this
MEMORY_S = 3600.0  # of steady pumping: the level's memory
WARMUP_S = 600.0  # of steady pumping before the model is trusted
RELEARN_FT = 300.0  # bit circulating this far from where the model last learned: the level is relearned
RELEARN_WARMUP_S = 120.0
SCATTER_TAU_S = 600.0
SCATTER_MIN_PCT = 0.2  # the residual's scatter is never taken as smaller than this
CLIP_ALLOWANCES = 5.0  # a second's residual adds at most (5 − 1)·k to a sum: ≥ 8 s of it to alarm
SMOOTH_S = 15.0  # SPPDEV and the evidence: the residual averaged over this


class PressureState(NamedTuple):
    known: bool  # the model is trusted and the pumps are steady: the CUSUMs are being judged
    residual_pct: float | None  # standpipe pressure against the expected, % (averaged over 15 s)
    expected_psi: float | None
    low: float  # the washout CUSUM, %·s
    high: float  # the pressure-rise CUSUM, %·s
    allowance_pct: float  # k in use, washout side
    exponent: float  # n


class PressureModel:
    def __init__(self, low_allowance_pct: float, high_allowance_pct: float, alarm_pct_s: float) -> None:
        self.k_low, self.k_high = low_allowance_pct, high_allowance_pct
        self.h = alarm_pct_s
        self.exponent = N_PRIOR
        self.rate_changes = 0
        self._w = self._wx = self._level = 0.0  # Σw, Σw·x, Σw·(y − n·x) with forgetting: the level a
        self.learned_s = 0.0
        self.warmup_s = WARMUP_S
        self.learned_bit_ft: float | None = None
        self.scatter = SCATTER_MIN_PCT  # mean absolute residual while learning, %
        self.low = self.high = 0.0
        self.smooth: float | None = None
        self.run_s = 0.0  # of the current steady pumping
        self.x = 0.0  # ln of the pumps' rate in this steady period
        self.before: tuple[float, float] | None = None  # (x, y) just before the pumps last changed
        self.recent: tuple[float, float] | None = None  # (x, y) over the last BEFORE_TAU_S of steady pumping
        self.new_rate = False
        self._new_y = 0.0

    # -- the model -------------------------------------------------------------------------

    @property
    def level(self) -> float | None:
        return self._level / self._w if self._w > 0.0 else None

    def expected(self, q_gpm: float, mw_ppg: float) -> float | None:
        """Standpipe pressure (psi) the model expects for this flow and mud weight."""
        a = self.level
        if a is None or q_gpm <= 0.0:
            return None
        return math.exp(a + self.exponent * math.log(q_gpm)) * max(mw_ppg, 1.0)

    def _learn(self, x: float, y: float, dt_s: float, bit_ft: float | None) -> None:
        decay = math.exp(-dt_s / MEMORY_S)
        self._w = self._w * decay + dt_s
        self._wx = self._wx * decay + x * dt_s
        self._level = self._level * decay + (y - self.exponent * x) * dt_s
        self.learned_s += dt_s
        self.learned_bit_ft = bit_ft

    def _learn_exponent(self, x: float, y: float) -> None:
        """A new steady rate against the one before it: what n it shows."""
        if self.before is None or self.low >= self.h / 2 or self.high >= self.h / 2:
            return
        x0, y0 = self.before
        if abs(x - x0) < RATE_NEW:
            return
        shown = min(max((y - y0) / (x - x0), N_MIN), N_MAX)
        old = self.exponent
        self.exponent += (shown - old) * N_WEIGHT
        self.rate_changes += 1
        # the level is the same pressure told with the new n: a = y − n·x at the old rate's mean
        self._level += (old - self.exponent) * self._wx

    # -- one second of data ----------------------------------------------------------------

    def update(self, spp: float | None, q: float | None, mw: float, bit_ft: float | None,
               steady: bool, explained: bool, dt_s: float) -> PressureState:
        """`steady`: pumps on and settled; `explained`: another detector accounts for a
        pressure change now (a kick or loss lowers it too), so nothing adds up or is learned."""
        k = max(self.k_low, 2.0 * self.scatter)
        kh = max(self.k_high, 2.0 * self.scatter)
        if not steady or spp is None or q is None or q <= 0.0 or spp <= 0.0:
            if self.run_s > 0.0 and self.recent is not None:
                self.before = self.recent  # what the pumps did before this change
            self.smooth, self.run_s, self.recent = None, 0.0, None
            return PressureState(False, None, None, self.low, self.high, k, self.exponent)
        mw = max(mw, 1.0)
        y = math.log(spp / mw)
        if self.run_s == 0.0:  # a new steady period: at a new rate?
            self.x = math.log(q)
            self.new_rate = self.before is not None and abs(self.x - self.before[0]) >= RATE_NEW
            self._new_y = y
        else:
            self.x += (math.log(q) - self.x) * min(1.0, dt_s / min(self.run_s + dt_s, FLOW_TAU_S))
        self.run_s += dt_s
        x = self.x
        b = min(1.0, dt_s / min(self.run_s, BEFORE_TAU_S))
        self.recent = (x, y) if self.recent is None else (self.recent[0] + (x - self.recent[0]) * b,
                                                          self.recent[1] + (y - self.recent[1]) * b)
        if (bit_ft is not None and self.learned_bit_ft is not None
                and abs(bit_ft - self.learned_bit_ft) > RELEARN_FT and self.learned_s > 0.0):
            # circulating far from where the level was learned (a trip, a wiper trip): the
            # friction is another. Learn the level afresh; n, a property of the system, stays.
            self._w = self._wx = self._level = self.learned_s = 0.0
            self.warmup_s = RELEARN_WARMUP_S
            self.low = self.high = 0.0
            self.new_rate = False
        if self.new_rate and self.learned_s >= self.warmup_s:
            if self.run_s <= RATE_LEARN_S:  # the new rate's pressure, averaged
                self._new_y += (y - self._new_y) * min(1.0, dt_s / self.run_s)
                self.smooth = None
                return PressureState(False, None, None, self.low, self.high, k, self.exponent)
            self._learn_exponent(x, self._new_y)
            self.new_rate = False
        a = self.level
        if a is None or self.learned_s < self.warmup_s:
            if a is not None:
                r0 = (y - a - self.exponent * x) * 100.0
                self.scatter += (min(abs(r0), 5.0) - self.scatter) * min(1.0, dt_s / 60.0)
                self.scatter = max(self.scatter, SCATTER_MIN_PCT)
            self._learn(x, y, dt_s, bit_ft)
            return PressureState(False, None, None, self.low, self.high, k, self.exponent)
        r = (y - a - self.exponent * x) * 100.0
        self.smooth = r if self.smooth is None else self.smooth + (r - self.smooth) * min(1.0, dt_s / SMOOTH_S)
        if explained:
            self.low = self.high = 0.0
        else:
            cap = 2.0 * self.h
            # a second's residual counts at most CLIP_ALLOWANCES allowances: a reading that
            # jumps for a sample or two (a glitch the spike check passed as a step) cannot
            # add up to an alarm alone; a real change still does, within h / (4k) s
            rc = min(max(r, -CLIP_ALLOWANCES * k), CLIP_ALLOWANCES * kh)
            self.low = min(cap, max(0.0, self.low + (-rc - k) * dt_s))
            self.high = min(cap, max(0.0, self.high + (rc - kh) * dt_s))
            if self.low < self.h / 2 and self.high < self.h / 2:
                # the scatter (mean absolute residual, ~0.8 σ for gauge noise) from every
                # second not adding up, clipped so a single odd reading cannot inflate it
                self.scatter += (min(abs(r), 3.0 * k) - self.scatter) * min(1.0, dt_s / SCATTER_TAU_S)
                self.scatter = max(self.scatter, SCATTER_MIN_PCT)
                if -k <= r <= kh:
                    self._learn(x, y, dt_s, bit_ft)
        expected = math.exp(a + self.exponent * x) * mw
        return PressureState(True, self.smooth, expected, self.low, self.high, k, self.exponent)
