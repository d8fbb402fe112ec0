"""Washout and pack-off / stuck pipe: the standpipe pressure for the flow, torque, pick-ups.

The pressure the pumps need follows the flow (∝ Q^n, n ≈ 1.8–2) and the mud weight; the
expected pressure and one-sided CUSUMs on the deviation from it are in
appliance.predict.pressure:

- washout: the pressure adding up below the expected by more than `washout_drop_pct` %
  (the washout CUSUM reaching `pressure_alarm_pct_s`) at steady pumping — a hole in the
  string or a lost nozzle lets the mud past with less pressure. Needs SPPA and flow in
  (MFIA or strokes); MDIA is used when sent. Not judged while a kick or loss is suspected
  (both lower the pressure too). Also (pressure.RecentDrop) the pressure falling from its
  own level of the last minutes at unchanged rig state, pump rate and weight on bit (WOBA
  when sent), added up (CUSUM) or fitting a ramp from nothing (matched filter): the early
  sign of a washout starting from nothing, found within about a minute.
- pack-off: cuttings packing around the string choke the annulus and grip the pipe. Signs:
  the pressure adding up above the expected by more than `packoff_rise_pct` %; torque
  scatter (30 s) `packoff_torque_ratio` times its norm while drilling; two or more pressure
  spikes in five minutes; an overpull — hookload on a pick-up (bit moving up, string not
  turning) above the free pick-up weight by `overpull_klbf`. The free pick-up weight is
  learned on this string: afresh (over the first 20 s of free pick-up) when the bit is more
  than a stand away from where it was last learned, so a weight learned on a short string at
  the end of one trip is never held against the full string at the start of the next.
  Pack-off when the pressure rise comes with erratic torque or spikes, when erratic torque
  comes with spikes, or on an overpull. Spikes are a pack-off's pressure surges only when
  the pressure is not known to be normal for the flow (the rise CUSUM, which holds through
  connections, past half its alarm; or no trusted pressure model yet): a surging annulus raises the pressure under its surges, a
  spiking gauge does not, and erratic torque plus a faulty gauge's spikes is no pack-off.
  `explains` names the channels whose spikes the signs present account for (SPPA while the
  pressure adds up, TQA while the torque is erratic), so their sensor-fault alarm is held;
  an overpull or erratic torque never excuses the pressure gauge.
"""

from __future__ import annotations

import math
from typing import Any

from appliance.predict.alarms import Condition
from appliance.predict.derive import Inputs
from appliance.predict.params import PredictorParams
from appliance.predict.pressure import PressureModel, RecentDrop
from appliance.predict.signals import Ewma, TimeWindow

STEADY_S = 60.0
TORQUE_WINDOW_S = 30.0
TORQUE_NORM_TAU_S = 1800.0
PICKUP_TAU_S = 120.0  # of pick-up time: a few connections' worth
PICKUP_LEARN_S = 20.0  # of free pick-up learned before an overpull is judged
PICKUP_SPAN_FT = 150.0  # a pick-up weight learned further than this (over a stand) away no longer applies
MIN_TORQUE_STD = 0.5  # kft.lbf
SPIKES_WINDOW_S = 300.0
RETURNS_DOUBT = 0.5  # a flow meter this far to its kick or loss alarm: the returns disagree with flow in
RETURNS_UNSURE = 0.25  # ... this far: they may, so the fast washout test waits before it alarms


class HydraulicsWatch:
    def __init__(self, params: PredictorParams) -> None:
        self.params = params
        self.pressure = PressureModel(params.washout_drop_pct, params.packoff_rise_pct, params.pressure_alarm_pct_s)
        self.drop = RecentDrop(params.washout_fast_drop_pct)
        self.torque = TimeWindow(TORQUE_WINDOW_S)
        self.torque_norm = Ewma(TORQUE_NORM_TAU_S)
        self.pickup_norm = Ewma(PICKUP_TAU_S)
        self.pickup_s = 0.0
        self.pickup_bit_ft: float | None = None  # bit depth where the pick-up weight was last learned
        self.explains: frozenset[str] = frozenset()  # channels whose spikes pack-off signs explain now

    def update(self, inp: Inputs, v: dict[str, float], dt_s: float, flow: Any, guard: Any
               ) -> tuple[dict[str, float], list[Condition]]:
        p = self.params
        spp, q = v.get("SPPA"), inp.flow_in_gpm
        mw = v.get("MDIA", 10.0)
        steady = (spp is not None and q is not None and inp.pumps_on and not flow.transient
                  and flow.steady_s >= STEADY_S)
        ps = self.pressure.update(spp, q, mw, v.get("DBTM"), steady, bool(flow.hold), dt_s)
        change_pct = ps.residual_pct
        alarm = self.pressure.h
        # the fast test: the residual falling from its own level of the last minutes, at
        # unchanged conditions (rig state, weight on bit) and with the returns matching flow in;
        # not while the pressure is (or was until moments ago) up for the flow: the fall of a
        # pack-off's pressure back to normal is no washout (the rise CUSUM, which holds and
        # winds down, says so; the stretch starts again once it is under half its alarm)
        quiet = not flow.hold and flow.doubt < RETURNS_DOUBT and self.pressure.high < alarm / 2
        drop = self.drop.update(inp.t_s, ps.pressure_pct if ps.known else None, inp.state, v.get("WOBA"),
                                quiet, dt_s, pump_rate_pct(v, ps.flow_pct))

        # torque scatter while drilling with the string turning
        tq = v.get("TQA")
        erratic = None
        tq_std = None
        if tq is not None and inp.rotating and inp.on_bottom:
            self.torque.add(inp.t_s, tq)
            if self.torque.covered_s >= TORQUE_WINDOW_S * 0.8:
                tq_std = self.torque.std()
                norm = self.torque_norm.value
                erratic = norm is not None and tq_std >= max(p.packoff_torque_ratio * norm, MIN_TORQUE_STD)
                if not erratic:
                    self.torque_norm.update(tq_std, dt_s)
        else:
            self.torque.clear()
        spikes = guard.spike_count("SPPA", SPIKES_WINDOW_S)

        # overpull on pick-ups: bit moving up, string not turning, out of the slips
        hook = v.get("HKLA")
        overpull = None
        over_klbf = None
        if hook is not None and inp.state == "tripping_out":
            bit = v.get("DBTM")
            # the free pick-up weight is the string's weight (plus drag): it belongs to the
            # string length it was learned on. Learned at another depth (the end of the last
            # trip out, a shorter string) it says nothing about this one: learn it afresh.
            # Along a trip it follows the string getting lighter stand by stand.
            if bit is None or self.pickup_bit_ft is None or abs(bit - self.pickup_bit_ft) > PICKUP_SPAN_FT:
                self.pickup_norm = Ewma(PICKUP_TAU_S)
                self.pickup_s = 0.0
            norm = self.pickup_norm.value
            if norm is not None and self.pickup_s >= PICKUP_LEARN_S:
                over_klbf = hook - norm
                overpull = over_klbf >= p.overpull_klbf
            if not overpull:
                self.pickup_norm.update(hook, dt_s)
                self.pickup_s += dt_s
            self.pickup_bit_ft = bit  # an overpull keeps the weight it is judged against

        rise = ps.known and ps.high >= alarm
        # the rise CUSUM holds through connections and pump changes (ps.known is False then),
        # so once the model is trusted it still says whether the pressure was adding up
        trusted = self.pressure.level is not None and self.pressure.learned_s >= self.pressure.warmup_s
        pressure_up = trusted and ps.high >= alarm / 2
        # spikes are surges only over a pressure that is (or may be) up: a pack-off's surges
        # ride on the choked annulus's rise, a faulty gauge's spikes on a normal pressure
        surges = spikes >= 2 and (pressure_up or not trusted)
        packoff = (rise and (bool(erratic) or surges)) or (bool(erratic) and surges) or bool(overpull)
        self.explains = frozenset(ch for ch, on in (("SPPA", pressure_up), ("TQA", bool(erratic))) if on)
        explained = "kick or loss suspected" if flow.hold else None
        # an early kick lowers the pressure as fast as an early washout (the simulator's: 0.8 %
        # a minute) while the flow meters are still adding it up: with a meter a quarter of
        # the way to its alarm the fast test waits (the kick alarm, when it comes, suppresses
        # the washout alarm as its consequence)
        fast = drop.falling and flow.doubt < RETURNS_UNSURE
        washout = ps.known and (ps.low >= alarm or fast)
        evidence = {
            "spp_psi": round(spp, 1) if spp is not None else None,
            "expected_spp_psi": round(ps.expected_psi, 1) if ps.expected_psi is not None else None,
            "flow_in_gpm": round(q, 1) if q is not None else None, "flow_in_from": inp.flow_in_from,
            "mud_weight_ppg": mw if "MDIA" in v else None,
            "spp_vs_expected_pct": round(change_pct, 2) if change_pct is not None else None,
            "flow_exponent": round(ps.exponent, 3),
            "washout_cusum_pct_s": round(ps.low, 1), "rise_cusum_pct_s": round(ps.high, 1),
            "cusum_alarm_pct_s": alarm, "allowance_pct": round(ps.allowance_pct, 2),
            "rig_state": inp.state,
        }
        wash_evidence = {**evidence, "falling_from_recent": fast,
                         "below_recent_pct": round(drop.drop_pct, 2) if drop.drop_pct is not None else None,
                         "fast_cusum_pct": round(drop.cusum, 2), "fast_alarm_pct": round(drop.alarm, 2),
                         "fast_allowance_pct": round(drop.allowance_pct, 2),
                         "ramp_z": round(drop.ramp_z, 2), "ramp_alarm_z": drop.ramp_alarm,
                         "ramp_s": round(drop.ramp_s), "ramp_pct_min": round(drop.ramp_pct_min, 2)}
        relied = [x for x in ("SPPA", inp.flow_in_from, "MDIA" if "MDIA" in v else None) if x]
        pack_evidence = {**evidence, "pressure_rise": rise, "torque_std": round(tq_std, 3) if tq_std is not None else None,
                         "torque_norm_std": round(self.torque_norm.value, 3) if self.torque_norm.value is not None else None,
                         "torque_erratic": erratic, "spp_spikes_5min": spikes,
                         "hookload_klbf": hook, "overpull_klbf": round(over_klbf, 1) if over_klbf is not None else None,
                         "relied_on": relied + [x for x in ("TQA", "HKLA") if x in v]}
        signs = [s for s, on in (("pressure up for the flow", rise), ("erratic torque", erratic),
                                 (f"{spikes} pressure surges", surges), ("overpull on pick-up", overpull)) if on]
        wash_known = ps.known
        pack_known = ps.known or erratic is not None or overpull is not None
        slow: dict[str, float] = {}
        if change_pct is not None:
            slow["SPPDEV"] = round(change_pct, 2)
        return slow, [
            Condition("washout", "washout", washout if wash_known else None, "medium",
                      f"Possible washout: standpipe pressure {change_pct:+.1f} % against the expected for the flow "
                      f"({spp - ps.expected_psi:+.0f} psi) at steady pumping"
                      + ((f", falling {drop.ramp_pct_min:.1f} % a minute for the last {drop.ramp_s:.0f} s"
                          if drop.cusum < drop.alarm else
                          f", falling: {drop.drop_pct:.1f} % below its level of the last minutes") if fast else "")
                      if change_pct is not None and spp is not None and ps.expected_psi is not None
                      else "Washout signs gone",
                      {**wash_evidence, "relied_on": relied + (["WOBA"] if fast and "WOBA" in v else [])},
                      suppressed=explained, on_delay_s=0.0, off_delay_s=300.0),
            Condition("packoff", "packoff", packoff if pack_known else None, "high",
                      "Pack-off / stuck pipe risk: " + (", ".join(signs) if signs else "signs gone"),
                      pack_evidence, on_delay_s=10.0, off_delay_s=120.0),
        ]


def pump_rate_pct(v: dict[str, float], flow_pct: float | None) -> float | None:
    """The pump rate the fast washout test holds its comparison to, 100·ln: the strokes
    (SPM1+SPM2+SPM3) when sent, since the pressure follows the pumps themselves and a
    stroke counter does not wander as a flow-in meter may (a meter's slow wander would
    restart the comparison again and again); else flow in as the pressure model took it."""
    spm = 0.0
    for k in ("SPM1", "SPM2", "SPM3"):
        x = v.get(k)
        if x is not None:
            spm += x
    return 100.0 * math.log(spm) if spm > 0.0 else flow_pct
