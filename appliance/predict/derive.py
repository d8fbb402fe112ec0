"""Per-sample drilling mechanics: which inputs stand for what, rig state, ROP, MSE, ECD.

Real rigs rarely send every channel, so each quantity names where it came from:

- flow in: `MFIA`, else the pump strokes (`SPM1`+`SPM2`+`SPM3`) times `pump_output_gal_stroke`;
- pumps on: flow in above `pumps_on_gpm`, else strokes above `pumps_on_spm`, else standpipe
  pressure above `pumps_on_psi`;
- hole depth: `DMEA`, else the deepest bit depth seen;
- bit movement: the speed of `DBTM`, else the block (`BPOS`) moving with the string out of
  the slips;
- in slips: hookload below `block_weight_klbf` + `slips_margin_klbf`, else the block moving
  while the bit does not;
- ROP: `ROPA`, else the speed of the hole depth over the last minute on bottom (`ROPC`).

Derived channels (catalogue units): RIGSTATE (code, see states.py), ONBOTTOM (1/0),
ROPC (ft/h, only when the source sends no ROPA), MSE (psi, Teale:
WOB/A + 120·π·RPM·T/(A·ROP), WOB lbf, T ft·lbf, A in², ROP ft/h), ECD (ppg, from a
downhole annular pressure `APWD` and the bit depth taken as vertical depth).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from appliance.predict.params import PredictorParams
from appliance.predict.signals import Speed
from appliance.predict.states import CODE, DRILLING, Observation, classify

ROP_WINDOW_S = 60.0
SPEED_WINDOW_S = 5.0
ROPA_STALE_S = 30.0
MSE_MIN_ROP_FPH = 1.0
MSE_MAX_PSI = 1_000_000.0


class Inputs(NamedTuple):
    """The moment as the detectors see it: the quantities and where each came from."""

    t_s: float
    state: str
    flow_in_gpm: float | None
    flow_in_from: str | None
    pumps_on: bool | None
    pumps_from: str | None
    rotating: bool | None
    on_bottom: bool | None
    hole_ft: float | None
    bit_ft: float | None
    bit_speed_ft_s: float | None
    rop_fph: float | None
    rop_from: str | None


class Mechanics:
    def __init__(self, params: PredictorParams) -> None:
        self.params = params
        self.bit_area_in2 = math.pi / 4.0 * params.bit_size_in ** 2
        self.bit_speed = Speed(SPEED_WINDOW_S)
        self.block_speed = Speed(SPEED_WINDOW_S)
        self.hole_speed = Speed(ROP_WINDOW_S)
        self.deepest_bit_ft: float | None = None
        self.ropa_seen_s: float | None = None
        self.last_bit_t: float | None = None
        self.inputs: Inputs | None = None

    def flow_in(self, v: dict[str, float]) -> tuple[float | None, str | None]:
        q = v.get("MFIA")
        if q is not None:
            return q, "MFIA"
        strokes = [k for k in ("SPM1", "SPM2", "SPM3") if k in v]
        if strokes:
            return sum(v[k] for k in strokes) * self.params.pump_output_gal_stroke, "+".join(strokes)
        return None, None

    def step(self, t_s: float, v: dict[str, float]) -> tuple[Inputs, dict[str, float]]:
        """Inputs and derived channels for one moment; `v` holds the trusted latest values."""
        p = self.params
        q_in, q_from = self.flow_in(v)
        if q_in is not None:
            pumps_on, pumps_from = q_in > p.pumps_on_gpm, q_from
        elif "SPPA" in v:
            pumps_on, pumps_from = v["SPPA"] > p.pumps_on_psi, "SPPA"
        else:
            pumps_on = pumps_from = None
        rpm = v.get("RPMA")
        rotating = rpm > p.rotating_rpm if rpm is not None else None

        bit = v.get("DBTM")
        bit_speed = None
        if bit is not None:
            bit_speed = self.bit_speed.add(t_s, bit)
        block = v.get("BPOS")
        block_speed = self.block_speed.add(t_s, block) if block is not None else None

        hook = v.get("HKLA")
        if hook is not None:
            in_slips: bool | None = hook < p.block_weight_klbf + p.slips_margin_klbf
        elif block_speed is not None and bit_speed is not None:
            in_slips = abs(block_speed) >= p.moving_ft_s and abs(bit_speed) < p.moving_ft_s / 5
        else:
            in_slips = None
        if bit_speed is None and block_speed is not None and in_slips is False:
            bit_speed = -block_speed

        hole = v.get("DMEA")
        if bit is not None and not in_slips:
            self.deepest_bit_ft = bit if self.deepest_bit_ft is None else max(self.deepest_bit_ft, bit)
        if hole is None:
            hole = self.deepest_bit_ft
        on_bottom = (hole - bit <= p.on_bottom_ft) if hole is not None and bit is not None else None
        if in_slips:
            on_bottom = False

        obs = Observation(on_bottom, pumps_on, rotating, bit_speed, in_slips)
        state = classify(obs, p.moving_ft_s)

        derived: dict[str, float] = {"RIGSTATE": float(CODE[state])}
        if on_bottom is not None:
            derived["ONBOTTOM"] = 1.0 if on_bottom else 0.0
        # ROP: the source's, else from the hole depth on bottom
        rop, rop_from = None, None
        if "ROPA" in v:
            self.ropa_seen_s = t_s
            rop, rop_from = v["ROPA"], "ROPA"
        hole_rate = self.hole_speed.add(t_s, hole) if hole is not None else None
        if rop is None and (self.ropa_seen_s is None or t_s - self.ropa_seen_s > ROPA_STALE_S):
            if hole_rate is not None:
                rop = max(hole_rate, 0.0) * 3600.0 if state in DRILLING else 0.0
                rop_from = "DMEA" if "DMEA" in v else "DBTM"
                derived["ROPC"] = round(min(rop, 2000.0), 2)
        # MSE while drilling
        wob, tq = v.get("WOBA"), v.get("TQA")
        if state in DRILLING and wob is not None and rop is not None and rop >= MSE_MIN_ROP_FPH:
            a = self.bit_area_in2
            mse = max(wob, 0.0) * 1000.0 / a
            if rpm is not None and tq is not None:
                mse += 120.0 * math.pi * rpm * tq * 1000.0 / (a * rop)
            derived["MSE"] = round(min(mse, MSE_MAX_PSI), 1)
        # ECD from a downhole annular pressure, when the rig sends one
        apwd = v.get("APWD")
        if apwd is not None and bit is not None and bit > 100.0:
            derived["ECD"] = round(apwd / (0.052 * bit), 3)

        self.inputs = Inputs(t_s, state, q_in, q_from, pumps_on, pumps_from, rotating, on_bottom,
                             hole, bit, bit_speed, rop, rop_from)
        return self.inputs, derived
