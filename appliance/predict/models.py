"""Drilling models beside the detectors: predicted ROP, the pit-volume trend, ETA to a depth.

Plain Python, streaming and deterministic like the rest of the predictor: each model takes
one sample at a time (epoch ms and catalogue units) and keeps bounded state, so it runs
the same live, in tests and in backtests.

- `RopModel`: a reduced Bingham / Bourgoyne-Young drilling-rate model,
      ln ROP = ln K + a ln WOB + b ln RPM           (rotary; sliding: b = 0)
  fitted by least squares on the most recent on-bottom data, with a weak ridge pull of
  the exponents toward textbook values (a = 1, b = 0.6) so that hours of constant
  parameters (the usual case) give a steady model instead of an ill-conditioned one.
  The residual (measured - predicted) is what a formation change, bit balling or a dull
  bit look like: ROP falling while the model, given the same WOB and RPM, expects more.
- `PitTrend`: the least-squares slope of the active pit volume over a moving window and
  its extrapolation over a horizon: "at this rate, +4 bbl in 10 minutes".
- `DepthEta`: the effective rate of making hole over a long window (connections,
  surveys and short stops included, which is what the plan has to absorb) and the time
  left to a target depth at that rate.

`Models.step()` runs all three for the engine and returns the derived channels:

| channel | unit | meaning |
| --- | --- | --- |
| `ROP_PRED` | ft/h | ROP the fitted model expects at the current WOB and RPM (on bottom only) |
| `ROP_RESID` | ft/h | measured minus predicted ROP |
| `PIT_TREND` | bbl/h | slope of the active pit volume over `pit_window_s` |
| `PIT_PROJ` | bbl | pit volume expected `pit_horizon_min` from now at that slope |
| `DRILL_RATE` | ft/h | effective hole-making rate over `eta_window_h` |
| `ETA_TD` | h | hours to `target_depth_ft` at that rate (0 once reached) |
"""

from __future__ import annotations

import math
import operator
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

ROTARY, SLIDE = "rotary", "slide"
MAX_ROP_FT_H = 2000.0  # the catalogue's plausible range for ROP: beyond it a prediction means nothing
MODEL_CHANNELS = ("ROP_PRED", "ROP_RESID", "PIT_TREND", "PIT_PROJ", "DRILL_RATE", "ETA_TD")
# rig states (the engine's vocabulary) in which the bit is drilling, and how
DRILLING_STATES = {"rotary_drilling": ROTARY, "slide_drilling": SLIDE}


class RopFit(NamedTuple):
    """One fit of the ROP model: ln K, the WOB and RPM exponents, samples used, R² (log space)."""

    ln_k: float
    a_wob: float
    b_rpm: float
    n: int
    r2: float

    def predict(self, wob_klbf: float, rpm: float) -> float:
        """Predicted ROP in ft/h."""
        b_term = self.b_rpm * math.log(rpm) if self.b_rpm else 0.0
        return math.exp(self.ln_k + self.a_wob * math.log(wob_klbf) + b_term)


def fit_rop(wob_klbf: Sequence[float], rpm: Sequence[float] | None, rop_ft_h: Sequence[float],
            prior: tuple[float, float] = (1.0, 0.6), ridge: float = 0.5) -> RopFit:
    """Least-squares fit of ln ROP = ln K + a ln WOB [+ b ln RPM] (rpm None: sliding).

    `ridge` (in units of squared log residual) pulls the exponents toward `prior`; with
    well-spread data it is negligible, with constant WOB or RPM it keeps the exponent at
    the prior and lets ln K absorb the level. All inputs must be positive.

    Plain Python, the normal equations summed exactly (math.fsum) and solved by
    elimination: two or three unknowns from a few hundred rows, a fraction of a
    millisecond once a minute, and no numpy (~15 MiB) in the predictor."""
    y = [math.log(r) for r in rop_ft_h]
    cols = [[1.0] * len(y), [math.log(w) for w in wob_klbf]]
    target = [0.0, prior[0]]
    if rpm is not None:
        cols.append([math.log(r) for r in rpm])
        target.append(prior[1])
    k = len(cols)
    pull = [0.0] + [ridge] * (k - 1)
    # (X'X + P) beta = X'y + P target, P = diag(pull)
    a = [[math.fsum(map(operator.mul, cols[i], cols[j])) + (pull[i] if i == j else 0.0) for j in range(k)]
         for i in range(k)]
    b = [math.fsum(map(operator.mul, cols[i], y)) + pull[i] * target[i] for i in range(k)]
    beta = _solve(a, b)
    mean_y = math.fsum(y) / len(y)
    total = math.fsum((v - mean_y) ** 2 for v in y)
    resid = math.fsum((v - math.fsum(beta[j] * cols[j][i] for j in range(k))) ** 2 for i, v in enumerate(y))
    r2 = 1.0 - resid / total if total > 0 else 1.0
    return RopFit(beta[0], beta[1], beta[2] if rpm is not None else 0.0, len(y), r2)


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """x with a x = b for a small square system, by Gaussian elimination with partial
    pivoting; ValueError when `a` is singular."""
    n = len(b)
    m = [row[:] + [rhs] for row, rhs in zip(a, b)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if m[pivot][col] == 0.0:
            raise ValueError("singular system: the fit's data cannot tell its unknowns apart")
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


@dataclass
class _Bin:
    """Sums of one averaging interval of on-bottom samples."""

    start_ms: int = 0
    n: int = 0
    wob: float = 0.0
    rpm: float = 0.0
    rop: float = 0.0


class RopEstimate(NamedTuple):
    predicted_ft_h: float
    residual_ft_h: float
    fit: RopFit


class RopModel:
    """The online ROP model: one fit for rotary drilling, one for sliding.

    On-bottom samples are averaged over `bin_s` seconds (a 100 Hz feed and a 0.2 Hz feed
    build the same model), the last `window` averages per mode are kept, and the model is
    refitted every `refit_every` new averages once `min_samples` exist.
    """

    def __init__(self, window: int = 360, bin_s: float = 10.0, min_samples: int = 18,
                 refit_every: int = 6, min_wob_klbf: float = 1.0, min_rpm: float = 5.0,
                 min_rop_ft_h: float = 0.5) -> None:
        self.bin_ms = int(bin_s * 1000)
        self.min_samples = min_samples
        self.refit_every = refit_every
        self.min_wob, self.min_rpm, self.min_rop = min_wob_klbf, min_rpm, min_rop_ft_h
        self.data: dict[str, deque] = {ROTARY: deque(maxlen=window), SLIDE: deque(maxlen=window)}
        self.fits: dict[str, RopFit | None] = {ROTARY: None, SLIDE: None}
        self._since_fit = {ROTARY: 0, SLIDE: 0}
        self._bin = _Bin()
        self._bin_mode: str | None = None

    def _close_bin(self) -> None:
        b, mode = self._bin, self._bin_mode
        # a bin cut short by leaving bottom counts only if it holds a fair share of samples
        if mode is not None and b.n:
            self.data[mode].append((b.wob / b.n, b.rpm / b.n, b.rop / b.n))
            self._since_fit[mode] += 1
            if len(self.data[mode]) >= self.min_samples and (
                    self.fits[mode] is None or self._since_fit[mode] >= self.refit_every):
                self._refit(mode)
        self._bin, self._bin_mode = _Bin(), None

    def _refit(self, mode: str) -> None:
        wob, rpm, rop = zip(*self.data[mode])
        self.fits[mode] = fit_rop(wob, rpm if mode == ROTARY else None, rop)
        self._since_fit[mode] = 0

    def step(self, ts_ms: int, wob_klbf: float | None, rpm: float | None, rop_ft_h: float | None,
             mode: str | None) -> RopEstimate | None:
        """Learn from one sample and predict for it. `mode` is ROTARY or SLIDE while
        drilling on bottom, None otherwise. Returns None off bottom, before the model has
        enough data, or when WOB, RPM or ROP are missing or too small to mean drilling."""
        if mode == ROTARY and (rpm is None or rpm < self.min_rpm):
            mode = None
        usable = (mode is not None and wob_klbf is not None and rop_ft_h is not None
                  and wob_klbf >= self.min_wob and rop_ft_h >= self.min_rop)
        if self._bin_mode is not None and (not usable or mode != self._bin_mode
                                           or ts_ms - self._bin.start_ms >= self.bin_ms):
            self._close_bin()
        if not usable:
            return None
        if self._bin_mode is None:
            self._bin, self._bin_mode = _Bin(start_ms=ts_ms), mode
        b = self._bin
        b.n += 1
        b.wob += wob_klbf
        b.rpm += rpm or 0.0
        b.rop += rop_ft_h
        fit = self.fits[mode]
        if fit is None:
            return None
        try:
            predicted = fit.predict(wob_klbf, rpm if mode == ROTARY else 1.0)
        except OverflowError:  # far outside anything the fit has seen
            return None
        if not 0.0 <= predicted <= MAX_ROP_FT_H:
            return None
        return RopEstimate(predicted, rop_ft_h - predicted, fit)


class PitEstimate(NamedTuple):
    slope_bbl_h: float
    projected_bbl: float  # pit volume expected at the horizon
    span_s: float  # how much time the fit covers


class PitTrend:
    """Least-squares slope of pit volume over the last `window_s` seconds, from running sums
    of 1-second averages (O(1) per sample at any feed rate), extrapolated `horizon_min` ahead.
    Reports once the window is at least `warmup` full."""

    def __init__(self, window_s: float = 600.0, horizon_min: float = 10.0, warmup: float = 0.5) -> None:
        self.window_ms = int(window_s * 1000)
        self.horizon_h = horizon_min / 60.0
        self.min_span_ms = int(self.window_ms * warmup)
        self.points: deque[tuple[float, float]] = deque()  # (t_s from origin, volume)
        self.origin_ms: int | None = None
        self.sums = [0.0] * 5  # n, St, Sv, Stt, Stv (plain floats: cheaper than numpy at this size)
        self._sec: int | None = None
        self._acc = [0.0, 0]

    def _push(self, t_s: float, v: float) -> None:
        self.points.append((t_s, v))
        s = self.sums
        s[0] += 1.0
        s[1] += t_s
        s[2] += v
        s[3] += t_s * t_s
        s[4] += t_s * v

    def _pop(self) -> None:
        t_s, v = self.points.popleft()
        s = self.sums
        s[0] -= 1.0
        s[1] -= t_s
        s[2] -= v
        s[3] -= t_s * t_s
        s[4] -= t_s * v

    def _rebase(self, ts_ms: int) -> None:
        """Keep times small (seconds from a recent origin) so the sums stay exact."""
        shift = (ts_ms - self.origin_ms) / 1000.0 if self.origin_ms is not None else 0.0
        pts = [(t - shift, v) for t, v in self.points]
        self.origin_ms = ts_ms
        self.points.clear()
        self.sums = [0.0] * 5
        for t, v in pts:
            self._push(t, v)

    def step(self, ts_ms: int, volume_bbl: float | None) -> PitEstimate | None:
        if volume_bbl is None:
            return self.estimate(ts_ms)
        sec = ts_ms // 1000
        if self._sec is not None and sec != self._sec and self._acc[1]:
            if self.origin_ms is None or self._sec * 1000 - self.origin_ms > 3_600_000:
                self._rebase(self._sec * 1000)
            self._push((self._sec * 1000 + 500 - self.origin_ms) / 1000.0, self._acc[0] / self._acc[1])
            self._acc = [0.0, 0]
        if self._sec is not None and sec < self._sec:  # time went backwards (a replay): start over
            self.points.clear()
            self.sums = [0.0] * 5
        self._sec = sec
        self._acc[0] += volume_bbl
        self._acc[1] += 1
        return self.estimate(ts_ms)

    def estimate(self, ts_ms: int) -> PitEstimate | None:
        while self.points and self.origin_ms is not None and \
                ts_ms - (self.origin_ms + self.points[0][0] * 1000) > self.window_ms:
            self._pop()
        if len(self.points) < 3 or self.origin_ms is None:
            return None
        span_s = self.points[-1][0] - self.points[0][0]
        if span_s * 1000 < self.min_span_ms:
            return None
        n, st, sv, stt, stv = self.sums
        var_t = stt - st * st / n
        if var_t <= 0:
            return None
        slope_per_s = (stv - st * sv / n) / var_t
        now_s = (ts_ms - self.origin_ms) / 1000.0
        level = sv / n + slope_per_s * (now_s - st / n)  # the fitted line at now
        slope_h = slope_per_s * 3600.0
        return PitEstimate(slope_h, level + slope_h * self.horizon_h, span_s)


class EtaEstimate(NamedTuple):
    rate_ft_h: float
    eta_h: float | None  # None: no target set, or not making hole


class DepthEta:
    """Effective rate of making hole over `window_h` hours (hole depth sampled each minute)
    and the hours left to `target_ft` at that rate. Needs `min_span_min` of history."""

    def __init__(self, target_ft: float = 0.0, window_h: float = 6.0, min_span_min: float = 20.0,
                 min_rate_ft_h: float = 0.5) -> None:
        self.target_ft = target_ft
        self.window_ms = int(window_h * 3_600_000)
        self.min_span_ms = int(min_span_min * 60_000)
        self.min_rate = min_rate_ft_h
        self.points: deque[tuple[int, float]] = deque()  # (ts, hole depth) once a minute
        self.latest: tuple[int, float] = (0, 0.0)  # newest ts, deepest hole depth since the oldest point

    def step(self, ts_ms: int, hole_depth_ft: float | None) -> EtaEstimate | None:
        if hole_depth_ft is not None:
            if not self.points or ts_ms < self.latest[0]:  # the start, or time went backwards
                self.points.clear()
                self.latest = (ts_ms, hole_depth_ft)
            if not self.points or ts_ms - self.points[-1][0] >= 60_000:
                self.points.append((ts_ms, hole_depth_ft))
            # hole depth only grows; a dip is a sensor glitch, not lost progress
            self.latest = (ts_ms, max(hole_depth_ft, self.latest[1]))
        while len(self.points) > 2 and ts_ms - self.points[1][0] >= self.window_ms:
            self.points.popleft()
        if not self.points:
            return None
        (t0, d0), (t1, d1) = self.points[0], self.latest
        span = max(ts_ms, t1) - t0
        if span < self.min_span_ms:
            return None
        rate = (d1 - d0) / (span / 3_600_000)
        if rate > MAX_ROP_FT_H:  # a jump of the depth reading (a reset, a glitch), not drilling
            self.points.clear()
            return None
        if self.target_ft <= 0:
            return EtaEstimate(rate, None)
        if d1 >= self.target_ft:
            return EtaEstimate(rate, 0.0)
        return EtaEstimate(rate, (self.target_ft - d1) / rate if rate >= self.min_rate else None)


@dataclass
class Models:
    """The three models behind one call for the engine."""

    target_depth_ft: float = 0.0
    pit_window_s: float = 600.0
    pit_horizon_min: float = 10.0
    eta_window_h: float = 6.0
    rop: RopModel = field(default_factory=RopModel)
    pit: PitTrend = field(init=False)
    eta: DepthEta = field(init=False)

    def __post_init__(self) -> None:
        self.pit = PitTrend(self.pit_window_s, self.pit_horizon_min)
        self.eta = DepthEta(self.target_depth_ft, self.eta_window_h)

    def step(self, ts_ms: int, values: dict[str, float], state: str,
             rop_ft_h: float | None = None) -> dict[str, float]:
        """Derived channels for one frame (see the module table). `state` is the engine's
        rig state; `rop_ft_h` the ROP to learn from when the source sends no ROPA."""
        out: dict[str, float] = {}
        rop = values.get("ROPA", rop_ft_h)
        r = self.rop.step(ts_ms, values.get("WOBA"), values.get("RPMA"), rop, DRILLING_STATES.get(state))
        if r is not None:
            out["ROP_PRED"] = r.predicted_ft_h
            out["ROP_RESID"] = r.residual_ft_h
        p = self.pit.step(ts_ms, values.get("TVA"))
        if p is not None:
            out["PIT_TREND"] = p.slope_bbl_h
            out["PIT_PROJ"] = p.projected_bbl
        e = self.eta.step(ts_ms, values.get("DMEA"))
        if e is not None:
            out["DRILL_RATE"] = e.rate_ft_h
            if e.eta_h is not None:
                out["ETA_TD"] = e.eta_h
        return out
