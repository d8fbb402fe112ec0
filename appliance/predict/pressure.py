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
    # this second's 100·ln(SPP/MW) and 100·ln Q, unsmoothed (None when not judged): the fast
    # test compares the pressure with itself at an unchanged pump rate
    pressure_pct: float | None = None
    flow_pct: float | None = None


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
        return PressureState(True, self.smooth, expected, self.low, self.high, k, self.exponent,
                             y * 100.0, math.log(q) * 100.0)


# -- the pressure falling from its own recent level -------------------------------------------

DROP_REF_S = 480.0  # the recent level: the residual's mean over this much steady pumping ...
DROP_LAG_S = 90.0  # ... ending this long ago, so a fall under way is not yet in it
DROP_MIN_REF_S = 120.0  # of reference before anything is judged
DROP_K_SIGMA = 0.75  # the allowance, in the residual's own noise σ (per reading) ...
DROP_H_SIGMA = 12.0  # ... and the alarm level, in σ summed over readings
DROP_CLIP = 3.0  # a reading's fall counts at most this many allowances: ≥ 8 readings of it to alarm
DROP_SIGMA_MIN_PCT = 0.2
MASD_TO_SIGMA = 1.0 / 1.128  # white noise: mean |successive difference| = 2σ/√π
WOB_TOLERANCE_KLBF = 2.0  # weight on bit off its reference mean by more than this (or 10 %) ...
WOB_TOLERANCE = 0.10  # ... changes the motor's and bit's pressure: the reference starts again
FLOW_GATE_S = 10.0  # the pump rate's mean over the last 10 s off its reference mean by more than
FLOW_TOLERANCE_PCT = 0.3  # this (a stroke a minute is ~1 %) or FLOW_TOLERANCE_SE standard errors of
FLOW_TOLERANCE_SE = 4.5  # that mean is another rate (the pressure follows it): the reference starts again
FLOW_GATE_FAST = 3  # ... and the same for the mean of the last 3 readings (a step shows there first)
FLOW_GATE_MIN_N = 30  # readings of reference before the rate is judged (its mean and scatter known) ...
FLOW_GATE_MIN_SPARSE = 6  # ... or this many once the reference spans DROP_MIN_REF_S (a recorder every 5-20 s)
RAMP_Z = 5.75  # the ramp test: a fall growing from nothing since some moment in the last DROP_LAG_S ...
RAMP_MIN_S = 30.0  # ... at least this long ago, this many σ out (the matched filter's z)
RAMP_CLIP_SIGMA = 3.0  # a reading's fall counts at most this many σ: one or two glitches cannot raise it


class DropState(NamedTuple):
    judged: bool
    cusum: float  # %·s
    alarm: float  # h in use, %·s
    allowance_pct: float  # k in use
    reference_pct: float | None  # the pressure's recent level (100·ln(SPP/MW))
    drop_pct: float | None  # this second's residual below that level (positive: lower)
    ramp_z: float = 0.0  # the ramp test's z: the fall's fit to a ramp from nothing, in σ
    ramp_alarm: float = RAMP_Z
    ramp_s: float = 0.0  # how long ago the best-fitting ramp began, s
    ramp_pct_min: float = 0.0  # its slope, % a minute (positive: falling)

    @property
    def ramp_fall_pct(self) -> float:
        """How far the best-fitting ramp has taken the pressure down by now, %."""
        return self.ramp_pct_min * self.ramp_s / 60.0

    @property
    def falling(self) -> bool:
        """The fast test alarms: the sum of falls past its alarm level, or a fall growing
        from nothing fitting a ramp by RAMP_Z σ and already past the allowance (so the
        `min_drop_pct` floor quiets both)."""
        return self.judged and (self.cusum >= self.alarm or (self.ramp_z >= self.ramp_alarm
                                                             and self.ramp_fall_pct >= self.allowance_pct))


class RecentDrop:
    """A washout seen early: the standpipe pressure falling from its own level of the last
    minutes, at unchanged conditions.

    The CUSUM in `PressureModel` judges the residual against the hour-long level, which lags
    the friction growing with depth: on the simulator the residual sits 0.4–0.6 % above it
    while drilling, so a washout must first cancel that before its fall counts, and the
    allowance (≥ 1 %) is set for hours of model error. A washout starting from nothing
    (0.8 % a minute, ~25 psi on 3,000 psi against ~13 psi of gauge noise) then shows only
    at a ~2 % drop, 2–3 minutes in. Here the reference is the pressure's own mean
    (100·ln(SPP/MW)) over the last DROP_REF_S of one unbroken stretch of steady pumping at
    unchanged conditions, ending DROP_LAG_S ago, so only a change within the last minutes
    is left; the noise σ comes from the same stretch (successive differences, which a slow
    drift does not inflate). Two tests on the fall below the reference:

    - a one-sided CUSUM with allowance DROP_K_SIGMA·σ (at least the `min_drop_pct` floor)
      and alarm level DROP_H_SIGMA·σ, for a fall that comes all at once or builds slowly;
    - the ramp test: the matched filter for a fall growing linearly from nothing since a
      moment τ, z = Σ (t − τ)·drop / (σ·√Σ (t − τ)²), N(0, 1) on white noise, maximised
      over τ among the readings of the last DROP_LAG_S (at least RAMP_MIN_S back), alarm
      at RAMP_Z (and once the fitted ramp's fall has passed the allowance). A washout
      eroding a hole is such a ramp; the CUSUM, built for a step, finds one later at the
      same false-alarm rate (the simulator's washout, ten seeds: median 63 s against 57.5 s).

    Both add per reading, not per second: σ is the scatter of one reading, so a recorder
    sending every 3–5 s (or a gap in the data) must not make one noisy reading count
    several times; each reading's fall is clipped (DROP_CLIP allowances, RAMP_CLIP_SIGMA σ)
    so one or two glitches cannot raise either.

    The pump rate is a condition, not a correction: the pressure is compared at one rate,
    and the stretch starts again when the rate's mean over the last FLOW_GATE_S leaves its
    reference mean. Dividing each reading by the flow gauge's reading instead (the
    hour-long model's n·ln Q, over a 30 s average of it) adds the gauge's slow wander to the
    pressure: 0.07 % on the simulator, correlated over half a minute, which is exactly the
    time scale these tests add up over, and which raised the ramp test's z on normal
    drilling by ~15 %.

    The stretch starts again (and both tests are cleared) whenever the pressure model stops
    judging (pumps off or changing, a connection, a new rate being learned), the regime
    changes (on/off bottom, the string starting or stopping turning), the pump rate moves
    (above), the weight on bit leaves its reference mean (a mud motor's and the bit's
    pressure follow the weight: a drill-off lowers the standpipe pressure at constant
    flow), or the returns disagree with flow in (a kick or loss lowers the pressure too,
    and is found by the flow meters). A washout already under way when a stretch starts is
    in its reference: that is the hour-long CUSUM's to find.
    """

    def __init__(self, min_drop_pct: float) -> None:
        self.min_drop_pct = min_drop_pct
        self.regime: object = None
        self.t_s = 0.0
        self._reset()

    def _reset(self) -> None:
        # (t, r, |Δr|, wob, flow, |Δflow|), the last DROP_LAG_S; older ones, up to DROP_REF_S, in ref
        self.recent: list[tuple[float, float, float, float | None, float | None, float]] = []
        self.ref: list[tuple[float, float, float, float | None, float | None, float]] = []
        self.head = 0  # index of the oldest live entry in ref (entries before it are dropped)
        self.sum_r = self.sum_d = self.sum_w = 0.0
        self.n_w = 0
        self.sum_f = self.sum_df = 0.0  # the pump rate (100·ln Q) over the reference, and its |Δ|
        self.n_f = 0
        self.flows: list[tuple[float, float]] = []  # (t, rate) over the last FLOW_GATE_S
        self.prev_f: float | None = None
        self.prev: float | None = None
        self.cusum = 0.0

    def _ref_n(self) -> int:
        return len(self.ref) - self.head

    def update(self, t_s: float, r: float | None, regime: object, wob: float | None,
               quiet: bool, dt_s: float, flow: float | None = None) -> DropState:
        """`r`: this second's pressure, 100·ln(SPP/MW), None when the pressure model is not
        judging; `regime`: anything that changes the pressure besides a washout (on bottom,
        turning); `quiet`: nothing else explains a pressure change now (no kick or loss
        suspected); `flow`: the pump rate, 100·ln Q (None: not known, not gated)."""
        if r is None or not quiet or regime != self.regime:
            self.regime = regime
            self._reset()
            return DropState(False, 0.0, 0.0, self.min_drop_pct, None, None)
        n = self._ref_n()
        if wob is not None and self.n_w:
            w_ref = self.sum_w / self.n_w
            if abs(wob - w_ref) > max(WOB_TOLERANCE_KLBF, WOB_TOLERANCE * abs(w_ref)):
                self._reset()
                n = 0
        df = 0.0
        if flow is not None:
            flows = self.flows
            flows.append((t_s, flow))
            while flows[0][0] <= t_s - FLOW_GATE_S:
                del flows[0]
            df = abs(flow - self.prev_f) if self.prev_f is not None else 0.0
            self.prev_f = flow
            if self._gate_armed() and self._rate_moved(flows, self.sum_f / self.n_f,
                                                       self.sum_df / (self.n_f - 1) * MASD_TO_SIGMA):
                self._reset()
                self.flows, self.prev_f = [(t_s, flow)], flow
                df = 0.0
        d = abs(r - self.prev) if self.prev is not None else 0.0
        self.prev = r
        self.recent.append((t_s, r, d, wob, flow, df))
        while self.recent and self.recent[0][0] <= t_s - DROP_LAG_S:
            e = self.recent.pop(0)
            self.ref.append(e)
            self.sum_r += e[1]
            self.sum_d += e[2]
            if e[3] is not None:
                self.sum_w += e[3]
                self.n_w += 1
            if e[4] is not None:
                self.sum_f += e[4]
                self.sum_df += e[5]
                self.n_f += 1
        while self._ref_n() and self.ref[self.head][0] <= t_s - DROP_LAG_S - DROP_REF_S:
            e = self.ref[self.head]
            self.head += 1
            self.sum_r -= e[1]
            self.sum_d -= e[2]
            if e[3] is not None:
                self.sum_w -= e[3]
                self.n_w -= 1
            if e[4] is not None:
                self.sum_f -= e[4]
                self.sum_df -= e[5]
                self.n_f -= 1
        if self.head > 256:
            del self.ref[:self.head]
            self.head = 0
        n = self._ref_n()
        if (n == 0 or self.ref[-1][0] - self.ref[self.head][0] + dt_s < DROP_MIN_REF_S
                or (flow is not None and not self._gate_armed())):
            # a pump rate that cannot yet be told from its own scatter: a small cut would read
            # as a fall of the pressure (n ≈ 2: a 2 % cut lowers it ~4 %)
            return DropState(False, self.cusum, 0.0, self.min_drop_pct, None, None)
        mean = self.sum_r / n
        sigma = max(DROP_SIGMA_MIN_PCT, self.sum_d / max(n - 1, 1) * MASD_TO_SIGMA)
        k = max(self.min_drop_pct, DROP_K_SIGMA * sigma)
        h = DROP_H_SIGMA * sigma
        drop = mean - r
        dc = min(max(drop, -DROP_CLIP * k), DROP_CLIP * k)
        self.cusum = min(2.0 * h, max(0.0, self.cusum + dc - k))
        z, ramp_s, slope = self._ramp(t_s, mean, sigma)
        return DropState(True, self.cusum, h, k, mean, drop, z, RAMP_Z, ramp_s, slope * 60.0)

    def _gate_armed(self) -> bool:
        """The reference knows the pump rate's mean and scatter well enough to tell a change:
        FLOW_GATE_MIN_N readings, or FLOW_GATE_MIN_SPARSE over DROP_MIN_REF_S for a recorder
        that sends every 5-20 s (whose 480 s reference never holds 30)."""
        if self.n_f >= FLOW_GATE_MIN_N:
            return True
        n = self._ref_n()
        return (self.n_f >= FLOW_GATE_MIN_SPARSE and n > 0
                and self.ref[-1][0] - self.ref[self.head][0] >= DROP_MIN_REF_S)

    @staticmethod
    def _rate_moved(flows: list[tuple[float, float]], f_ref: float, sigma_f: float) -> bool:
        """The pump rate's mean over the last FLOW_GATE_S, or over its last FLOW_GATE_FAST
        readings (a step shows there first, while the pressure has already followed it), off
        the reference mean by more than FLOW_TOLERANCE_PCT and FLOW_TOLERANCE_SE standard
        errors."""
        total = 0.0
        for m, (_, f) in enumerate(reversed(flows), 1):
            total += f
            if m == FLOW_GATE_FAST or m == len(flows):
                if abs(total / m - f_ref) > max(FLOW_TOLERANCE_PCT, FLOW_TOLERANCE_SE * sigma_f / math.sqrt(m)):
                    return True
        return False

    def _ramp(self, t_s: float, mean: float, sigma: float) -> tuple[float, float, float]:
        """The readings not yet in the reference (the last DROP_LAG_S) against a fall growing
        linearly from nothing since a moment τ: z(τ) = Σ (t − τ)·drop / (σ·√Σ (t − τ)²), the
        matched filter for that ramp (N(0, 1) on white noise, for any spacing of the
        readings), maximised over τ at each reading at least RAMP_MIN_S back. Returns the
        best z, how long ago its τ was, and its least-squares slope (%/s).

        z adds each reading's fall clipped to RAMP_CLIP_SIGMA σ (a glitch cannot raise it);
        the slope is fitted to the falls as they are, so that a deep fall is reported (and
        passes the allowance) at its true depth rather than at the clip's."""
        recent = self.recent
        lim = RAMP_CLIP_SIGMA * sigma
        a0 = a1 = b0 = b1 = b2 = 0.0  # Σ drop, Σ u·drop, Σ 1, Σ u, Σ u² over readings after τ (u = t − now)
        r0 = r1 = 0.0  # Σ drop, Σ u·drop unclipped
        best, best_s, best_slope = 0.0, 0.0, 0.0
        for i in range(len(recent) - 1, -1, -1):
            e = recent[i]
            u = e[0] - t_s
            raw = mean - e[1]
            r0 += raw
            r1 += u * raw
            d = lim if raw > lim else -lim if raw < -lim else raw
            a0 += d
            a1 += u * d
            b0 += 1.0
            b1 += u
            b2 += u * u
            # τ: the reading before this one (the ramp is nothing there)
            tau = (recent[i - 1][0] if i else self.ref[-1][0] if self._ref_n() else e[0] - 1.0) - t_s
            if -tau < RAMP_MIN_S:
                continue
            num = a1 - tau * a0
            den2 = b2 - 2.0 * tau * b1 + tau * tau * b0
            if num > 0.0 and den2 > 0.0:
                z = num / (sigma * math.sqrt(den2))
                if z > best:
                    best, best_s, best_slope = z, -tau, (r1 - tau * r0) / den2
        return best, best_s, best_slope
