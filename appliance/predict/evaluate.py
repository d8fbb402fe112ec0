"""`rigtel evaluate`: how well the predictor does, measured against the simulator's ground truth
and the rig contractor's own activity labels in real logs.

Scenarios run in-process at full speed: the rig model (appliance.sources.rig) steps in rig
time and each frame goes straight into a `Predictor`, no bus, no clock, so a day of rig
time takes seconds to a minute and the same seeds give the same figures on any machine.

- "normal": a day of drilling with connections and a round trip (`--normal-hours`, for the
  first `--normal-runs` seeds) and no injected events: every alarm raised there is false;
- one run per event kind and seed: the event starts at a seed-dependent time after the
  detectors have warmed up (so it lands in different activities), lasts long enough for
  its ramp to finish, and the run ends EVENT_TAIL_S after it.

Per detector (the alert `kind`, sensor faults split by fault) the report gives: injected
events it should catch, how many it caught (a raise of the matching alarm between the
event's start and its end + GRACE_S), median and worst delay from the event's start,
false alarms per 24 h (raises outside every event's window, over all scenario time
outside those windows; the normal-drilling figure separately), alarms per 10 minutes, and
"other in events": raises inside an event's window that do not catch it (a pack-off
raised during a spiking pressure gauge, a gas anomaly during a kick). They are not called
false, since some are the event's honest consequences, but they are counted and listed
under the detector that raised them so a wrong diagnosis cannot hide in an event's window.

`--volve DIR` (default: ../shared/data/volve when present) replays the Volve time logs
through the predictor and reports, per activity the rig contractor recorded
(RigActivityCode), how often the predictor's rig state agrees, and the alarm rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from appliance.channels import BY_MNEMONIC
from appliance.sources.events import PHYSICAL_KINDS, Event, parse_events

ORIGIN_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC: rig time zero of every scenario
DAY_S = 86_400.0
WARMUP_S = 3600.0  # events start after this plus a seed-dependent offset of up to an hour
EVENT_S = {"kick": 1200.0, "loss": 1200.0, "washout": 3600.0, "packoff": 900.0,
           "flatline": 900.0, "spike": 900.0, "dropout": 900.0}
EVENT_TAIL_S = 1800.0  # the run goes on this long after the event ends (clearing, false alarms)
GRACE_S = 600.0  # a raise this long after an event's end still belongs to it (and is not false)
SENSOR_EVENTS = ("flatline:HKLA", "spike:SPPA", "dropout:TVA", "flatline:SPPA", "spike:HKLA", "dropout:MFOA")

def default_volve() -> Path | None:
    """`shared/data/volve` beside the checkout or any folder above it (the team's data share)."""
    for folder in Path(__file__).resolve().parents[2:]:
        candidate = folder / "shared" / "data" / "volve"
        if candidate.is_dir():
            return candidate
    return None


VOLVE_LOGS = ("F-4_GenTime_time-log.xml", "F-4_GenTime2_trip-log.xml")

# alert kinds that count as catching each injected kind
CATCHES = {"kick": {"kick"}, "loss": {"loss"}, "washout": {"washout"}, "packoff": {"packoff", "stuck_pipe"}}


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    duration_s: float
    events: tuple[Event, ...] = ()
    trip_every_ft: float = 500.0
    rate_hz: float = 1.0


@dataclass
class Raise:
    """An alarm going from normal to active."""

    ts_ms: int
    id: str
    kind: str
    channel: str | None
    priority: str | None


@dataclass
class Run:
    scenario: Scenario
    raises: list[Raise] = field(default_factory=list)
    frames: int = 0
    cpu_s: float = 0.0
    states: Counter = field(default_factory=Counter)  # (simulator activity, predicted state) -> frames


def raises_in(alerts: Iterable[dict[str, Any]], active: set[str]) -> Iterator[Raise]:
    """The raises among lifecycle events; `active` tracks which alarm ids are up."""
    for a in alerts:
        aid, state = str(a.get("id")), a.get("state")
        if state in ("active_unack", "active_ack"):
            if aid not in active:
                active.add(aid)
                yield Raise(int(a.get("raised_ms") or a.get("ts") or 0), aid, str(a.get("kind")),
                            a.get("channel"), a.get("priority"))
        elif state in ("cleared_unack", "normal", "shelved"):
            active.discard(aid)


def run_scenario(sc: Scenario, params: Any = None) -> Run:
    """Step the rig model and the predictor together over the scenario."""
    from appliance.predict.engine import Predictor
    from appliance.sources.rig import RigModel

    model = RigModel(seed=sc.seed, start_depth_ft=5000.0, trip_every_ft=sc.trip_every_ft, events=sc.events)
    predictor = Predictor(params=params)
    run = Run(sc)
    active: set[str] = set()
    dt = 1.0 / sc.rate_hz
    n = int(sc.duration_s * sc.rate_hz)
    started = time.process_time()
    for k in range(1, n + 1):
        data = model.step(dt)
        result = predictor.step(ORIGIN_MS + round(k * 1000.0 / sc.rate_hz), data)
        run.states[(model.activity, result.state)] += 1
        if result.alerts:
            for r in raises_in(result.alerts, active):
                if not r.ts_ms:
                    r.ts_ms = ORIGIN_MS + round(k * 1000.0 / sc.rate_hz)
                run.raises.append(r)
    run.cpu_s = time.process_time() - started
    run.frames = n
    return run


def scenarios(seeds: Sequence[int], normal_hours: float, kinds: Sequence[str],
              normal_runs: int = 1) -> list[Scenario]:
    """Normal runs for the first `normal_runs` seeds, and one run per event kind and seed."""
    out = [Scenario(f"normal/seed{s}", s, normal_hours * 3600.0) for s in seeds[:normal_runs] if normal_hours > 0]
    for spec in kinds:
        kind = spec.partition(":")[0]
        for s in seeds:
            start = WARMUP_S + (s * 2357) % 3600  # lands in different activities per seed
            length = EVENT_S[kind]
            (event,) = parse_events(f"{spec}@{start:.0f}+{length:.0f}")
            out.append(Scenario(f"{spec}/seed{s}", s, start + length + EVENT_TAIL_S, (event,)))
    return out


def detector_of(r: Raise) -> str:
    """The row a raise is reported under: its kind, sensor faults split by fault."""
    if r.kind == "sensor_fault":
        parts = r.id.split(".")
        return f"sensor_fault.{parts[1]}" if len(parts) >= 3 else "sensor_fault"
    return r.kind


def catches(event: Event, r: Raise) -> bool:
    if event.kind in PHYSICAL_KINDS:
        return r.kind in CATCHES[event.kind]
    # a sensor event is caught by a sensor fault on its channel (of any fault: a frozen
    # channel reported as dropped out is still a caught fault) or a statistical anomaly on it
    return r.kind in ("sensor_fault", "anomaly") and r.channel == event.channel


def expected_detector(event: Event) -> str:
    return event.kind if event.kind in PHYSICAL_KINDS else f"sensor_fault.{event.kind}"


@dataclass
class Score:
    events: int = 0
    caught: int = 0
    delays_s: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false: int = 0
    false_normal: int = 0
    raises: int = 0
    other: int = 0  # raises inside an event's window that do not catch that event


def score(runs: Sequence[Run]) -> dict[str, Any]:
    """Per-detector figures over the runs (see the module docstring)."""
    rows: dict[str, Score] = defaultdict(Score)
    quiet_s = normal_s = total_s = 0.0
    examples: dict[str, list[str]] = defaultdict(list)
    other_examples: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        sc = run.scenario
        total_s += sc.duration_s
        windows = [(ORIGIN_MS + e.start_s * 1000, ORIGIN_MS + (e.end_s + GRACE_S) * 1000) for e in sc.events]
        quiet_s += sc.duration_s - sum(min(e.end_s + GRACE_S, sc.duration_s) - e.start_s for e in sc.events)
        if not sc.events:
            normal_s += sc.duration_s
        for e in sc.events:
            row = rows[expected_detector(e)]
            row.events += 1
            start_ms = ORIGIN_MS + e.start_s * 1000
            hits = [r for r in run.raises
                    if catches(e, r) and start_ms <= r.ts_ms < ORIGIN_MS + (e.end_s + GRACE_S) * 1000]
            if hits:
                row.caught += 1
                row.delays_s.append((min(r.ts_ms for r in hits) - start_ms) / 1000.0)
            else:
                row.missed.append(sc.name)
        for r in run.raises:
            d = detector_of(r)
            rows[d].raises += 1
            inside = [e for e, (lo, hi) in zip(sc.events, windows) if lo <= r.ts_ms < hi]
            if inside and not any(catches(e, r) for e in inside):
                rows[d].other += 1
                if len(other_examples[d]) < 5:
                    other_examples[d].append(f"{sc.name} at {(r.ts_ms - ORIGIN_MS) / 1000:.0f} s: {r.id}")
            if not inside:
                rows[d].false += 1
                if not sc.events:
                    rows[d].false_normal += 1
                if len(examples[d]) < 5:
                    examples[d].append(f"{sc.name} at {(r.ts_ms - ORIGIN_MS) / 1000:.0f} s: {r.id}")
    table = []
    for name in sorted(rows, key=lambda k: (rows[k].events == 0, k)):
        s = rows[name]
        table.append({
            "detector": name, "events": s.events, "detected": s.caught,
            "detection_rate": round(s.caught / s.events, 3) if s.events else None,
            "median_delay_s": round(statistics.median(s.delays_s), 1) if s.delays_s else None,
            "worst_delay_s": round(max(s.delays_s), 1) if s.delays_s else None,
            "false_per_24h": round(s.false / quiet_s * DAY_S, 2) if quiet_s else None,
            "false_per_24h_normal": round(s.false_normal / normal_s * DAY_S, 2) if normal_s else None,
            "alarms_per_10min": round(s.raises / total_s * 600.0, 4) if total_s else None,
            "other_in_events": s.other,
            "missed": s.missed, "false_examples": examples.get(name, []),
            "other_examples": other_examples.get(name, [])})
    all_delays = [d for s in rows.values() for d in s.delays_s]
    all_raises = sum(s.raises for s in rows.values())
    all_false_normal = sum(s.false_normal for s in rows.values())
    return {"detectors": table, "hours": round(total_s / 3600, 2), "normal_hours": round(normal_s / 3600, 2),
            "quiet_hours": round(quiet_s / 3600, 2),
            "events": sum(s.events for s in rows.values()), "detected": sum(s.caught for s in rows.values()),
            "median_delay_s": round(statistics.median(all_delays), 1) if all_delays else None,
            "worst_delay_s": round(max(all_delays), 1) if all_delays else None,
            "alarms_per_10min": round(all_raises / total_s * 600.0, 4) if total_s else None,
            "other_in_events": sum(s.other for s in rows.values()),
            "false_per_24h_normal": round(all_false_normal / normal_s * DAY_S, 2) if normal_s else None}


def state_agreement(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Per simulator activity: frames, and the share the predictor called a state the
    engine's vocabulary allows for it (appliance.predict.states.SIMULATOR_ACTIVITY)."""
    from appliance.predict.states import SIMULATOR_ACTIVITY

    totals: Counter = Counter()
    agree: Counter = Counter()
    confusion: dict[str, Counter] = defaultdict(Counter)
    for run in runs:
        for (activity, state), n in run.states.items():
            totals[activity] += n
            confusion[activity][state] += n
            if state in SIMULATOR_ACTIVITY.get(activity, ()):
                agree[activity] += n
    return {a: {"frames": totals[a], "agreement": round(agree[a] / totals[a], 4),
                "states": dict(confusion[a].most_common(4))} for a in sorted(totals)}


# -- the Volve logs -------------------------------------------------------------------------

# The Volve rig's own settings, as a site would set them (predictor_block_weight_klbf): its
# top drive and block weigh far more than the land-rig default. With the bit at surface and
# the string in the slips (F-4 time log, codes 14/114) the hookload reads 145-159 klbf.
VOLVE_PARAMS = {"block_weight_klbf": 145.0}

# RigActivityCode (Baker Hughes): base code, +10 circulating, +100 rotating
VOLVE_BASE = {0: "no monitoring", 1: "drilling", 2: "reaming", 3: "off bottom", 4: "in slips",
              5: "connection", 6: "tripping in", 7: "tripping out", 8: "trip in slips", 9: "shut in"}


def volve_reference(code: float) -> tuple[str, frozenset[str]] | None:
    """The activity the contractor recorded, and the rig states that agree with it; None for
    'no monitoring' or a code outside the convention."""
    if code != code or code < 0:
        return None
    c = int(round(code))
    base, circulating, rotating = c % 10, (c // 10) % 10 == 1, c // 100 == 1
    if base == 0 or c >= 200 or (c // 10) % 10 > 1:
        return None
    label = VOLVE_BASE[base] + (", circulating" if circulating else "") + (", rotating" if rotating else "")
    if base == 1:
        ok = {"rotary_drilling"} if rotating else {"slide_drilling"} if circulating else {"rotary_drilling",
                                                                                          "slide_drilling"}
    elif base == 2:
        ok = {"reaming", "back_reaming"}
    elif base == 3:
        ok = ({"circulating_off_bottom", "reaming", "back_reaming"} if circulating and rotating else
              {"circulating_off_bottom"} if circulating else
              {"rotating_off_bottom"} if rotating else {"stationary"})
    elif base in (4, 5, 8):
        ok = {"in_slips"}
    elif base == 6:
        ok = {"tripping_in"}
    elif base == 7:
        ok = {"tripping_out"}
    else:
        ok = {"stationary"}
    return label, frozenset(ok)


def volve_agreement(paths: Sequence[Path], params: Any = None) -> dict[str, Any]:
    """Replay each log through a fresh predictor; agreement per recorded activity, and alarms."""
    from appliance.predict.engine import Predictor
    from appliance.sources.files import open_log

    per: dict[str, Counter] = defaultdict(Counter)
    files = []
    total_s = 0.0
    all_raises: list[Raise] = []
    for path in paths:
        log = open_log(str(path))
        predictor = Predictor(params=params)
        active: set[str] = set()
        first = last = None
        rows = 0
        for ts, values in log.rows(extra=True):
            code = values.get("RigActivityCode")
            # extra curves are in their own units: only catalogue channels go to the predictor
            result = predictor.step(ts, {k: v for k, v in values.items() if k in BY_MNEMONIC})
            rows += 1
            first = ts if first is None else first
            last = ts
            all_raises.extend(raises_in(result.alerts, active))
            ref = volve_reference(code) if code is not None else None
            if ref is not None:
                label, ok = ref
                per[label]["samples"] += 1
                per[label]["agree"] += result.state in ok
                per[label][f"state:{result.state}"] += 1
        span = (last - first) / 1000.0 if first is not None and last is not None else 0.0
        total_s += span
        files.append({"file": path.name, "rows": rows, "hours": round(span / 3600, 2)})
    states = {}
    for label in sorted(per, key=lambda k: -per[k]["samples"]):
        c = per[label]
        seen = Counter({k[6:]: v for k, v in c.items() if k.startswith("state:")})
        states[label] = {"samples": c["samples"], "agreement": round(c["agree"] / c["samples"], 4),
                         "predicted": dict(seen.most_common(3))}
    samples = sum(c["samples"] for c in per.values())
    return {"files": files, "hours": round(total_s / 3600, 2), "states": states,
            "overall_agreement": round(sum(c["agree"] for c in per.values()) / samples, 4) if samples else None,
            "alarms": len(all_raises),
            "alarms_per_10min": round(len(all_raises) / total_s * 600, 3) if total_s else None,
            "alarms_by_kind": dict(Counter(detector_of(r) for r in all_raises).most_common())}


# -- the command ---------------------------------------------------------------------------


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "—"
    return format(v, spec) if spec else str(v)


def print_report(result: dict[str, Any], out=sys.stdout) -> None:
    sim = result["simulator"]
    print(f"simulator: {sim['hours']} h of rig time ({sim['normal_hours']} h normal drilling), "
          f"{sim['frames']} frames, predictor {sim['us_per_frame']} us/frame", file=out)
    head = (f"{'detector':<24} {'events':>6} {'found':>5} {'rate':>6} {'median s':>9} {'worst s':>8} "
            f"{'false/24h':>9} {'normal':>7} {'per 10min':>9} {'other in ev':>11}")
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in sim["detectors"]:
        print(f"{r['detector']:<24} {r['events']:>6} {r['detected']:>5} {_fmt(r['detection_rate'], '.0%'):>6} "
              f"{_fmt(r['median_delay_s']):>9} {_fmt(r['worst_delay_s']):>8} {_fmt(r['false_per_24h']):>9} "
              f"{_fmt(r['false_per_24h_normal']):>7} {_fmt(r['alarms_per_10min'], '.4f'):>9} "
              f"{r['other_in_events']:>11}", file=out)
    print(f"all detectors: {sim['detected']} of {sim['events']} events detected, median delay "
          f"{_fmt(sim['median_delay_s'])} s, worst {_fmt(sim['worst_delay_s'])} s; {sim['alarms_per_10min']} alarms "
          f"per 10 minutes; {sim['false_per_24h_normal']} false alarms per 24 h of normal drilling; "
          f"{sim['other_in_events']} other alarm(s) inside events' windows", file=out)
    for r in sim["detectors"]:
        for m in r["missed"]:
            print(f"  missed: {r['detector']} in {m}", file=out)
        for x in r["false_examples"]:
            print(f"  false {r['detector']}: {x}", file=out)
        for x in r["other_examples"]:
            print(f"  other in event {r['detector']}: {x}", file=out)
    print("\nrig state against the simulator's activity:", file=out)
    for activity, s in result["simulator_states"].items():
        print(f"  {activity:<14} {s['frames']:>7} frames  {s['agreement']:.1%}  {s['states']}", file=out)
    v = result.get("volve")
    if v is None:
        print(f"\nVolve: {result.get('volve_skipped')}", file=out)
        return
    d = result["volve_default_params"]
    print(f"\nVolve logs ({', '.join(f['file'] for f in v['files'])}; {v['hours']} h) with the rig's settings "
          f"{v['params']}: rig state agreement {_fmt(v['overall_agreement'], '.1%')} overall "
          f"({_fmt(d['overall_agreement'], '.1%')} with the default settings); {v['alarms']} alarms "
          f"({v['alarms_per_10min']} per 10 minutes) {v['alarms_by_kind']}", file=out)
    print(f"  {'recorded activity (RigActivityCode)':<40} {'samples':>7}  agree  (defaults)  predicted", file=out)
    for label, s in v["states"].items():
        print(f"  {label:<40} {s['samples']:>7}  {s['agreement']:>5.1%}  ({d['states'].get(label, 0):>6.1%})  "
              f"{s['predicted']}", file=out)


def evaluate(seeds: Sequence[int], normal_hours: float, kinds: Sequence[str], volve: Path | None,
             progress=None, jobs: int = 1, normal_runs: int = 1) -> dict[str, Any]:
    """Every scenario (in `jobs` worker processes), scored; and the Volve logs when given."""
    todo = scenarios(seeds, normal_hours, kinds, normal_runs)
    runs: list[Run] = []

    def done(run: Run) -> None:
        runs.append(run)
        if progress:
            progress(f"[{len(runs)}/{len(todo)}] {run.scenario.name}: {run.frames} frames in "
                     f"{run.cpu_s:.1f} s CPU, {len(run.raises)} alarm(s)")

    if jobs > 1 and len(todo) > 1:
        import multiprocessing

        # longest first, so the last worker is not left with a day of rig time
        order = sorted(todo, key=lambda sc: -sc.duration_s)
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            for run in pool.imap_unordered(run_scenario, order):
                done(run)
        runs.sort(key=lambda r: todo.index(r.scenario))
    else:
        for sc in todo:
            done(run_scenario(sc))
    frames = sum(r.frames for r in runs)
    cpu = sum(r.cpu_s for r in runs)
    sim = score(runs)
    sim.update(frames=frames, us_per_frame=round(cpu / frames * 1e6, 1) if frames else None)
    result: dict[str, Any] = {"simulator": sim, "simulator_states": state_agreement(runs)}
    paths = [volve / name for name in VOLVE_LOGS] if volve is not None else []
    if paths and all(p.exists() for p in paths):
        from appliance.predict.params import PredictorParams

        result["volve"] = volve_agreement(paths, PredictorParams(**VOLVE_PARAMS))
        result["volve"]["params"] = VOLVE_PARAMS
        defaults = volve_agreement(paths)
        result["volve_default_params"] = {"overall_agreement": defaults["overall_agreement"],
                                          "states": {k: v["agreement"] for k, v in defaults["states"].items()}}
    else:
        result["volve_skipped"] = f"no Volve time logs in {volve}" if volve else "not asked for"
    return result


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rigtel evaluate",
        description="Run simulator scenarios through the predictor at full speed and report, per "
                    "detector, detection rate, delays, false alarms and alarm rate; and rig-state "
                    "agreement with the Volve time logs' activity codes when they are present.")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated simulator seeds (default 1,2,3)")
    parser.add_argument("--normal-hours", type=float, default=24.0,
                        help="hours of each normal-drilling run, no events (default 24)")
    parser.add_argument("--normal-runs", type=int, default=1,
                        help="normal-drilling runs, one per seed from the first (default 1)")
    parser.add_argument("--kinds", default=",".join(PHYSICAL_KINDS + SENSOR_EVENTS),
                        help="event kinds to inject, one run each per seed (default: all physical kinds "
                             "and sensor faults on " + ", ".join(SENSOR_EVENTS) + ")")
    parser.add_argument("--volve", metavar="DIR", default=None,
                        help="folder with the Volve time logs (default: shared/data/volve beside the "
                             "checkout or above it, when present); 'none' to skip")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="scenarios run in this many processes at once (default: up to 2)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: whole numbers separated by commas, not {args.seeds!r}")
    if not seeds:
        parser.error("--seeds: name at least one seed")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for k in kinds:
        try:
            parse_events(f"{k}@0+1")
        except ValueError as e:
            parser.error(f"--kinds: {e}")
    if not 0 <= args.normal_hours <= 24 * 30 or math.isnan(args.normal_hours):
        parser.error("--normal-hours: from 0 to 720")
    volve = None if args.volve == "none" else Path(args.volve) if args.volve else default_volve()
    if args.volve not in (None, "none") and not Path(args.volve).is_dir():
        parser.error(f"--volve: {args.volve} is not a folder")
    progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    if not 1 <= args.jobs <= 64:
        parser.error("--jobs: from 1 to 64")
    if not 0 <= args.normal_runs <= len(seeds):
        parser.error(f"--normal-runs: from 0 to the number of seeds ({len(seeds)})")
    result = evaluate(seeds, args.normal_hours, kinds, volve, progress, args.jobs, args.normal_runs)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)
    return 0
