"""Sensor checks on raw samples: out of range, spikes, flatlines and dropouts.

`SensorGuard.clean(t_s, values)` returns the values the detectors may trust: a value
outside the catalogue's plausible range is dropped; a sudden jump is held back one sample
and dropped if the next sample comes back (a spike) — a jump that stays is a real step
and passes one sample late, the channel's scatter learned afresh after it (a torque at
rest reads a steady zero, turning it scatters); a spike counts only when it comes back,
the next sample undoing most of the jump. A channel frozen on one non-zero value for a
few seconds after moving all along is left out while suspect. Detectors therefore see a missing channel rather
than a wrong one, and use a substitute where they have one.

`conditions(t_s)` reports the sensor-fault alarms. A channel that never arrived is never
a fault; only one that was arriving and stopped (dropout), froze (flatline), jumps
(spike) or reads the impossible (out of range). Channels outside the catalogue (an
integrator's own, whose behaviour is unknown) are only watched for dropouts.
"""

from __future__ import annotations

from collections import deque
from typing import Container

from appliance.channels import BY_MNEMONIC
from appliance.predict.alarms import Condition
from appliance.predict.params import PUMP_CHANNELS, PredictorParams

# channels that legitimately hold still for hours: never called flatlined
STATIC_CHANNELS = frozenset({"DBTM", "DMEA", "BPOS", "SPM3", "MDIA", "ROPA"})
SPIKE_K = 12.0  # a jump this many times the channel's typical sample-to-sample change ...
SPIKE_FLOOR_FRACTION = 0.002  # ... and at least this fraction of its plausible range
SPIKE_RETURN = 0.5  # the sample after a spike is back within this fraction of the jump
# a gross spike: one sample off by this many times the channel's typical change (twice what
# makes a spike) and by this fraction of its plausible range — a pressure gauge reading 300 psi
# or more off for one second and back, a hookload 50 klbf. Nothing the process does looks
# like that twice in minutes; `spike_gross_count` of them make the alarm, fewer than the
# `spike_count` of ordinary spikes (real transients at a slow recorder's sampling, a string
# bumping in the slips, reach 12 times the scatter but seldom this)
SPIKE_GROSS_K = 24.0
SPIKE_GROSS_FRACTION = 0.02
WARMUP_SAMPLES = 10
SUSPECT_SAMPLES = 5
SUSPECT_S = 3.0
FLATLINE_SAMPLES = 20  # and flatline_s: a slow recorder needs longer than a fast one
MOVING = 0.5  # fraction of samples that changed, before a freeze, for a channel that moves
RANGE_HOLD_S = 60.0
RANGE_SLACK = 0.001  # of the plausible span: this close outside is read as the limit itself


class ChannelState:
    __slots__ = ("first_s", "last_s", "seen", "last_raw", "run_start_s", "run_len", "change_rate",
                 "moving_before", "accepted", "masd", "candidate", "spikes", "range_s", "range_value",
                 "floor", "rest", "judged", "learn_until", "undo", "learning")

    def __init__(self, t_s: float, floor: float) -> None:
        self.first_s = self.last_s = t_s
        self.seen = 0
        self.last_raw: float | None = None
        self.run_start_s = t_s
        self.run_len = 0
        self.change_rate = 0.0  # EWMA over samples of "changed since the previous sample"
        self.moving_before = 0.0
        self.accepted: float | None = None  # last value passed on
        self.masd = 0.0  # mean absolute successive difference of accepted values
        self.candidate: float | None = None  # a jump held back for one sample
        self.spikes: deque[tuple[float, bool]] = deque()  # (time, gross) of each spike counted
        self.range_s: float | None = None
        self.range_value = 0.0
        self.floor = floor
        self.rest = floor / 10  # closer to zero than this: at rest (a torque of 0.001 is no torque)
        self.judged = floor > 0  # catalogue channels; an integrator's own are only watched for dropouts
        self.learn_until = WARMUP_SAMPLES  # up to this many samples seen, the scatter is being learned
        # a step just passed on: (sample number it passed at, value, scatter and learn_until
        # before it), so that a return on the next sample can undo it as two spikes
        self.undo: tuple[int, float, float, int] | None = None
        self.learning: list[float] = []  # successive differences seen while learning the scatter


class SensorGuard:
    def __init__(self, params: PredictorParams) -> None:
        self.params = params
        self.channels: dict[str, ChannelState] = {}
        self.t_s = 0.0

    def clean(self, t_s: float, values: dict[str, float]) -> dict[str, float]:
        self.t_s = t_s
        out: dict[str, float] = {}
        channels = self.channels
        for name, x in values.items():
            st = channels.get(name)
            if st is None:
                c = BY_MNEMONIC.get(name)
                floor = SPIKE_FLOOR_FRACTION * (c.high - c.low) if c is not None else 0.0
                st = channels[name] = ChannelState(t_s, floor)
            if x != x or x in (float("inf"), float("-inf")):
                continue
            st.last_s = t_s  # it arrives, even when what it says cannot be used
            c = BY_MNEMONIC.get(name)
            if c is not None and not (c.low <= x <= c.high):
                slack = RANGE_SLACK * (c.high - c.low)
                if not (c.low - slack <= x <= c.high + slack):
                    st.range_s, st.range_value = t_s, x
                    continue
                x = min(max(x, c.low), c.high)  # a bit 2 ft above the rotary table is at surface
            st.seen += 1
            # flatline bookkeeping on the raw value
            if x == st.last_raw:
                st.run_len += 1
            else:
                st.moving_before = st.change_rate  # how lively it was before this run
                st.run_start_s, st.run_len = t_s, 1
            st.change_rate += ((x != st.last_raw) - st.change_rate) * 0.05
            st.last_raw = x
            if not st.judged:  # an integrator's own channel: what is odd for it is unknown
                st.accepted = x
                out[name] = x
                continue
            if (st.run_len >= SUSPECT_SAMPLES and t_s - st.run_start_s >= SUSPECT_S
                    and st.moving_before > MOVING and abs(x) > st.rest and name not in STATIC_CHANNELS):
                continue  # suspect: frozen after moving
            # spikes
            prev = st.accepted
            undo, st.undo = st.undo, None
            if undo is not None and prev is not None and st.seen == undo[0] + 1:
                # the sample after a step: back where it was before? Then the "step" was two
                # spikes on consecutive samples (a gauge spiking every few seconds does that),
                # not a change of level: count both, and judge on with the scatter from before
                # (relearning it would leave the next 10 samples unchecked)
                before, masd, learn_until = undo[1], undo[2], undo[3]
                limit = max(SPIKE_K * masd, st.floor)
                if abs(x - before) <= limit and abs(x - before) <= SPIKE_RETURN * abs(prev - before):
                    # two spikes for the count of ordinary ones, but one glitch for the
                    # gross count: a single two-second excursion is no failing gauge
                    st.spikes.append((t_s, self._gross(st, abs(prev - before), masd)))
                    st.spikes.append((t_s, False))
                    st.masd, st.learn_until = masd, learn_until
                    st.learning = []
                    st.accepted = x
                    out[name] = x
                    continue
            if prev is None or st.seen <= st.learn_until:
                if prev is not None:
                    # the median of the differences so far, not their mean: spikes of a failing
                    # gauge inside the learning window (after the pumps stop, say) must not teach
                    # it a scatter so wide that every later spike passes under 12 times it
                    st.learning.append(abs(x - prev))
                    st.masd = sorted(st.learning)[len(st.learning) // 2]
                    if st.seen >= st.learn_until:
                        st.learning = []
                st.accepted = x
                out[name] = x
                continue
            limit = max(SPIKE_K * st.masd, st.floor)
            cand = st.candidate
            if cand is not None:
                st.candidate = None
                if abs(x - prev) <= limit:  # no step: the held sample goes back out
                    # a spike goes and comes back: only when the sample after it undoes most
                    # of the jump; one that sits between the two, or past the start on the
                    # other side, is the channel's own scatter
                    if abs(x - prev) <= SPIKE_RETURN * abs(cand - prev):
                        st.spikes.append((t_s, self._gross(st, abs(cand - prev), st.masd)))
                else:  # it stayed: a step, which is no spike; pass it on. A step often
                    # changes how the channel moves (a torque at rest reads a steady zero,
                    # turning it scatters), so the scatter learned before it no longer
                    # says what a jump is: learn it afresh, as after the first sample.
                    st.undo = (st.seen, prev, st.masd, st.learn_until)
                    st.masd = 0.0
                    st.learning = []
                    st.learn_until = st.seen + WARMUP_SAMPLES
                    st.accepted = x
                    out[name] = x
                    continue
            elif abs(x - prev) > limit:
                st.candidate = x
                continue
            d = abs(x - prev)
            st.masd += (min(d, max(3.0 * st.masd, st.floor)) - st.masd) * 0.05
            st.accepted = x
            out[name] = x
        return out

    @staticmethod
    def _gross(st: ChannelState, jump: float, masd: float) -> bool:
        """A spike far beyond what the channel does: SPIKE_GROSS_K times its scatter and
        SPIKE_GROSS_FRACTION of its plausible range (st.floor is SPIKE_FLOOR_FRACTION of it)."""
        return jump >= SPIKE_GROSS_K * masd and jump >= st.floor * (SPIKE_GROSS_FRACTION / SPIKE_FLOOR_FRACTION)

    def spike_count(self, name: str, window_s: float) -> int:
        st = self.channels.get(name)
        if st is None:
            return 0
        cut = self.t_s - window_s
        return sum(1 for s, _ in st.spikes if s >= cut)

    def conditions(self, t_s: float, pumps_on: bool | None, excused: frozenset[str] = frozenset(),
                   known: Container[str] | None = None) -> list[Condition]:
        """Sensor-fault conditions now. `excused`: channels whose odd behaviour another
        alarm explains (pressure surges of a pack-off are not a broken gauge). `known`:
        alarm ids that have a record; an inactive condition of any other id is left out
        (it would change nothing), which keeps this cheap with many channels."""
        p = self.params
        out: list[Condition] = []
        every = known is None
        pumps_off = "pumps off" if pumps_on is False else None
        for name, st in list(self.channels.items()):
            unit = BY_MNEMONIC[name].unit if name in BY_MNEMONIC else ""
            pump_channel = name in PUMP_CHANNELS
            # dropout
            silent_s = t_s - st.last_s
            if st.seen >= 10 and silent_s >= p.dropout_forget_s:
                out.append(Condition(f"sensor.dropout.{name}", "sensor_fault", False, "low", "", {
                    "cleared": f"no data for {silent_s / 3600:.1f} h: no longer expected"}, name))
                del self.channels[name]
                continue
            dropped = st.seen >= 10 and silent_s >= p.dropout_s
            if dropped or every or f"sensor.dropout.{name}" in known:
                out.append(Condition(
                f"sensor.dropout.{name}", "sensor_fault", dropped, "low",
                f"{name}: no data for {silent_s:.0f} s while other channels arrive",
                {"fault": "dropout", "channel": name, "silent_s": round(silent_s, 1),
                 "last_seen_ms": round(st.last_s * 1000)}, name, on_delay_s=0.0, off_delay_s=5.0))
            # flatline
            frozen_s = t_s - st.run_start_s if st.last_raw is not None else 0.0
            flat = (not dropped and st.judged and st.run_len >= FLATLINE_SAMPLES and frozen_s >= p.flatline_s
                    and st.moving_before > MOVING and abs(st.last_raw or 0.0) > st.rest
                    and name not in STATIC_CHANNELS)
            if flat or every or f"sensor.flatline.{name}" in known:
                out.append(Condition(
                f"sensor.flatline.{name}", "sensor_fault", flat, "low",
                f"{name}: stuck at {st.last_raw:g} {unit} for {frozen_s:.0f} s after moving before",
                {"fault": "flatline", "channel": name, "value": st.last_raw, "frozen_s": round(frozen_s, 1),
                 "samples": st.run_len}, name,
                suppressed=pumps_off if pump_channel else None, on_delay_s=0.0, off_delay_s=10.0))
            # spikes
            cut = t_s - p.spike_window_s
            while st.spikes and st.spikes[0][0] < cut:
                st.spikes.popleft()
            n = len(st.spikes) if st.judged else 0
            n_gross = sum(1 for _, g in st.spikes if g) if n else 0
            spiking = n >= p.spike_count or n_gross >= p.spike_gross_count
            if spiking or every or f"sensor.spike.{name}" in known:
                out.append(Condition(
                f"sensor.spike.{name}", "sensor_fault", spiking, "low",
                f"{name}: {n} single-sample spikes in {p.spike_window_s / 60:g} min"
                + (f" ({n_gross} gross)" if n_gross else ""),
                {"fault": "spike", "channel": name, "spikes": n, "gross_spikes": n_gross,
                 "window_s": p.spike_window_s},
                name, suppressed="explained by another alarm" if name in excused else None,
                on_delay_s=0.0, off_delay_s=60.0))
            # out of range
            bad = st.range_s is not None and t_s - st.range_s <= RANGE_HOLD_S
            c = BY_MNEMONIC.get(name)
            if bad or every or f"sensor.range.{name}" in known:
                out.append(Condition(
                f"sensor.range.{name}", "sensor_fault", bad, "low",
                f"{name}: read {st.range_value:g} {unit}, outside {c.low:g}..{c.high:g}" if c else "",
                {"fault": "out_of_range", "channel": name, "value": st.range_value}, name,
                on_delay_s=0.0, off_delay_s=0.0))
        return out

    def suspect(self, name: str) -> bool:
        st = self.channels.get(name)
        return st is not None and st.last_raw is not None and st.run_len >= SUSPECT_SAMPLES \
            and self.t_s - st.run_start_s >= SUSPECT_S and st.moving_before > MOVING \
            and abs(st.last_raw) > st.rest and name not in STATIC_CHANNELS
