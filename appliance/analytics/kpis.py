"""Performance KPIs: connections, trips, ROP per stand, time by activity and by rig state, and
non-productive stretches.

Where the predictor ran, its rig state (the derived channel RIGSTATE, stored by the saver)
says which samples are drilling and which are in the slips, and `time_by_rig_state` gives
the hours per state; depths, trips and the rest still come from the raw channels. The
predictor's state is used when it covers at least MIN_STATE_COVERAGE of the range's
samples (a state counts for a sample up to STATE_HOLD_S after it was published);
otherwise, and for ranges from before the predictor ran, every sample is classified here by simple,
physically grounded rules on bit depth (DBTM), hole depth (DMEA), hookload (HKLA), flow in
(MFIA, or pump strokes SPM1-3) and rotary speed (RPMA). Every answer says it is an estimate,
and a KPI that a missing channel makes impossible is named in `missing` with the reason;
nothing is filled in. Thresholds are the module constants below (settings come with the
predictor). Everything but `load` and `kpis_for_range` is pure: arrays in, data out.

Rules, in order of precedence per sample:
- drilling: bit within ON_BOTTOM_FT of hole depth and the hole deeper than it was
  HOLE_PROGRESS_WINDOW_S earlier;
- in slips: hookload near the empty-block level (below SLIPS_FRACTION of the way from the
  empty block to the hanging string, both estimated from the range's hookload
  percentiles), bit depth not changing, no rotation, for at least SLIPS_MIN_S;
- connection: an in-slips period with the bit within CONNECTION_OFF_BOTTOM_FT of bottom and
  new hole drilled since the previous in-slips period (slip to slip); as an activity it
  spans weight to weight (last drilling sample before to first one after) when that is
  shorter than WEIGHT_TO_WEIGHT_MAX_S;
- tripping in / out: off bottom and deeper than a stand, the bit moved TRIP_MIN_MOVE_FT or
  more the same way both in the TRIP_WINDOW_S before the sample and in the TRIP_WINDOW_S
  after it (a window longer than a stand's slips time, so those count as tripping), extended
  to where the bit last stood before and first came to rest after; bit-depth jumps faster
  than MAX_BIT_SPEED_FT_S (depth resets) are not movement;
- circulating: pumps on, none of the above; other: the rest (idle, surface handling, ...).

Caveats: with the bit near surface a hanging string weighs about what the empty block
does, so slips there are indistinguishable from hanging; a connection made with the bit
more than half a stand off bottom (after back-reaming a whole stand) is not counted; the
empty-block level is taken from the range itself, so a range with no slips at all (or only
the bit at surface) finds none rather than guessing; washing or reaming in with the pumps on
counts as tripping in when it moves the bit fast enough.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np

from appliance.store import read

SOURCE = "estimated from raw channels (predictor not running)"
PREDICTOR_SOURCE = "the predictor's rig state (RIGSTATE), depths from raw channels"
MIN_STATE_COVERAGE = 0.9
STATE_HOLD_S = 10.0

STAND_FT = 90.0  # a stand of three joints
ON_BOTTOM_FT = 1.0  # bit this close to hole depth is on bottom
CONNECTION_OFF_BOTTOM_FT = 45.0  # connections are set in the slips within half a stand of bottom
TRIP_OFF_BOTTOM_FT = STAND_FT  # tripping speed counts only movement more than a stand off bottom
HOLE_PROGRESS_WINDOW_S = 120.0  # "the hole is getting deeper" is judged over this
HOLE_PROGRESS_FT = 0.05  # ... by at least this (1.5 ft/h over the window)
SLIPS_FRACTION = 0.3  # in slips below empty block + this fraction of (hanging - empty block)
BLOCK_PERCENTILE = 1.0  # hookload percentile taken as the empty block (the slips level), klbf
HANGING_PERCENTILE = 95.0  # hookload percentile taken as the hanging string, klbf
MIN_SLIPS_CONTRAST_KLBF = 15.0  # below this spread the range holds no in-slips level
BIT_STILL_FT_S = 0.1  # bit depth changing slower than this counts as not moving
MAX_BIT_SPEED_FT_S = 15.0  # a faster change of bit depth is a depth reset or a glitch, not movement
SLIPS_MAX_RPM = 5.0  # a string in the slips does not turn
SLIPS_MIN_S = 10.0  # shorter low-hookload dips are not slips
PUMPS_ON_GPM = 100.0  # flow in above this: circulating
PUMPS_ON_SPM = 10.0  # total pump strokes above this, when there is no flow-in channel
TRIP_WINDOW_S = 600.0  # tripping: the bit moved within this long before the sample and after it,
TRIP_MIN_MOVE_FT = 20.0  # by at least this each way, in the same direction (120 ft/h at the least)
TRIP_MIN_FT = STAND_FT  # a trip moves the bit at least a stand
WEIGHT_TO_WEIGHT_MAX_S = 3600.0  # a longer break around the slips is not just a connection
MAX_SAMPLE_GAP_S = 120.0  # a longer gap between samples is counted as no data
NPT_MIN_S = 900.0  # idle or circulating longer than this is listed as possible downtime
MIN_STAND_DRILLED_FT = 1.0  # stands with less new hole are not listed
MAX_RANGE_MS = 7 * 86_400_000
MAX_ROWS = 1_000_000

CHANNELS = ("DBTM", "DMEA", "HKLA", "MFIA", "SPM1", "SPM2", "SPM3", "RPMA", "RIGSTATE")
ACTIVITIES = ("drilling", "connection", "tripping_in", "tripping_out", "circulating", "other")
DRILLING, CONNECTION, TRIP_IN, TRIP_OUT, CIRCULATING, OTHER = range(len(ACTIVITIES))


# -- small array tools ------------------------------------------------------------------


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs, stop exclusive, of every run of True in `mask`."""
    m = np.concatenate(([False], np.asarray(mask, dtype=bool), [False]))
    edges = np.flatnonzero(m[1:] != m[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def fill(values: np.ndarray) -> np.ndarray | None:
    """Forward-fill NaNs (leading ones from the first value); None when there is no value."""
    v = np.asarray(values, dtype=float)
    ok = ~np.isnan(v)
    if not ok.any():
        return None
    idx = np.where(ok, np.arange(len(v)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = v[idx]
    out[: int(np.argmax(ok))] = v[int(np.argmax(ok))]
    return out


def sample_durations_s(ts_ms: np.ndarray, end_ms: float) -> np.ndarray:
    """Seconds each sample stands for: until the next one, a long gap counted as one nominal step."""
    ts = np.asarray(ts_ms, dtype=float)
    if len(ts) == 0:
        return np.zeros(0)
    gaps = np.diff(np.append(ts, max(end_ms, ts[-1]))) / 1000.0
    nominal = float(np.median(gaps[:-1])) if len(gaps) > 1 else 1.0
    nominal = min(max(nominal, 0.001), MAX_SAMPLE_GAP_S)
    gaps[-1] = min(gaps[-1], nominal)
    return np.where(gaps > MAX_SAMPLE_GAP_S, nominal, gaps)


def at_offset(ts_ms: np.ndarray, offset_s: float) -> np.ndarray:
    """Index of the last sample at or before ts + offset (clipped to the data)."""
    j = np.searchsorted(ts_ms, ts_ms + offset_s * 1000.0, side="right") - 1
    return np.clip(j, 0, len(ts_ms) - 1)


# -- the rules ----------------------------------------------------------------------------


def bit_path_ft(ts_ms: np.ndarray, bit_ft: np.ndarray) -> tuple[np.ndarray, int]:
    """Cumulative bit movement (ft, deeper positive) leaving out jumps faster than
    MAX_BIT_SPEED_FT_S, and how many such jumps there were."""
    step = np.diff(bit_ft)
    jump = np.abs(step) > MAX_BIT_SPEED_FT_S * np.maximum(np.diff(ts_ms) / 1000.0, 1e-3)
    return np.concatenate(([0.0], np.cumsum(np.where(jump, 0.0, step)))), int(jump.sum())


def drilling_mask(ts_ms: np.ndarray, bit_ft: np.ndarray, hole_ft: np.ndarray) -> np.ndarray:
    """On bottom and making hole."""
    before = at_offset(ts_ms, -HOLE_PROGRESS_WINDOW_S)
    return ((hole_ft - bit_ft) <= ON_BOTTOM_FT) & ((hole_ft - hole_ft[before]) >= HOLE_PROGRESS_FT)


def pumps_on_mask(channels: dict[str, np.ndarray]) -> np.ndarray | None:
    """Pumps running, from flow in (gpm) or else the pump stroke rates (spm); None without either."""
    flow = fill(channels["MFIA"]) if "MFIA" in channels else None
    if flow is not None:
        return flow > PUMPS_ON_GPM
    strokes = [s for s in (fill(channels[n]) for n in ("SPM1", "SPM2", "SPM3") if n in channels) if s is not None]
    if strokes:
        return np.sum(strokes, axis=0) > PUMPS_ON_SPM
    return None


def slips_threshold_klbf(hookload_klbf: np.ndarray) -> float | None:
    """The hookload below which the string is in the slips, or None when the range shows no slips level."""
    block = float(np.percentile(hookload_klbf, BLOCK_PERCENTILE))
    hanging = float(np.percentile(hookload_klbf, HANGING_PERCENTILE))
    if hanging - block < MIN_SLIPS_CONTRAST_KLBF:
        return None
    return block + SLIPS_FRACTION * (hanging - block)


def predictor_states(ts_ms: np.ndarray, channels: dict[str, np.ndarray]) -> np.ndarray | None:
    """The predictor's rig-state code per sample (held up to STATE_HOLD_S), or None when it
    covers less than MIN_STATE_COVERAGE of the samples."""
    raw = channels.get("RIGSTATE")
    if raw is None or len(ts_ms) == 0:
        return None
    have = ~np.isnan(raw)
    if not have.any():
        return None
    idx = np.where(have, np.arange(len(raw)), -1)
    np.maximum.accumulate(idx, out=idx)
    known = (idx >= 0) & (ts_ms - ts_ms[np.maximum(idx, 0)] <= STATE_HOLD_S * 1000.0)
    if known.mean() < MIN_STATE_COVERAGE:
        return None
    codes = np.where(known, raw[np.maximum(idx, 0)], 0.0)  # 0: unknown
    return np.nan_to_num(codes, nan=0.0).astype(np.int16)


def hours_by_state(codes: np.ndarray, dur_s: np.ndarray) -> dict[str, float]:
    """Hours per rig-state name (appliance.predict.states), largest first."""
    from appliance.predict.states import name_of

    hours: dict[str, float] = {}
    for code in np.unique(codes):
        hours[name_of(float(code))] = hours.get(name_of(float(code)), 0.0) + float(dur_s[codes == code].sum()) / 3600.0
    return {k: round(v, 4) for k, v in sorted(hours.items(), key=lambda kv: -kv[1])}


def runs_longer_than(ts_ms: np.ndarray, mask: np.ndarray, min_s: float) -> np.ndarray:
    """`mask` without its runs shorter than `min_s` seconds."""
    out = mask.copy()
    for a, b in runs(mask):
        end = ts_ms[b] if b < len(ts_ms) else ts_ms[-1]
        if (end - ts_ms[a]) / 1000.0 < min_s:
            out[a:b] = False
    return out


def slips_mask(ts_ms: np.ndarray, bit_ft: np.ndarray, hookload_klbf: np.ndarray, drilling: np.ndarray,
               rpm: np.ndarray | None = None) -> tuple[np.ndarray, float | None]:
    """In the slips per sample, and the hookload threshold used (klbf)."""
    threshold = slips_threshold_klbf(hookload_klbf)
    if threshold is None:
        return np.zeros(len(ts_ms), dtype=bool), None
    dt_s = np.maximum(np.diff(ts_ms) / 1000.0, 1e-3)
    speed = np.abs(np.diff(bit_ft)) / dt_s
    back = np.concatenate(([speed[0] if len(speed) else 0.0], speed))
    still = back < BIT_STILL_FT_S
    mask = (hookload_klbf < threshold) & still & ~drilling
    if rpm is not None:
        mask &= rpm < SLIPS_MAX_RPM
    for a, b in runs(mask):
        end = ts_ms[b] if b < len(ts_ms) else ts_ms[-1]
        if (end - ts_ms[a]) / 1000.0 < SLIPS_MIN_S:
            mask[a:b] = False
    return mask, threshold


def find_connections(ts_ms: np.ndarray, bit_ft: np.ndarray, hole_ft: np.ndarray, slips: np.ndarray,
                     drilling: np.ndarray, dur_s: np.ndarray) -> list[dict[str, Any]]:
    """Connections: in-slips periods near bottom with new hole since the previous in-slips period.

    Each is {"start", "end" (ms, slip to slip), "duration_s", "depth_ft" (hole depth),
    "weight_to_weight_s" (or None), and the index span "_span" of the activity}.
    A period cut by the range's start or end is left out: its duration is unknown.
    """
    n = len(ts_ms)
    periods = runs(slips)
    drill_idx = np.flatnonzero(drilling)
    out = []
    hole_before = hole_ft[0]
    for k, (a, b) in enumerate(periods):
        progressed = hole_ft[a] - hole_before >= HOLE_PROGRESS_FT
        hole_before = hole_ft[b - 1]
        if a == 0 or b == n or not progressed or hole_ft[a] - bit_ft[a] > CONNECTION_OFF_BOTTOM_FT:
            continue
        conn = {"start": int(ts_ms[a]), "end": int(ts_ms[b]),
                "duration_s": round(float(ts_ms[b] - ts_ms[a]) / 1000.0, 1),
                "depth_ft": round(float(hole_ft[a]), 2), "weight_to_weight_s": None, "_span": (a, b)}
        i = np.searchsorted(drill_idx, a)
        if 0 < i < len(drill_idx):
            before, after = int(drill_idx[i - 1]), int(drill_idx[i])
            prev_end = periods[k - 1][1] if k else 0
            next_start = periods[k + 1][0] if k + 1 < len(periods) else n
            w2w_s = float(ts_ms[after] - ts_ms[before]) / 1000.0 - float(dur_s[before])
            if before >= prev_end and after <= next_start and w2w_s <= WEIGHT_TO_WEIGHT_MAX_S:
                conn["weight_to_weight_s"] = round(w2w_s, 1)
                conn["_span"] = (before + 1, after)
        out.append(conn)
    return out


def classify(ts_ms: np.ndarray, bit_ft: np.ndarray, hole_ft: np.ndarray, drilling: np.ndarray,
             connections: list[dict[str, Any]], pumps_on: np.ndarray | None) -> np.ndarray:
    """Activity index (into ACTIVITIES) per sample."""
    cls = np.full(len(ts_ms), OTHER, dtype=np.int8)
    if pumps_on is not None:
        cls[pumps_on] = CIRCULATING
    # moving both before and after the sample: a trip's slips time counts, the standing before and after it not
    path, _ = bit_path_ft(ts_ms, bit_ft)
    before = path - path[at_offset(ts_ms, -TRIP_WINDOW_S)]
    after = path[at_offset(ts_ms, TRIP_WINDOW_S)] - path
    # off bottom and below the first stand (handling the bottom-hole assembly at surface is not tripping)
    off_bottom = ((hole_ft - bit_ft) > ON_BOTTOM_FT) & (bit_ft > STAND_FT)
    cls[off_bottom & (before >= TRIP_MIN_MOVE_FT) & (after >= TRIP_MIN_MOVE_FT)] = TRIP_IN
    cls[off_bottom & (before <= -TRIP_MIN_MOVE_FT) & (after <= -TRIP_MIN_MOVE_FT)] = TRIP_OUT
    # a trip starts where the bit last stood before it and ends where the bit comes to rest
    for code, sign in ((TRIP_IN, 1.0), (TRIP_OUT, -1.0)):
        for a, b in runs(cls == code):
            lo = int(np.searchsorted(ts_ms, ts_ms[a] - TRIP_WINDOW_S * 1000.0))
            hi = int(np.searchsorted(ts_ms, ts_ms[b - 1] + TRIP_WINDOW_S * 1000.0, side="right"))
            head = path[lo:a + 1] * sign
            first = lo + len(head) - 1 - int(np.argmin(head[::-1]))  # last time at the start point
            last = b - 1 + int(np.argmax(path[b - 1:hi] * sign))  # first arrival at the end point
            for i, j in ((first, a), (b, last + 1)):
                cls[i:j][np.isin(cls[i:j], (CIRCULATING, OTHER))] = code
    for c in connections:
        a, b = c["_span"]
        cls[a:b] = CONNECTION
    cls[drilling] = DRILLING
    return cls


# -- the KPIs -----------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def trips(ts_ms: np.ndarray, bit_ft: np.ndarray, cls: np.ndarray, dur_s: np.ndarray) -> list[dict[str, Any]]:
    """Stretches classified tripping in or out that move the bit at least TRIP_MIN_FT."""
    out = []
    path, _ = bit_path_ft(ts_ms, bit_ft)
    for code, direction in ((TRIP_IN, "in"), (TRIP_OUT, "out")):
        for a, b in runs(cls == code):
            end = min(b, len(ts_ms) - 1)
            moved = abs(float(path[end] - path[a]))
            if moved < TRIP_MIN_FT:
                continue
            hours = float(dur_s[a:b].sum()) / 3600.0
            out.append({"start": int(ts_ms[a]), "end": int(ts_ms[b - 1] + dur_s[b - 1] * 1000.0),
                        "direction": direction,
                        "from_depth_ft": round(float(bit_ft[a]), 1), "to_depth_ft": round(float(bit_ft[end]), 1),
                        "duration_s": round(hours * 3600.0, 1), "ft_h": round(moved / hours, 1) if hours else None})
    return sorted(out, key=lambda t: t["start"])


def tripping_speed(ts_ms: np.ndarray, bit_ft: np.ndarray, hole_ft: np.ndarray, cls: np.ndarray,
                   dur_s: np.ndarray, slips: np.ndarray | None) -> dict[str, Any]:
    """Per direction, over samples more than TRIP_OFF_BOTTOM_FT off bottom: distance (ft), hours
    (slips time included), ft_h and stands_per_h over those hours, and running_ft_h over the time
    out of the slips (None without a hookload channel)."""
    step = np.append(np.diff(bit_path_ft(ts_ms, bit_ft)[0]), 0.0)
    far = (hole_ft - bit_ft) > TRIP_OFF_BOTTOM_FT
    out: dict[str, Any] = {}
    for code, direction, sign in ((TRIP_IN, "in", 1.0), (TRIP_OUT, "out", -1.0)):
        m = (cls == code) & far
        distance = float(np.sum(step[m] * sign))
        hours = float(dur_s[m].sum()) / 3600.0
        running = float(dur_s[m & ~slips].sum()) / 3600.0 if slips is not None else 0.0
        out[direction] = {
            "distance_ft": round(distance, 1), "hours": round(hours, 3),
            "ft_h": round(distance / hours, 1) if hours else None,
            "stands_per_h": round(distance / hours / STAND_FT, 2) if hours else None,
            "running_ft_h": round(distance / running, 1) if running else None,
        }
    return out


def rop_per_stand(ts_ms: np.ndarray, hole_ft: np.ndarray, cls: np.ndarray, dur_s: np.ndarray) -> list[dict[str, Any]]:
    """New hole per stretch of drilling between connections (or trips): feet drilled over the
    on-bottom drilling time. `partial` marks a stretch cut by the range's start or end."""
    boundary = np.isin(cls, (CONNECTION, TRIP_IN, TRIP_OUT))
    starts = np.zeros(len(cls), dtype=bool)
    starts[1:] = boundary[1:] & ~boundary[:-1]
    starts[0] = boundary[0]
    group = np.cumsum(starts)
    last_group = int(group[-1]) if len(group) else 0  # every group but the last ends at a boundary
    gain = np.append(np.diff(hole_ft), 0.0)
    drilling = cls == DRILLING
    out = []
    for g in np.unique(group[drilling]):
        m = drilling & (group == g)
        drilled = float(np.clip(gain[m], 0.0, None).sum())
        seconds = float(dur_s[m].sum())
        if drilled < MIN_STAND_DRILLED_FT or seconds <= 0:
            continue
        idx = np.flatnonzero(m)
        out.append({"start": int(ts_ms[idx[0]]), "end": int(ts_ms[idx[-1]] + dur_s[idx[-1]] * 1000.0),
                    "start_depth_ft": round(float(hole_ft[idx[0]]), 1),
                    "end_depth_ft": round(float(hole_ft[idx[0]]) + drilled, 1),
                    "drilled_ft": round(drilled, 1), "on_bottom_s": round(seconds, 1),
                    "rop_ft_h": round(drilled / seconds * 3600.0, 1),
                    "partial": bool(g == 0 or g == last_group)})
    return out


def npt(ts_ms: np.ndarray, bit_ft: np.ndarray, hole_ft: np.ndarray, cls: np.ndarray,
        dur_s: np.ndarray) -> list[dict[str, Any]]:
    """Stretches without drilling progress or tripping (circulating or other) of NPT_MIN_S or more."""
    out = []
    for a, b in runs(np.isin(cls, (CIRCULATING, OTHER))):
        seconds = float(dur_s[a:b].sum())
        if seconds < NPT_MIN_S:
            continue
        circ = float(dur_s[a:b][cls[a:b] == CIRCULATING].sum())
        out.append({"start": int(ts_ms[a]), "end": int(ts_ms[b - 1] + dur_s[b - 1] * 1000.0),
                    "duration_s": round(seconds, 1), "activity": "circulating" if circ * 2 > seconds else "other",
                    "circulating_s": round(circ, 1), "bit_depth_ft": round(float(bit_ft[a]), 1),
                    "hole_depth_ft": round(float(hole_ft[a]), 1)})
    return out


def empty_answer(start_ms: int, end_ms: int) -> dict[str, Any]:
    return {"source": SOURCE, "from": start_ms, "to": end_ms, "samples": 0, "thresholds": thresholds(None),
            "connections": [], "connection_summary": None, "trips": [], "tripping_speed": None,
            "rop_per_stand": [], "time_by_activity": None, "time_by_rig_state": None, "npt": [],
            "missing": [], "notes": []}


def thresholds(slips_klbf: float | None) -> dict[str, Any]:
    return {"in_slips_below_klbf": None if slips_klbf is None else round(slips_klbf, 1),
            "stand_ft": STAND_FT, "on_bottom_ft": ON_BOTTOM_FT, "connection_off_bottom_ft": CONNECTION_OFF_BOTTOM_FT,
            "pumps_on_gpm": PUMPS_ON_GPM, "trip_min_move_ft": TRIP_MIN_MOVE_FT, "trip_window_s": TRIP_WINDOW_S,
            "npt_min_s": NPT_MIN_S}


def compute(ts_ms: np.ndarray, channels: dict[str, np.ndarray], start_ms: int, end_ms: int) -> dict[str, Any]:
    """All KPIs over [start_ms, end_ms) from samples at `ts_ms` (sorted, epoch ms) and channel
    arrays by mnemonic (NaN where a row has no value; units as in the catalogue)."""
    ans = empty_answer(start_ms, end_ms)
    missing = ans["missing"]
    ts = np.asarray(ts_ms, dtype=float)
    n = len(ts)
    ans["samples"] = n
    bit = fill(channels["DBTM"]) if "DBTM" in channels and n else None
    hole = fill(channels["DMEA"]) if "DMEA" in channels and n else None
    if n == 0 or bit is None or hole is None:
        why = ("no samples in this range" if n == 0 else
               "no bit depth channel (DBTM)" if bit is None else "no hole depth channel (DMEA)")
        for kpi in ("connections", "tripping_speed", "rop_per_stand", "time_by_activity", "npt"):
            missing.append({"kpi": kpi, "reason": why})
        return ans
    hole = np.maximum(hole, bit)  # the bit is never below the bottom of the hole
    jumps = bit_path_ft(ts, bit)[1]
    if jumps:
        ans["notes"].append(f"bit depth jumped faster than {MAX_BIT_SPEED_FT_S:g} ft/s {jumps} time(s) "
                            "(a depth reset or a glitch): not counted as movement")
    dur = sample_durations_s(ts, end_ms)
    states = predictor_states(ts, channels)
    hookload = fill(channels["HKLA"]) if "HKLA" in channels else None
    rpm = fill(channels["RPMA"]) if "RPMA" in channels else None
    slips: np.ndarray | None = None
    connections: list[dict[str, Any]] = []
    if states is not None:
        from appliance.predict.states import CODE

        ans["source"] = PREDICTOR_SOURCE
        ans["time_by_rig_state"] = hours_by_state(states, dur)
        drilling = np.isin(states, (CODE["rotary_drilling"], CODE["slide_drilling"]))
        slips = runs_longer_than(ts, states == CODE["in_slips"], SLIPS_MIN_S)
        connections = find_connections(ts, bit, hole, slips, drilling, dur)
    else:
        if "RIGSTATE" in channels:
            ans["notes"].append(f"the predictor's rig state covers less than {MIN_STATE_COVERAGE:.0%} of this "
                                "range: activities estimated from raw channels")
        drilling = drilling_mask(ts, bit, hole)
        if hookload is None:
            for kpi in ("connections", "rop_per_stand", "tripping_speed.running_ft_h"):
                missing.append({"kpi": kpi, "reason": "no hookload channel (HKLA): in-slips periods cannot be found"})
        else:
            slips, threshold = slips_mask(ts, bit, hookload, drilling, rpm)
            ans["thresholds"] = thresholds(threshold)
            connections = find_connections(ts, bit, hole, slips, drilling, dur)
    pumps = pumps_on_mask(channels)
    if pumps is None:
        missing.append({"kpi": "time_by_activity.circulating",
                        "reason": "no flow-in (MFIA) or pump stroke (SPM1-3) channel: circulating is counted as other"})
    cls = classify(ts, bit, hole, drilling, connections, pumps)

    durations = [c["duration_s"] for c in connections]
    w2w = [c["weight_to_weight_s"] for c in connections if c["weight_to_weight_s"] is not None]
    for c in connections:
        del c["_span"]
    if hookload is not None or states is not None:
        ans["connections"] = connections
        ans["connection_summary"] = {"count": len(connections), "median_s": _percentile(durations, 50),
                                     "p90_s": _percentile(durations, 90),
                                     "weight_to_weight_median_s": _percentile(w2w, 50)}
        ans["rop_per_stand"] = rop_per_stand(ts, hole, cls, dur)
    ans["trips"] = trips(ts, bit, cls, dur)
    ans["tripping_speed"] = tripping_speed(ts, bit, hole, cls, dur, slips)
    hours = {f"{name}_h": round(float(dur[cls == code].sum()) / 3600.0, 4) for code, name in enumerate(ACTIVITIES)}
    range_h = (end_ms - start_ms) / 3_600_000.0
    hours["no_data_h"] = round(max(range_h - float(dur.sum()) / 3600.0, 0.0), 4)
    ans["time_by_activity"] = hours
    ans["npt"] = npt(ts, bit, hole, cls, dur)
    return ans


# -- reading ------------------------------------------------------------------------------


def load(db: sqlite3.Connection, start_ms: int, end_ms: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The KPI channels stored in [start, end): timestamps (ms) and arrays by mnemonic (NaN gaps).

    Raises QueryError for an inverted range, one longer than MAX_RANGE_MS, or more than MAX_ROWS rows.
    """
    if end_ms <= start_ms:
        raise read.QueryError(f"the range is empty or inverted: from {start_ms} to {end_ms}")
    if end_ms - start_ms > MAX_RANGE_MS:
        raise read.QueryError(f"KPIs are computed over at most {MAX_RANGE_MS // 86_400_000} days at a time; "
                              "ask for a shorter range")
    present = {c.name: c.id for c in read.channels(db) if c.name in CHANNELS}
    names = [n for n in CHANNELS if n in present]
    if not names:
        return np.zeros(0), {}
    too_many = (f"more than {MAX_ROWS} samples in that range; ask for a shorter range")
    if max(read.raw_count(db, present[n], start_ms, end_ms) for n in names) > MAX_ROWS:
        raise read.QueryError(too_many)
    blocks, rows = [], []
    total = 0
    for ts, values in read.iter_rows(db, names, start_ms, end_ms):
        rows.append([ts, *values])
        if len(rows) == 65_536:
            total += len(rows)
            if total > MAX_ROWS:
                raise read.QueryError(too_many)
            blocks.append(np.array(rows, dtype=float))  # None becomes NaN
            rows = []
    if rows:
        blocks.append(np.array(rows, dtype=float))
    if not blocks:
        return np.zeros(0), {}
    data = np.concatenate(blocks)
    return data[:, 0], {n: data[:, i + 1] for i, n in enumerate(names)}


def kpis_for_range(db: sqlite3.Connection, start_ms: int, end_ms: int) -> dict[str, Any]:
    """compute() over what the database holds in [start, end)."""
    ts, channels = load(db, start_ms, end_ms)
    return compute(ts, channels, start_ms, end_ms)
