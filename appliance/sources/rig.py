"""A drilling rig in numbers: the physics behind `rigtel simulate`. Pure, no I/O.

`RigModel(seed, ...).step(dt_s)` advances rig time by `dt_s` seconds and returns one frame
of catalogue channel values in the catalogue's units (ft, ft/h, klbf, kft.lbf, rpm, psi,
spm, bbl, %, gpm, ppg, degF). The same seed, settings and sequence of steps give the
same values, whatever the wall clock does.

What the rig does, in rig time:
- drills ahead, ROP driven by WOB, RPM and the strength of the rock at the bit (layers of
  shale, sand and limestone made from the seed, harder with depth);
- makes a connection every stand (90 ft): picks up off bottom, pumps off (the surface lines
  drain back: flow-back, pit gain), slips, block up, new stand, pumps on, back to bottom;
- when `trip_every_ft` > 0, after drilling that far: circulates, trips out stand by stand
  to surface, changes the bit and trips back in, washing the last stand down to bottom.

Pit balance, per step: pit += (flow out - flow in) * dt - hole capacity * new hole
+ steel displacement * bit movement + mud transferred in or out. The flow meters do not see the
few gpm that fill new hole, so those terms are carried explicitly.

Injected events (appliance.sources.events) change the physics, each ramping in over a few
minutes: kick (influx: flow out above flow in, pit gain, gas up, SPP a little down), loss
(part of the returns lost), washout (SPP drifting down at constant flow), packoff (SPP
and torque up and erratic, overpull on pick-up, slower drilling). Sensor events act on
the output only: flatline, spike, dropout. All event randomness comes from a stream of
its own, so a run with an event is identical to the run without it until the event starts.
"""

from __future__ import annotations

import bisect
import math
import random
import zlib
from math import floor
from collections import deque
from statistics import NormalDist
from typing import Iterable

from appliance.channels import BY_MNEMONIC
from appliance.sources.events import Event

# -- the rig and the well (8.5 in hole, 5 in drill pipe) --------------------------------
STAND_FT = 90.0
BLOCK_LOW_FT = 5.0  # block height when a stand is drilled down
SLIPS_HEIGHT_FT = 10.0  # block height with the tool joint at working height above the slips
BLOCK_HIGH_FT = SLIPS_HEIGHT_FT + STAND_FT  # a new stand stabbed on the string in the slips
BLOCK_WEIGHT_KLBF = 45.0  # travelling block and top drive
PIPE_LB_FT = 22.0  # drill pipe with tool joints, in air
COLLAR_EXTRA_LB_FT = 70.0  # what the bottom-hole assembly weighs more than pipe
COLLAR_FT = 600.0
UP_DRAG = 0.12  # fraction of the buoyed string weight; rotation cuts it to a third
DOWN_DRAG = 0.10
HOLE_CAPACITY_BBL_FT = 8.5**2 / 1029.4  # 0.0702
ANNULUS_CAPACITY_BBL_FT = (8.5**2 - 5.0**2) / 1029.4  # 0.0459
STEEL_DISPLACEMENT_BBL_FT = 0.0075  # 5 in pipe, open-ended
GPM_TO_BBL_S = 1 / (42 * 60)
PUMP_GAL_PER_STROKE = 4.2  # triplex, 6 in liners, 12 in stroke, 97 % efficient
PUMPS_RUNNING = 2  # pump 3 is the standby
PADDLE_FULL_SCALE_GPM = 1500.0
FLOW_METER_CUTOFF_GPM = 3.0  # the flow-out meter reads zero below this, as real ones do
SPP_BIT_PSI_PER_GPM2 = 0.0041  # bit nozzles and surface lines, for 10 ppg mud: ∝ Q²
# friction inside the string and the annulus: turbulent, ∝ Q^1.75 (Blasius friction factor,
# Bourgoyne et al., Applied Drilling Engineering, ch. 4), so the whole standpipe pressure
# goes with Q^~1.9 as on a real rig, not Q²; the same 2,500 psi at 650 gpm as before
SPP_PIPE_FLOW_EXPONENT = 1.75
SPP_PIPE_PSI_PER_GPM_FT = 3.6e-7 * 650.0 ** (2.0 - SPP_PIPE_FLOW_EXPONENT)
SURFACE_TEMP_F = 75.0
GEOTHERMAL_F_PER_FT = 0.016
ROP_REF_FPH = 80.0  # at 25 klbf, 120 rpm, 10 kpsi rock
PIT_START_BBL = 550.0
PIT_LOW_BBL = 300.0  # below this the mud engineer transfers mud in from the reserve pits,
PIT_HIGH_BBL = 1200.0  # above this, out to them
TRANSFER_BBL = 150.0
TRANSFER_BBL_S = 10.0 / 60  # faster than the worst loss or kick, so the pit stays in range

# first-order time constants, seconds
TAU_RPM_S = 3.0
TAU_WOB_ON_S = 8.0
TAU_WOB_OFF_S = 1.5
TAU_FLOWLINE_S = 30.0  # surface lines drain back over this when the pumps stop
TAU_MUD_OUT_S = 60.0
TAU_GAS_S = 60.0
TAU_TEMP_OUT_CIRC_S = 1200.0
TAU_TEMP_OUT_STATIC_S = 2400.0
TAU_TEMP_IN_S = 5400.0

# -- events ------------------------------------------------------------------------------
RAMP_S = {"kick": 300.0, "loss": 120.0, "washout": 1800.0, "packoff": 120.0}
KICK_INFLUX_GPM = 90.0
KICK_GAS_PCT = 25.0
KICK_GAS_CUT_PPG = 0.6
LOSS_FRACTION = 0.35  # of the returns
WASHOUT_SPP_DROP = 0.25
PACKOFF_OVERPULL_KLBF = 60.0
SPIKE_EVERY_S = 20.0  # mean rig time between spikes of a spiking sensor
SPIKE_SCALE = {"DBTM": 500, "DMEA": 500, "BPOS": 40, "ROPA": 300, "HKLA": 150, "WOBA": 40,
               "TQA": 20, "RPMA": 100, "SPPA": 1500, "CHKP": 500, "SPM1": 60, "SPM2": 60,
               "SPM3": 60, "TVA": 100, "MFOP": 40, "MFOA": 500, "MFIA": 500, "MDOA": 3,
               "MDIA": 3, "MTOA": 60, "MTIA": 60, "GASA": 30}

# the frame's channels, and what each gauge resolves (1/100 or 1/10 of its unit)
CHANNELS = ("DBTM", "DMEA", "BPOS", "ROPA", "HKLA", "WOBA", "TQA", "RPMA", "SPPA", "CHKP", "SPM1",
            "SPM2", "SPM3", "TVA", "MFOP", "MFOA", "MFIA", "MDOA", "MDIA", "MTOA", "MTIA", "GASA")
RESOLUTION = (100.0, 100.0, 100.0, 10.0, 10.0, 100.0, 100.0, 10.0, 10.0, 10.0, 10.0,
              10.0, 10.0, 100.0, 10.0, 10.0, 10.0, 100.0, 100.0, 10.0, 10.0, 100.0)
# Sensor noise per frame: this many standard normals, each the inverse normal CDF of a
# uniform from the stream's own Mersenne Twister. The standard library, not numpy: the
# source is one of the appliance's resident programs and numpy alone costs it ~15 MB;
# NormalDist.inv_cdf (C in CPython) is ~7 us a frame, random.gauss three times that.
NOISE_COLUMNS = 19
_STANDARD_NORMAL = NormalDist()


class Formation:
    """Rock layers by depth, made lazily from the seed's own stream (so the same at any rate).

    at(depth_ft) gives (unconfined compressive strength in kpsi, gas factor, no unit).
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed * 7919 + 17)
        self._tops: list[float] = [0.0]
        self._layers: list[tuple[float, float]] = [self._layer(0.0)]
        self._bottom_ft = self._next_top(0.0)

    def _next_top(self, top_ft: float) -> float:
        return top_ft + self._rng.uniform(20.0, 300.0)

    def _layer(self, top_ft: float) -> tuple[float, float]:
        r, u = self._rng.random(), self._rng.random()
        compaction = 1.0 + top_ft / 20000.0
        if r < 0.5:  # shale
            return (6.0 + 6.0 * u) * compaction, 0.3 + 0.7 * u
        if r < 0.8:  # sand, where the gas is
            return (4.0 + 6.0 * u) * compaction, 1.0 + 4.0 * u
        return (15.0 + 15.0 * u) * compaction, 0.2 + 0.6 * u  # limestone

    def at(self, depth_ft: float) -> tuple[float, float]:
        while self._bottom_ft <= depth_ft:
            self._tops.append(self._bottom_ft)
            self._layers.append(self._layer(self._bottom_ft))
            self._bottom_ft = self._next_top(self._bottom_ft)
        return self._layers[bisect.bisect_right(self._tops, depth_ft) - 1]


class RigModel:
    """The rig, stepped in rig time; `step(dt_s)` returns the frame at the new time.

    Between steps, tests and the simulator may read the ground truth: `t_s` (rig seconds),
    `activity` (drilling, connection, circulating, tripping_out, surface, tripping_in),
    `in_slips`, `hole_ft`, `bit_ft`, `block_ft`, `flow_in_gpm`, `flow_out_gpm`, `pit_bbl`,
    `transferred_bbl` (mud moved in from the reserve pits, or out when negative) and
    `intensity` (0..1 per physical event kind).
    """

    def __init__(self, seed: int = 1, start_depth_ft: float = 5000.0,
                 trip_every_ft: float = 0.0, events: Iterable[Event] = ()) -> None:
        self._rng = random.Random(seed)  # the driller's choices
        self._seed = seed
        self._event_rng = random.Random(seed ^ 0x5EED)  # pack-off erratics
        self._fault_rng: dict[Event, random.Random] = {}  # each spiking sensor its own stream
        self._normals = random.Random(f"rig noise {seed}")  # str seeds are hashed: stable everywhere
        self.formation = Formation(seed)
        self.trip_every_ft = trip_every_ft

        self.t_s = 0.0
        self._t_base_s = 0.0  # t_s = base + steps * dt: no drift from adding dt again and again
        self._steps_at_dt = 0
        self.hole_ft = self.bit_ft = float(start_depth_ft)
        self.block_ft = 65.0
        self.string_ft = self.bit_ft + self.block_ft  # length hanging below the block, when latched
        self.in_slips = False
        self.activity = "drilling"
        self.mode = "drill"
        self.drilled_since_trip_ft = 0.0
        self._plan: deque[tuple] = deque()

        self._new_stand_parameters()
        self.flow_in_gpm = self.flow_set_gpm
        self.return_gpm = self.flow_in_gpm
        self.flow_out_gpm = self.flow_in_gpm
        self.rpm = self.rpm_target = self.rpm_set
        self.wob_klbf = self.wob_set_klbf
        self.rop_fph = 0.0
        self.block_speed_fps = 0.0
        self.on_bottom_drilling = True

        self.mud_ppg = self._rng.uniform(9.4, 11.0)
        self.mud_out_ppg = self.mud_ppg
        self.temp_in_f = 88.0
        self.temp_out_f = 96.0
        self.gas_pct = 0.5
        self._gas_pulses: list[tuple[float, float, float]] = []  # (peak rig s, % , width s)
        self.pit_bbl = PIT_START_BBL
        self.transferred_bbl = 0.0
        self._transfer_left_bbl = 0.0

        self.events = sorted(events, key=lambda e: e.start_s)
        self._next_event = 0
        self._active: list[Event] = []
        self._faults: list[Event] = []
        self._frozen: dict[Event, float | None] = {}
        self.intensity = {"kick": 0.0, "loss": 0.0, "washout": 0.0, "packoff": 0.0}
        self._last_out: dict[str, float] = {}
        self._dt = -1.0

    # -- across restarts ------------------------------------------------------------------

    # What a well keeps while the simulator is down: the hole, the mud in the pits and its
    # temperatures (slow, so a restart would show as a step), the footage towards the next trip.
    CARRIED = ("hole_ft", "pit_bbl", "temp_in_f", "temp_out_f", "drilled_since_trip_ft")

    def carried(self) -> dict[str, float]:
        """The well's slow state (CARRIED), for `carry_on` in a later run."""
        return {name: float(getattr(self, name)) for name in self.CARRIED}

    def carry_on(self, state: dict[str, float]) -> None:
        """Continue a well from `carried()` of an earlier run: bit back on bottom of that hole,
        drilling a fresh stand; pit, temperatures and footage as they were. Call before the
        first step; names missing from `state` keep this model's start values."""
        hole = float(state.get("hole_ft", self.hole_ft))
        if not 0.0 <= hole <= 100_000.0 or hole != hole:
            raise ValueError(f"hole_ft {hole!r} is not a depth")
        self.hole_ft = self.bit_ft = hole
        self.string_ft = self.bit_ft + self.block_ft
        for name in self.CARRIED[1:]:
            if name in state:
                setattr(self, name, float(state[name]))

    # -- the driller ---------------------------------------------------------------------

    def _new_stand_parameters(self) -> None:
        rng = self._rng
        self.wob_set_klbf = rng.uniform(18.0, 32.0)
        self.rpm_set = rng.uniform(90.0, 150.0)
        self.flow_set_gpm = rng.uniform(600.0, 700.0)

    def _bottoms_up_s(self, flow_gpm: float) -> float:
        return ANNULUS_CAPACITY_BBL_FT * self.bit_ft * 42.0 / max(flow_gpm, 1.0) * 60.0

    # The driller works through a plan: a queue of operations, each a tuple.
    #   ("drill",)                        on bottom until the stand is drilled down
    #   ("move", block_ft, ft_s)          block to a height; the bit follows unless in slips
    #   ("lower_to_bottom", ft_s)         block down until the bit tags bottom
    #   ("pumps", gpm or None, gpm_s)     ramp the pumps (None: this stand's flow rate)
    #   ("wait", s)
    #   instantaneous: ("slips", set?), ("rpm", rpm or None), ("activity", name),
    #   ("mode", drill | trip_out | trip_in), ("new_stand",), ("gas_pulse", min %, max %, width s)

    def _plan_next(self) -> None:
        """Queue the next operations when the current plan is done."""
        plan = self._plan
        if self.mode == "drill":
            if self.block_ft > BLOCK_LOW_FT + 1e-9:
                plan.append(("drill",))
            elif self.trip_every_ft > 0 and self.drilled_since_trip_ft >= self.trip_every_ft:
                self.drilled_since_trip_ft = 0.0
                plan.extend((("activity", "circulating"), ("move", SLIPS_HEIGHT_FT, 0.5),
                             ("rpm", 60.0), ("wait", 900.0), ("activity", "tripping_out"),
                             ("rpm", 0.0), ("pumps", 0.0, 40.0), ("wait", 120.0),
                             ("mode", "trip_out")))
            else:
                makeup_s = self._rng.uniform(30.0, 90.0)
                plan.extend((("activity", "connection"), ("rpm", 0.0),
                             ("move", SLIPS_HEIGHT_FT, 0.5), ("wait", 10.0),
                             ("pumps", 0.0, 40.0), ("slips", True), ("move", BLOCK_HIGH_FT, 2.0),
                             ("wait", makeup_s), ("new_stand",), ("slips", False),
                             ("pumps", None, 20.0), ("gas_pulse", 1.0, 4.0, 60.0),
                             ("rpm", None), ("lower_to_bottom", 0.5), ("activity", "drilling")))
        elif self.mode == "trip_out":
            if self.bit_ft > 1e-6:
                pull = min(STAND_FT, self.bit_ft)
                plan.extend((("move", self.block_ft + pull, 1.2), ("slips", True), ("wait", 20.0),
                             ("move", SLIPS_HEIGHT_FT, 3.0), ("wait", 20.0), ("slips", False)))
            else:
                plan.extend((("activity", "surface"), ("slips", True),
                             ("wait", self._rng.uniform(1800.0, 3600.0)),
                             ("activity", "tripping_in"), ("mode", "trip_in")))
        elif self.mode == "trip_in":
            stand = (("slips", True), ("move", BLOCK_HIGH_FT, 3.0), ("wait", 30.0), ("slips", False))
            plan.extend(stand)
            if self.bit_ft + STAND_FT >= self.hole_ft:  # this stand reaches bottom: wash it down
                plan.extend((("activity", "circulating"), ("new_stand",), ("pumps", None, 10.0),
                             ("rpm", 40.0), ("wait", 120.0), ("gas_pulse", 5.0, 15.0, 120.0),
                             ("lower_to_bottom", 0.3), ("rpm", None), ("activity", "drilling"),
                             ("mode", "drill")))
            else:
                plan.append(("move", SLIPS_HEIGHT_FT, 1.5))

    # -- mechanics: the block, the slips, the pumps ---------------------------------------

    def _advance(self, dt: float) -> None:
        """Run the plan for `dt` seconds; operations end and start inside one step."""
        left = dt
        plan = self._plan
        while left > 1e-12:
            if not plan:
                self._plan_next()
            op = plan[0]
            name = op[0]
            if name == "drill":
                used, done = self._drill(left)
            elif name == "move":
                used, done = self._move(op[1], op[2], left)
            elif name == "lower_to_bottom":
                used, done = self._move(self.string_ft - self.hole_ft, op[1], left)
            elif name == "wait":
                used, done = (op[1], True) if op[1] <= left else (left, False)
                if not done:
                    plan[0] = ("wait", op[1] - left)
            elif name == "pumps":
                target = self.flow_set_gpm if op[1] is None else op[1]
                gap = target - self.flow_in_gpm
                need = abs(gap) / op[2]
                if need <= left:
                    used, done, self.flow_in_gpm = need, True, target
                else:
                    used, done = left, False
                    self.flow_in_gpm += math.copysign(op[2] * left, gap)
            else:  # instantaneous operations
                used, done = 0.0, True
                if name == "slips":
                    self.in_slips = op[1]
                    if not op[1]:
                        self.string_ft = self.bit_ft + self.block_ft
                elif name == "rpm":
                    self.rpm_target = self.rpm_set if op[1] is None else op[1]
                elif name == "activity":
                    self.activity = op[1]
                elif name == "mode":
                    self.mode = op[1]
                elif name == "new_stand":
                    self._new_stand_parameters()
                elif name == "gas_pulse":
                    amplitude = self._rng.uniform(op[1], op[2])
                    arrival = self.t_s + (dt - left) + self._bottoms_up_s(self.flow_set_gpm)
                    self._gas_pulses.append((arrival, amplitude, op[3]))
            left -= used
            if done:
                plan.popleft()

    def _drill(self, left: float) -> tuple[float, bool]:
        """On bottom: the bit advances at the ROP until the stand is drilled down."""
        ucs, _ = self.formation.at(self.hole_ft)
        rop = (ROP_REF_FPH * (self.wob_klbf / 25.0) * (max(self.rpm, 0.0) / 120.0) ** 0.6
               * (10.0 / ucs) * (1.0 - 0.3 * self.intensity["packoff"]))
        self.rop_fph = rop
        self.on_bottom_drilling = True
        speed = rop / 3600.0
        room = self.block_ft - BLOCK_LOW_FT
        if speed <= 0.0:
            used, d, done = left, 0.0, False
        elif speed * left < room:
            used, d, done = left, speed * left, False
        else:
            used, d, done = room / speed, room, True
        self.block_ft -= d
        self.bit_ft += d
        self.hole_ft = max(self.hole_ft, self.bit_ft)
        self.drilled_since_trip_ft += d
        self.block_speed_fps = -speed
        return used, done

    def _move(self, target: float, speed: float, left: float) -> tuple[float, bool]:
        """Block towards `target` ft at `speed` ft/s; the bit follows unless in slips."""
        if not self.in_slips:
            target = max(target, self.string_ft - self.hole_ft)  # the bit stops at bottom
        gap = target - self.block_ft
        need = abs(gap) / speed
        if need <= left:
            used, done, self.block_ft = need, True, target
        else:
            used, done = left, False
            self.block_ft += math.copysign(speed * left, gap)
        if not self.in_slips:
            self.bit_ft = min(max(self.string_ft - self.block_ft, 0.0), self.hole_ft)
        self.block_speed_fps = math.copysign(speed, gap) if gap else 0.0
        self.on_bottom_drilling = False
        self.rop_fph = 0.0
        return used, done

    # -- events ------------------------------------------------------------------------------

    def _update_events(self, t: float) -> None:
        events = self.events
        t += 1e-9  # a frame stamped exactly at an event's start shows it, whatever the float error
        while self._next_event < len(events) and events[self._next_event].start_s <= t:
            ev = events[self._next_event]
            self._next_event += 1
            self._active.append(ev)
            if ev.kind == "flatline":
                self._frozen[ev] = self._last_out.get(ev.channel)
        self._active = [e for e in self._active if e.end_s > t]
        self._faults = [e for e in self._active if e.channel is not None]
        intensity = dict.fromkeys(self.intensity, 0.0)
        for e in self._active:
            if e.channel is None:
                ramp = min(RAMP_S[e.kind], e.duration_s / 2)
                intensity[e.kind] = min(1.0, intensity[e.kind] + min(1.0, (t - e.start_s) / ramp))
        self.intensity = intensity

    def _apply_faults(self, out: dict[str, float], dt: float) -> None:
        for ev in self._faults:
            ch = ev.channel
            if ev.kind == "flatline":
                frozen = self._frozen.get(ev)
                if frozen is None:
                    self._frozen[ev] = frozen = out.get(ch)
                if frozen is not None and ch in out:
                    out[ch] = frozen
            elif ev.kind == "spike":
                rng = self._fault_rng.get(ev)
                if rng is None:  # two sensors failing do not spike at the same instants
                    rng = self._fault_rng[ev] = random.Random(
                        zlib.crc32(f"{self._seed}:{ev.kind}:{ch}:{ev.start_s}".encode()))
                if ch in out and rng.random() < min(0.5, dt / SPIKE_EVERY_S):
                    c = BY_MNEMONIC[ch]
                    jump = SPIKE_SCALE[ch] * rng.uniform(0.5, 1.0)
                    v = out[ch]
                    spiked = v + jump if v + jump <= c.high else v - jump
                    out[ch] = floor(min(max(spiked, c.low), c.high) * 100.0 + 0.5) / 100.0
        for ev in self._faults:
            if ev.kind == "dropout":
                out.pop(ev.channel, None)

    # -- one step --------------------------------------------------------------------------

    def _set_dt(self, dt: float) -> None:
        self._dt = dt
        self._a = tuple(1.0 - math.exp(-dt / tau) for tau in (
            TAU_RPM_S, TAU_WOB_ON_S, TAU_WOB_OFF_S, TAU_FLOWLINE_S, TAU_MUD_OUT_S, TAU_GAS_S,
            TAU_TEMP_OUT_CIRC_S, TAU_TEMP_OUT_STATIC_S, TAU_TEMP_IN_S))

    def _noise(self) -> list[float]:
        """NOISE_COLUMNS standard normals, the next in this seed's noise stream."""
        uniform, inv_cdf = self._normals.random, _STANDARD_NORMAL.inv_cdf
        # random() is 0.0 once in 2**53 draws, where the inverse CDF is -inf
        return [inv_cdf(uniform() or 0.5) for _ in range(NOISE_COLUMNS)]

    def step(self, dt_s: float) -> dict[str, float]:
        """Advance `dt_s` rig seconds (0.001 to 10 and beyond) and return the frame at the new time."""
        dt = float(dt_s)
        if dt <= 0:
            raise ValueError(f"dt_s must be positive, not {dt_s!r}")
        if dt != self._dt:
            self._set_dt(dt)
            self._t_base_s, self._steps_at_dt = self.t_s, 0
        a_rpm, a_wob_on, a_wob_off, a_line, a_mud, a_gas, a_tcirc, a_tstat, a_tin = self._a
        bit0, hole0 = self.bit_ft, self.hole_ft
        self.block_speed_fps = 0.0
        self._advance(dt)
        self._steps_at_dt += 1
        self.t_s = t = self._t_base_s + self._steps_at_dt * dt
        if self._active or self._next_event < len(self.events):
            self._update_events(t)
        it = self.intensity
        kick, loss, wash, pack = it["kick"], it["loss"], it["washout"], it["packoff"]
        drilling = self.on_bottom_drilling
        ucs, gas_factor = self.formation.at(self.hole_ft)
        bit = self.bit_ft

        # rotary and bit
        rpm_target = 0.0 if self.in_slips else self.rpm_target
        self.rpm += (rpm_target - self.rpm) * a_rpm
        if drilling:
            self.wob_klbf += (self.wob_set_klbf - self.wob_klbf) * a_wob_on
        else:
            self.wob_klbf -= self.wob_klbf * a_wob_off
        rpm, wob = self.rpm, self.wob_klbf

        # flows and the pits
        q_in = self.flow_in_gpm
        self.return_gpm += (q_in - self.return_gpm) * a_line
        q_out = self.return_gpm * (1.0 - LOSS_FRACTION * loss) + KICK_INFLUX_GPM * kick
        self.flow_out_gpm = q_out
        pit = self.pit_bbl + ((q_out - q_in) * dt * GPM_TO_BBL_S
                              - HOLE_CAPACITY_BBL_FT * (self.hole_ft - hole0)
                              + STEEL_DISPLACEMENT_BBL_FT * (bit - bit0))
        if self._transfer_left_bbl == 0.0:
            if pit < PIT_LOW_BBL:
                self._transfer_left_bbl = TRANSFER_BBL
            elif pit > PIT_HIGH_BBL:
                self._transfer_left_bbl = -TRANSFER_BBL
        if self._transfer_left_bbl:
            left = self._transfer_left_bbl
            moved = math.copysign(min(abs(left), TRANSFER_BBL_S * dt), left)
            self._transfer_left_bbl = 0.0 if moved == left else left - moved
            self.transferred_bbl += moved
            pit += moved
        self.pit_bbl = pit

        # pressures: nozzles (∝ Q²) plus friction growing with depth (∝ Q^1.75)
        mud = self.mud_ppg
        spp = ((SPP_BIT_PSI_PER_GPM2 * q_in * q_in
                + SPP_PIPE_PSI_PER_GPM_FT * bit * q_in ** SPP_PIPE_FLOW_EXPONENT) * (mud / 10.0)) if q_in > 0.0 else 0.0
        if kick or loss or wash or pack:
            spp *= (1.0 - 0.04 * kick) * (1.0 - 0.06 * loss) * (1.0 - WASHOUT_SPP_DROP * wash)
            if pack and q_in > 0.0:
                spp *= 1.0 + 0.2 * pack
                if self._event_rng.random() < min(0.5, dt / 15.0) * pack:
                    spp += self._event_rng.uniform(300.0, 900.0) * q_in / self.flow_set_gpm

        # string weight, drag, torque
        if self.in_slips:
            hookload = BLOCK_WEIGHT_KLBF
        else:
            buoyed = ((PIPE_LB_FT * bit + COLLAR_EXTRA_LB_FT * min(bit, COLLAR_FT))
                      * (1.0 - mud / 65.5) / 1000.0)
            v = self.block_speed_fps
            drag = 0.0
            if v > 0.0:
                drag = UP_DRAG * buoyed
            elif v < 0.0 and not drilling:
                drag = -DOWN_DRAG * buoyed
            if rpm > 20.0:
                drag /= 3.0
            if v > 0.0 and pack:
                drag += PACKOFF_OVERPULL_KLBF * pack
            hookload = BLOCK_WEIGHT_KLBF + buoyed + drag - wob
        if rpm > 0.5 and not self.in_slips:
            torque = ((1.2 + 0.0009 * bit) * (0.7 + 0.3 * rpm / 120.0)
                      + 0.22 * wob * (0.8 + 0.02 * ucs)) * (1.0 + 0.6 * pack)
        else:
            torque = 0.0

        # mud out: cuttings make it heavier, gas lighter; sensors in the flowline see
        # nothing new while the pumps are off
        circulating = q_in > 100.0
        if circulating or kick:
            mud_out = mud + 0.04 * self.rop_fph / 50.0 - KICK_GAS_CUT_PPG * kick
            self.mud_out_ppg += (mud_out - self.mud_out_ppg) * a_mud
        bht = SURFACE_TEMP_F + GEOTHERMAL_F_PER_FT * bit
        t_in, t_out = self.temp_in_f, self.temp_out_f
        if circulating:
            t_out += (t_in + 0.3 * (bht - t_in) * min(1.0, q_in / 600.0) - t_out) * a_tcirc
        else:
            t_out += (t_in + 5.0 - t_out) * a_tstat
        t_in += (SURFACE_TEMP_F + 0.65 * (t_out - SURFACE_TEMP_F) - t_in) * a_tin
        self.temp_in_f, self.temp_out_f = t_in, t_out

        # total gas: background from the rock drilled, connection and trip gas at bottoms up
        if circulating:
            gas_eq = 0.3 + gas_factor * (0.4 + self.rop_fph / 80.0)
            if self._gas_pulses:
                for peak, amplitude, width in self._gas_pulses:
                    x = (t - peak) / width
                    if x > -4.0:
                        gas_eq += amplitude * math.exp(-x * x)
                self._gas_pulses = [p for p in self._gas_pulses if t < p[0] + 4.0 * p[2]]
        else:
            gas_eq = 0.2
        gas_eq += KICK_GAS_PCT * kick
        self.gas_pct += (gas_eq - self.gas_pct) * a_gas

        # the sensors: noise, clipped where a gauge cannot go, then rounded to its resolution
        z = self._noise()
        spm = q_in / (PUMPS_RUNNING * PUMP_GAL_PER_STROKE)
        if spm > 0.5:
            spm1 = floor((spm + 0.3 * z[8]) * 10.0 + 0.5) / 10.0
            spm2 = floor((spm + 0.3 * z[9]) * 10.0 + 0.5) / 10.0
        else:
            spm1 = spm2 = 0.0
        rop = self.rop_fph * (1.0 + 0.04 * z[1]) if drilling else 0.0
        tq = torque + (0.2 + 2.5 * pack) * z[4] if torque else 0.0
        rpm_gauge = rpm + 0.7 * z[5] if rpm > 0.5 else 0.0
        spp += (3.0 + 0.004 * spp) * z[6]
        chkp = 1.5 + 1.5 * z[7]
        paddle = 100.0 * q_out / PADDLE_FULL_SCALE_GPM + 0.8 * z[11]
        flow_out = q_out + (1.0 + 0.012 * q_out) * z[12]
        gas = self.gas_pct * (1.0 + 0.03 * z[17]) + 0.02 * z[18]
        values = (
            bit, self.hole_ft, self.block_ft + 0.02 * z[0], rop if rop > 0.0 else 0.0,
            hookload + 0.5 * z[2], wob + 0.35 * z[3], tq if tq > 0.0 else 0.0,
            rpm_gauge if rpm_gauge > 0.0 else 0.0, spp if spp > 0.0 else 0.0,
            chkp if chkp > 0.0 else 0.0, spm1, spm2, 0.0, pit + 0.15 * z[10],
            (paddle if paddle < 100.0 else 100.0) if paddle > 0.0 else 0.0,
            flow_out if flow_out > FLOW_METER_CUTOFF_GPM else 0.0,
            (spm1 + spm2) * PUMP_GAL_PER_STROKE,  # the rig computes flow in from the strokes
            self.mud_out_ppg + 0.015 * z[13], mud + 0.01 * z[14], t_out + 0.1 * z[15],
            t_in + 0.1 * z[16], (gas if gas < 100.0 else 100.0) if gas > 0.0 else 0.0)
        out = dict(zip(CHANNELS, [floor(v * r + 0.5) / r for v, r in zip(values, RESOLUTION)]))
        if self._faults:
            self._apply_faults(out, dt)
        self._last_out = out
        return out
