"""The predictor's models on constructed data whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.predict.models import ROTARY, SLIDE, DepthEta, Models, PitTrend, RopModel, fit_rop

T0 = 1_764_449_520_000


def bingham(wob, rpm, k=2.5, a=1.3, b=0.55):
    return k * wob ** a * rpm ** b


def test_the_fit_recovers_known_exponents_from_spread_data():
    rng = np.random.default_rng(1)
    wob = rng.uniform(10, 40, 400)
    rpm = rng.uniform(60, 180, 400)
    rop = bingham(wob, rpm) * np.exp(rng.normal(0, 0.03, 400))
    fit = fit_rop(wob, rpm, rop)
    assert fit.a_wob == pytest.approx(1.3, abs=0.03)
    assert fit.b_rpm == pytest.approx(0.55, abs=0.03)
    assert math.exp(fit.ln_k) == pytest.approx(2.5, rel=0.1)
    assert fit.r2 > 0.95 and fit.n == 400
    assert fit.predict(25, 120) == pytest.approx(bingham(25, 120), rel=0.02)


def test_constant_parameters_keep_the_prior_exponent_and_still_predict_the_level():
    # hours at one WOB and RPM: the exponents cannot be learnt, the level can
    wob, rpm = np.full(200, 25.0), np.full(200, 120.0)
    fit = fit_rop(wob, rpm, bingham(wob, rpm))
    assert fit.a_wob == pytest.approx(1.0, abs=0.05) and fit.b_rpm == pytest.approx(0.6, abs=0.05)
    assert fit.predict(25, 120) == pytest.approx(bingham(25, 120), rel=0.01)


def test_the_online_model_learns_on_bottom_only_and_its_residual_shows_a_slower_formation():
    rng = np.random.default_rng(2)
    m = RopModel(bin_s=10, min_samples=18, refit_every=6)
    estimates = []
    t = T0
    for i in range(6 * 3600):  # six hours at 1 Hz, parameters changed every 5 minutes
        wob = 15 + 10 * math.sin(i / 300) ** 2 + rng.normal(0, 0.3)
        rpm = 100 + 50 * math.cos(i / 470) ** 2
        rop = bingham(wob, rpm) * math.exp(rng.normal(0, 0.02))
        on_bottom = (i // 1800) % 2 == 0 or i > 5 * 3600  # off bottom every other half hour
        if i == 5.5 * 3600:
            fit = m.fits[ROTARY]
        if 5.5 * 3600 <= i:
            rop *= 0.6  # a harder stringer: the model still expects the old rate
        r = m.step(t, wob, rpm, rop if on_bottom else 0.0, ROTARY if on_bottom else None)
        if not on_bottom:
            assert r is None
        estimates.append((i, r))
        t += 1000
    assert fit is not None and fit.a_wob == pytest.approx(1.3, abs=0.15) and fit.b_rpm == pytest.approx(0.55, abs=0.15)
    before = [r.residual_ft_h / r.predicted_ft_h for i, r in estimates if r and 4 * 3600 < i < 5.5 * 3600]
    after = [r.residual_ft_h / r.predicted_ft_h for i, r in estimates if r and 5.5 * 3600 + 60 < i < 5.5 * 3600 + 600]
    assert abs(np.median(before)) < 0.03
    assert np.median(after) == pytest.approx(-0.4, abs=0.05)
    assert m.fits[SLIDE] is None


def test_sliding_has_its_own_model_and_missing_inputs_never_predict():
    m = RopModel(bin_s=1, min_samples=5, refit_every=1)
    for i in range(20):
        m.step(T0 + i * 1000, 20.0, 0.0, 30.0, SLIDE)
    r = m.step(T0 + 21_000, 20.0, 0.0, 30.0, SLIDE)
    assert r is not None and r.predicted_ft_h == pytest.approx(30.0, rel=1e-6)
    assert m.fits[ROTARY] is None
    assert m.step(T0 + 22_000, None, 0.0, 30.0, SLIDE) is None
    assert m.step(T0 + 23_000, 20.0, 0.0, None, SLIDE) is None
    assert m.step(T0 + 24_000, 20.0, 0.0, 30.0, ROTARY) is None  # rotary needs RPM


def test_the_pit_trend_finds_a_known_slope_at_any_feed_rate_and_extrapolates():
    for hz in (0.2, 1, 10):
        p = PitTrend(window_s=600, horizon_min=10)
        est = None
        for i in range(int(900 * hz)):
            t = T0 + int(i * 1000 / hz)
            # 12 bbl/h gain on top of 500 bbl, with sensor noise
            est = p.step(t, 500 + 12 * (i / hz) / 3600 + 0.05 * math.sin(i))
        assert est is not None
        assert est.slope_bbl_h == pytest.approx(12.0, rel=0.03), hz
        now_level = 500 + 12 * (900 - 1 / hz) / 3600
        assert est.projected_bbl == pytest.approx(now_level + 2.0, abs=0.1), hz
        assert 590 <= est.span_s <= 600


def test_the_pit_trend_waits_for_its_window_forgets_old_data_and_survives_a_day():
    p = PitTrend(window_s=600, horizon_min=10)
    assert p.step(T0, 500.0) is None
    for s in range(1, 200):
        assert p.step(T0 + s * 1000, 500.0) is None  # under half a window: no estimate yet
    t = T0
    for s in range(86_400):  # a day flat, then a loss of 30 bbl/h for 15 minutes
        t = T0 + s * 1000
        v = 800.0 if s < 85_500 else 800.0 - 30 * (s - 85_500) / 3600
        est = p.step(t, v)
    assert est.slope_bbl_h == pytest.approx(-30.0, rel=0.02)
    assert len(p.points) <= 601


def test_eta_from_the_effective_rate_including_connections():
    e = DepthEta(target_ft=6000, window_h=6, min_span_min=20)
    est = None
    for minute in range(240):  # 4 h: 30 minutes drilling at 60 ft/h, then a 10 minute connection
        depth = 5000 + 30 * (minute // 40) + min(minute % 40, 30) * 1.0
        for second in range(0, 60, 10):
            est = e.step(T0 + minute * 60_000 + second * 1000, depth)
        if minute < 19:
            assert est is None
    # 30 ft per 40 minutes = 45 ft/h effective
    assert est.rate_ft_h == pytest.approx(45.0, rel=0.05)
    assert est.eta_h == pytest.approx((6000 - depth) / 45.0, rel=0.05)
    assert DepthEta(0).step(T0, 5000) is None
    done = DepthEta(target_ft=100, min_span_min=1)
    done.step(T0, 98)
    assert done.step(T0 + 120_000, 101).eta_h == 0.0
    # a jump of the depth reading (here 5,000 ft in a minute) is not drilling: start over
    jump = DepthEta(target_ft=9000, min_span_min=1)
    jump.step(T0, 100)
    assert jump.step(T0 + 60_000, 5100) is None and jump.step(T0 + 120_000, 5101) is None
    assert jump.step(T0 + 240_000, 5103).rate_ft_h == pytest.approx(60.0)


def test_models_publish_derived_channels_for_the_engine():
    m = Models(target_depth_ft=5500, pit_window_s=120, eta_window_h=1)
    m.eta.min_span_ms = 60_000
    m.rop = RopModel(bin_s=1, min_samples=5, refit_every=1)
    out = {}
    for i in range(300):
        values = {"WOBA": 20.0, "RPMA": 120.0, "ROPA": 60.0, "TVA": 600 + i / 60, "DMEA": 5000 + i / 60}
        out = m.step(T0 + i * 1000, values, "rotary_drilling")
    assert out["ROP_PRED"] == pytest.approx(60.0, rel=1e-3) and abs(out["ROP_RESID"]) < 0.1
    assert out["PIT_TREND"] == pytest.approx(60.0, rel=0.01)  # 1 bbl/min
    assert out["DRILL_RATE"] == pytest.approx(60.0, rel=0.05) and out["ETA_TD"] == pytest.approx(495 / 60 / 60 * 60, rel=0.05)
    off = m.step(T0 + 301_000, {"TVA": 605.0}, "tripping_out")
    assert "ROP_PRED" not in off and "PIT_TREND" in off


def _numpy_fit(wob, rpm, rop, prior=(1.0, 0.6), ridge=0.5):
    """The fit as it was written with numpy (np.linalg.solve of the same normal equations):
    the reference for the plain-Python one."""
    y = np.log(rop)
    cols = [np.ones_like(y), np.log(wob)]
    target = [0.0, prior[0]]
    if rpm is not None:
        cols.append(np.log(rpm))
        target.append(prior[1])
    x = np.column_stack(cols)
    penalty = np.diag([0.0] + [ridge] * (len(cols) - 1))
    beta = np.linalg.solve(x.T @ x + penalty, x.T @ y + penalty @ np.array(target))
    resid = y - x @ beta
    r2 = 1.0 - float((resid ** 2).sum()) / float(((y - y.mean()) ** 2).sum())
    return [float(b) for b in beta], r2


@pytest.mark.parametrize("seed", range(5))
def test_the_plain_python_fit_gives_numpys_answer(seed):
    """fit_rop keeps numpy out of the predictor (~15 MiB): on spread, nearly constant and
    sliding data its exponents, level, R² and predicted ROP are numpy's to 1e-9 relative
    (both are rounding away from the exact answer: numpy's sums are not exact, these are)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(18, 361))
    wob = rng.uniform(5, 45, n) if seed % 2 else 25.0 + rng.normal(0, 0.01, n)
    rpm = rng.uniform(40, 200, n)
    rop = bingham(wob, rpm) * np.exp(rng.normal(0, 0.05, n))
    for r in (rpm, None):
        fit = fit_rop(list(wob), None if r is None else list(r), list(rop))
        beta, r2 = _numpy_fit(wob, r, rop)
        got = [fit.ln_k, fit.a_wob] + ([fit.b_rpm] if r is not None else [])
        assert got == pytest.approx(beta, rel=1e-9, abs=1e-12)
        assert fit.r2 == pytest.approx(r2, rel=1e-9, abs=1e-12) and fit.n == n
        predicted = math.exp(beta[0] + beta[1] * math.log(30.0) + (beta[2] * math.log(120.0) if r is not None else 0))
        assert fit.predict(30.0, 120.0 if r is not None else 1.0) == pytest.approx(predicted, rel=1e-9)
