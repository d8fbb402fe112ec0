"""Kick and lost-circulation detection: the well's flow balance and the pit.

The flow model: with the pumps running steadily the returns equal the flow in; when the
pumps change, the returns follow with a lag (the flowline drains back when they stop —
the flow-back of a connection — and fills when they start), modelled as first order with
the well's own flow-back time constant: the gallons that came back after the pumps stopped
over the flow before, median of the last five connections (`flowline_tau_s` until three
have been seen). For each flow-out meter available (`MFOA` in gpm; `MFOP`, a paddle in %,
scaled to gpm by what it reads during steady pumping) the excess is

    excess = flow out - ratio × expected flow out

(`ratio` learns the meter's bias during steady pumping, and its zero what it reads long
after the pumps stopped; a meter votes only once it has seen two minutes of steady pumping). A kick adds to the returns, a
loss takes from them. A one-sided CUSUM of the excess (slack `kick_flow_gpm`, alarm at
`kick_flow_gal` gallons; for losses `loss_flow_gpm`/`loss_flow_gal`, both widened to the
meter's own noise) finds small lasting changes within a minute while noise does not add
up. With two meters, one must reach its alarm level and the other at least half of its own,
so one drifting or stuck meter cannot raise a kick, and the noisier one does not set the pace.

The pit: `PITDEV` is the active pit volume against a baseline that moves with what is
explained — the flow-back and refill the flow model predicts, new hole drilled (hole
capacity from `bit_size_in`), steel run in or pulled (`pipe_displacement_bbl_ft`), mud
transfers (the pit moving faster than `transfer_bbl_min` with no flow change) — and
otherwise relaxes towards the pit over `pit_baseline_tau_s` (held while a kick or loss is
suspected). A pit gain above `kick_pit_bbl` still growing (the deviation rising over two minutes)
says kick even without a flow-out meter; a loss beyond `loss_pit_bbl` still falling says
loss — with the bit in the hole (below 300 ft): with it out, the pits serve surface work.

Derived channels: FLOWDIFF (gpm, flow out - flow in, when both exist), PITDEV (bbl).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

from appliance.predict.alarms import Condition
from appliance.predict.derive import Inputs
from appliance.predict.params import PredictorParams
from appliance.predict.signals import Cusum, Ewma, TimeWindow

GPM_S_PER_BBL = 42.0 * 60.0
RATIO_TAU_S = 900.0
NOISE_TAU_S = 300.0
EXCESS_TAU_S = 30.0
PADDLE_MIN_PCT = 5.0
LEARN_S = 120.0  # steady pumping needed before a meter's ratio is trusted
PIT_RATE_WINDOW_S = 30.0
PIT_TREND_WINDOW_S = 120.0
PIT_TREND_BBL_MIN = 0.1
MIN_CUSUM_RATIO = 0.3
FINGERPRINT_CONNECTIONS = 5
FINGERPRINT_MIN = 3
FINGERPRINT_MAX_TAUS = 10.0  # pumps off longer than this many time constants: a trip, not a connection
CORROBORATE = 0.5
BIT_IN_HOLE_FT = 300.0  # the pit alone judges kicks and losses only with the bit deeper than this
ZERO_AFTER_TAUS = 6.0  # the flow-back is over after this many time constants
ZERO_CAP_KS = 3.0  # a zero reading is smaller than this many kick slacks
ZERO_TAU_S = 600.0  # the share of its own alarm level every other meter must have reached


class Meter:
    """One flow-out meter: what it reads in gpm, its learned ratio, noise and CUSUMs."""

    def __init__(self, name: str, p: PredictorParams) -> None:
        self.name = name
        self.scale = Ewma(RATIO_TAU_S) if name == "MFOP" else None  # gpm per %
        self.ratio = Ewma(RATIO_TAU_S)
        self.noise2 = Ewma(NOISE_TAU_S)
        self.learned_s = 0.0
        self.kick = Cusum(p.kick_flow_gpm)
        self.loss = Cusum(p.loss_flow_gpm)
        self.excess = Ewma(EXCESS_TAU_S, 0.0)
        self.last_excess = 0.0
        self.h_kick = self.h_loss = math.inf
        self.zero = Ewma(ZERO_TAU_S)  # gpm read with no flow

    def gpm(self, reading: float) -> float | None:
        if self.scale is None:
            return reading
        return reading * self.scale.value if self.scale.value is not None else None

    @property
    def sigma(self) -> float:
        return math.sqrt(self.noise2.value) if self.noise2.value is not None else 0.0


class FlowWatch:
    def __init__(self, params: PredictorParams) -> None:
        p = self.params = params
        self.expected: float | None = None  # gpm coming back, by the flow model
        self.meters = {n: Meter(n, p) for n in ("MFOA", "MFOP")}
        self.hole_capacity_bbl_ft = p.bit_size_in ** 2 / 1029.4
        self.baseline: float | None = None
        self.last_hole: float | None = None
        self.last_bit: float | None = None
        self.pit_rate = TimeWindow(PIT_RATE_WINDOW_S)
        self.pit_trend = TimeWindow(PIT_TREND_WINDOW_S)
        self.dev_trend = TimeWindow(PIT_TREND_WINDOW_S)
        self.devs: deque[tuple[float, float]] = deque()
        self.transfer = False
        self.transfer_bbl = 0.0  # followed in the current transfer
        self.transferred_bbl = 0.0  # followed in all transfers
        self.steady_s = 0.0
        self.transient = True
        self.tau_s = params.flowline_tau_s  # the flow-back's time constant, learned
        self.flowbacks: deque[float] = deque(maxlen=FINGERPRINT_CONNECTIONS)
        self.flowback: tuple[float, float, float] | None = None  # (gpm before, gallons back, t) while off
        self.pumps_were_on: bool | None = None
        self.off_s = 0.0  # how long the pumps have been off
        self.hold = False  # set by the engine while a kick or loss is raised or pending
        # the flow meters' strongest kick or loss evidence, as a fraction of its alarm level:
        # half way or more and the returns disagree with flow in (the washout's fast test waits)
        self.doubt = 0.0

    # -- the model ------------------------------------------------------------------------

    def update(self, inp: Inputs, v: dict[str, float], dt_s: float) -> tuple[dict[str, float], list[Condition]]:
        p = self.params
        derived: dict[str, float] = {}
        q_in = inp.flow_in_gpm
        if q_in is not None:
            if self.expected is None:
                self.expected = q_in
            self._fingerprint(inp, v, dt_s)
            a = 1.0 - math.exp(-dt_s / self.tau_s) if dt_s > 0 else 0.0
            self.expected += (q_in - self.expected) * a
            gap = abs(q_in - self.expected)
            self.transient = gap > max(0.03 * q_in, 10.0)
            self.steady_s = self.steady_s + dt_s if (inp.pumps_on and not self.transient) else 0.0
            self.off_s = self.off_s + dt_s if inp.pumps_on is False else 0.0
            if "MFOA" in v:
                derived["FLOWDIFF"] = round(v["MFOA"] - q_in, 1)
        else:
            self.expected = None
            self.transient = False
            self.steady_s = 0.0

        kick_votes, loss_votes, used, evidence = self._meters(inp, v, dt_s)
        self.doubt = max(kick_votes + loss_votes, default=0.0)
        dev = self._pit(inp, v, dt_s)
        if dev is not None:
            derived["PITDEV"] = round(dev, 2)
        return derived, self._conditions(inp, v, kick_votes, loss_votes, used, evidence, dev)

    def _fingerprint(self, inp: Inputs, v: dict[str, float], dt_s: float) -> None:
        """Learn the well's own flow-back: the gallons that come back after the pumps stop,
        over the flow before, is the flowline's time constant. The median of the last
        connections replaces `flowline_tau_s` (within a quarter to four times it)."""
        p = self.params
        if inp.pumps_on and self.pumps_were_on is False and self.flowback is not None:
            q0, gallons, _ = self.flowback
            if q0 > p.pumps_on_gpm and gallons > 0 and not self.hold:
                self.flowbacks.append(gallons * 60.0 / q0)
                if len(self.flowbacks) >= FINGERPRINT_MIN:
                    learned = statistics.median(self.flowbacks)
                    self.tau_s = min(max(learned, p.flowline_tau_s / 4), p.flowline_tau_s * 4)
            self.flowback = None
        if inp.pumps_on is False and self.pumps_were_on and self.expected is not None:
            self.flowback = (self.expected, 0.0, inp.t_s)
        if self.flowback is not None and inp.pumps_on is False:
            q0, gallons, t0 = self.flowback
            m = self.meters["MFOA"]
            out = v.get("MFOA")
            if out is None and "MFOP" in v and self.meters["MFOP"].learned_s >= LEARN_S:
                out = self.meters["MFOP"].gpm(v["MFOP"])
            if out is None or inp.t_s - t0 > FINGERPRINT_MAX_TAUS * p.flowline_tau_s:
                self.flowback = None  # no meter, or the pumps stayed off: not a connection
            else:
                ratio = m.ratio.value if out is v.get("MFOA") and m.ratio.value else 1.0
                self.flowback = (q0, gallons + out / ratio * dt_s / 60.0, t0)
        if inp.pumps_on is not None:
            self.pumps_were_on = inp.pumps_on

    def _meters(self, inp: Inputs, v: dict[str, float], dt_s: float):
        p = self.params
        kick_votes: list[float] = []  # per meter, accumulated evidence / the alarm level
        loss_votes: list[float] = []
        used: list[str] = []
        evidence: dict[str, Any] = {}
        expected = self.expected
        for name, m in self.meters.items():
            reading = v.get(name)
            if reading is None or expected is None:
                continue
            steady = self.steady_s >= 30.0 and not self.hold
            if m.scale is not None and steady and reading > PADDLE_MIN_PCT:
                m.scale.update(expected / reading, dt_s)
            out = m.gpm(reading)
            if out is None:
                continue
            if steady and expected > p.pumps_on_gpm:
                if m.scale is None:  # a paddle's scale already maps it onto the expected flow
                    m.ratio.update(out / expected, dt_s)
                m.noise2.update(m.last_excess ** 2, dt_s)
                m.learned_s += dt_s
            # the meter's zero: what it reads long after the pumps stopped, while that is small
            if (inp.pumps_on is False and self.off_s >= ZERO_AFTER_TAUS * self.tau_s
                    and abs(out) < ZERO_CAP_KS * p.kick_flow_gpm and not self.hold):
                m.zero.update(out, dt_s)
            if m.learned_s < LEARN_S:
                continue  # a meter votes once it has been seen against steady pumping
            out -= m.zero.value or 0.0
            ratio = m.ratio.value if m.ratio.value is not None else 1.0
            excess = out - ratio * expected
            m.last_excess = excess
            m.excess.update(excess, dt_s)
            sigma = m.sigma
            # widen the slack during pump changes, where the model is least sure
            slack_extra = 0.15 * abs((inp.flow_in_gpm or 0.0) - expected)
            k_kick = max(p.kick_flow_gpm, 0.6 * sigma) + slack_extra
            k_loss = max(p.loss_flow_gpm, 0.6 * sigma) + slack_extra
            h_kick = max(p.kick_flow_gal * 60.0, 8.0 * sigma * sigma / k_kick)
            h_loss = max(p.loss_flow_gal * 60.0, 8.0 * sigma * sigma / k_loss)
            m.kick.k, m.loss.k = k_kick, k_loss
            m.kick.update(excess, dt_s)
            m.loss.update(-excess, dt_s)
            # a CUSUM whose cause has gone winds down instead of holding the alarm for hours
            if m.excess.value < k_kick:
                m.kick.value = min(m.kick.value, h_kick * MIN_CUSUM_RATIO)
            if -m.excess.value < k_loss:
                m.loss.value = min(m.loss.value, h_loss * MIN_CUSUM_RATIO)
            m.h_kick, m.h_loss = h_kick, h_loss
            kick_votes.append(m.kick.value / h_kick)
            loss_votes.append(m.loss.value / h_loss)
            used.append(name)
            evidence[name] = {"reading": reading, "zero_gpm": round(m.zero.value or 0.0, 1), "out_gpm": round(out, 1), "expected_gpm": round(ratio * expected, 1),
                              "excess_gpm": round(m.excess.value, 1), "kick_gal": round(m.kick.value / 60, 1),
                              "loss_gal": round(m.loss.value / 60, 1), "alarm_gal": round(h_kick / 60, 1)}
        return kick_votes, loss_votes, used, evidence

    def _pit(self, inp: Inputs, v: dict[str, float], dt_s: float) -> float | None:
        p = self.params
        pit = v.get("TVA")
        if pit is None:
            return None
        t = inp.t_s
        if self.baseline is None:
            self.baseline = pit
        b = self.baseline
        # what the flow model explains: flow-back when the pumps stop, refill when they start
        if self.expected is not None and inp.flow_in_gpm is not None:
            b += (self.expected - inp.flow_in_gpm) * dt_s / GPM_S_PER_BBL
        if inp.hole_ft is not None:
            if self.last_hole is not None and inp.hole_ft > self.last_hole:
                b -= self.hole_capacity_bbl_ft * (inp.hole_ft - self.last_hole)
            self.last_hole = inp.hole_ft
        if inp.bit_ft is not None:
            if self.last_bit is not None:
                b += p.pipe_displacement_bbl_ft * (inp.bit_ft - self.last_bit)
            self.last_bit = inp.bit_ft
        # transfers: the unexplained volume moving fast with no change in the flow
        self.pit_rate.add(t, pit - b + self.transferred_bbl)  # as if no transfer had been followed
        rate = self.pit_rate.rate() if self.pit_rate.covered_s >= PIT_RATE_WINDOW_S * 0.8 else None
        flows_quiet = all(abs(m.excess.value) < 3 * max(p.kick_flow_gpm, m.sigma)
                          for m in self.meters.values() if m.learned_s >= LEARN_S)
        fast = rate is not None and abs(rate) * 60.0 > p.transfer_bbl_min
        if fast and flows_quiet and not self.transfer:
            self.transfer = True
            self.transfer_bbl = 0.0
            # back to the deviation from before the rate window: the transfer's start is not kept
            before = next((d for ts, d in self.devs if ts >= t - PIT_RATE_WINDOW_S), None)
            if before is not None:
                self.transfer_bbl += (pit - before) - b
                self.transferred_bbl += (pit - before) - b
                b = pit - before
        elif self.transfer and not fast:
            self.transfer = False
        elif self.transfer:
            prev = self.pit_trend.last()
            prev = pit if prev is None else prev
            b += pit - prev
            self.transfer_bbl += pit - prev
            self.transferred_bbl += pit - prev
        if not self.transfer and not self.hold and dt_s > 0:
            b += (pit - b) * (1.0 - math.exp(-dt_s / p.pit_baseline_tau_s))
        self.baseline = b
        self.pit_trend.add(t, pit)
        dev = pit - b
        self.dev_trend.add(t, dev)
        self.devs.append((t, dev))
        while self.devs and self.devs[0][0] < t - 2 * PIT_RATE_WINDOW_S:
            self.devs.popleft()
        return dev

    def _conditions(self, inp: Inputs, v: dict[str, float], kick_votes: list[float], loss_votes: list[float],
                    used: list[str], flow_evidence: dict[str, Any], dev: float | None) -> list[Condition]:
        p = self.params
        trend = self.dev_trend.rate() if self.dev_trend.covered_s >= PIT_TREND_WINDOW_S * 0.5 else None
        trend_bbl_min = trend * 60.0 if trend is not None else None
        common: dict[str, Any] = {
            "flow_in_gpm": round(inp.flow_in_gpm, 1) if inp.flow_in_gpm is not None else None,
            "flow_in_from": inp.flow_in_from, "pumps_on": inp.pumps_on, "pumps_from": inp.pumps_from,
            "rig_state": inp.state, "flow_out_meters": used, "flowback_tau_s": round(self.tau_s, 1),
            "flowback_connections": len(self.flowbacks), **flow_evidence}
        if dev is not None:
            common.update(pit_bbl=v.get("TVA"), pit_dev_bbl=round(dev, 2),
                          pit_trend_bbl_min=round(trend_bbl_min, 2) if trend_bbl_min is not None else None,
                          transfer=self.transfer)
        if "GASA" in v:
            common["gas_pct"] = v["GASA"]
        inputs = used + (["TVA"] if dev is not None else [])
        common["relied_on"] = inputs + ([inp.flow_in_from] if inp.flow_in_from else [])

        # one meter at its alarm level, every other at least half way: one meter drifting on
        # its own never raises it, and the noisiest meter does not set the pace
        flow_kick = bool(kick_votes) and max(kick_votes) >= 1.0 and min(kick_votes) >= CORROBORATE
        flow_loss = bool(loss_votes) and max(loss_votes) >= 1.0 and min(loss_votes) >= CORROBORATE
        flows_disagree = bool(kick_votes) and max(kick_votes) >= 1.0 and min(kick_votes) < CORROBORATE
        excess_now = [self.meters[n].excess.value for n in used]
        # with the bit out of the hole the pits serve surface work (filling, cleaning, mixing)
        in_hole = inp.bit_ft is None or inp.bit_ft >= BIT_IN_HOLE_FT
        pit_kick = (dev is not None and in_hole and not self.transfer and dev >= p.kick_pit_bbl
                    and trend_bbl_min is not None and trend_bbl_min >= PIT_TREND_BBL_MIN
                    and all(e > 0 for e in excess_now))
        pit_loss = (dev is not None and in_hole and not self.transfer and dev <= -p.loss_pit_bbl
                    and trend_bbl_min is not None and trend_bbl_min <= -PIT_TREND_BBL_MIN
                    and all(e < 0 for e in excess_now))
        if flows_disagree:
            common["meters_disagree"] = True

        known = bool(used) or dev is not None
        kick = (flow_kick or pit_kick) if known else None
        signs = [s for s, on in (("flow out above flow in", flow_kick), ("pit gain", pit_kick)) if on]
        # rounded first (+ 0.0 turns -0.0 into 0.0): -0.04 would read "-0.0" while the pit rises
        pit_text = "" if dev is None else f"; pit {round(dev, 1) + 0.0:+.1f} bbl vs baseline"
        kick_msg = ("Possible kick: " + " and ".join(signs) if signs else "Kick signs gone") + pit_text
        # a loss seen by the flow meters needs the pumps on; the pit sees it either way
        loss_known = known and (inp.pumps_on is not False or dev is not None)
        loss = (flow_loss and inp.pumps_on is not False) or pit_loss
        lsigns = [s for s, on in (("returns below flow in", flow_loss), ("pit loss", pit_loss)) if on]
        loss_msg = ("Lost circulation: " + " and ".join(lsigns) if lsigns else "Loss signs gone") + pit_text
        self.hold = bool(kick or loss)
        return [
            Condition("kick", "kick", kick, "critical", kick_msg, {**common, "by_flow": flow_kick, "by_pit": pit_kick},
                      on_delay_s=0.0, off_delay_s=120.0),
            Condition("loss", "loss", loss if loss_known else None, "high", loss_msg,
                      {**common, "by_flow": flow_loss, "by_pit": pit_loss}, on_delay_s=0.0, off_delay_s=120.0),
        ]
