"""The rig simulator: event parsing, the physics of the pure model, and `rigtel simulate` end to end.

Event signatures are checked against a twin run: the same seed without the event. Events
draw their randomness from a stream of their own, so the twin is identical frame for
frame until the event starts, and any difference after it is the event's doing.
"""

from __future__ import annotations

import functools
import signal
import statistics
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from appliance.bus import Publisher
from appliance.channels import CATALOGUE, check_value
from appliance.sources import rig
from appliance.sources.events import Event, parse_duration, parse_events
from appliance.sources.rig import RigModel
from tests.conftest import Collector, start_program, wait_subscribed

SEED = 7
HOUR = 3600.0


@dataclass(slots=True)
class Sample:
    t: float  # rig seconds
    frame: dict[str, float]
    activity: str
    in_slips: bool


def simulate(hours: float, dt: float = 1.0, seed: int = SEED, events: str = "",
             start_depth_ft: float = 5000.0, trip_every_ft: float = 0.0) -> tuple[Sample, ...]:
    """Every frame of a run, with the model's activity after each step."""
    model = RigModel(seed=seed, start_depth_ft=start_depth_ft, trip_every_ft=trip_every_ft,
                     events=parse_events(events))
    samples = []
    for _ in range(round(hours * HOUR / dt)):
        frame = model.step(dt)
        samples.append(Sample(model.t_s, frame, model.activity, model.in_slips))
    return tuple(samples)


# runs that several tests read are made once
@functools.cache
def baseline() -> tuple[Sample, ...]:
    return simulate(4.0)


@functools.cache
def tripping() -> tuple[Sample, ...]:
    return simulate(6.0, start_depth_ft=3000.0, trip_every_ft=50.0)  # trips after the first stand


@functools.cache
def eventful() -> tuple[Sample, ...]:
    return simulate(3.0, events="kick@1h+30m,loss@2h+20m,packoff@2h30m+20m")


@functools.cache
def shallow_and_deep() -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    return simulate(1.0, start_depth_ft=3000.0), simulate(1.0, start_depth_ft=15000.0)


def window(run, start: float, end: float, pumping: bool = False) -> list[Sample]:
    return [s for s in run if start <= s.t < end and (not pumping or s.frame["MFIA"] > 300)]


def mean(run, key) -> float:
    return statistics.fmean(key(s) for s in run)


# -- event specs ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("2h", 7200), ("30m", 1800), ("45s", 45), ("1h30m", 5400), ("90", 90), ("1.5h", 5400),
    ("1h0m30s", 3630), (" 10M ", 600)])
def test_times_are_read_in_hours_minutes_and_seconds(text, seconds):
    assert parse_duration(text) == seconds


def test_event_specs_parse_into_sorted_events_with_labels():
    events = parse_events("kick@2h+20m, washout@5h30m+1h,flatline:sppa@90m+10m,"
                          "dropout:TVA@3600+300,spike:GASA@1.75h+45s")
    assert [(e.kind, e.channel) for e in events] == [
        ("dropout", "TVA"), ("flatline", "SPPA"), ("spike", "GASA"), ("kick", None), ("washout", None)]
    kick = events[3]
    assert (kick.start_s, kick.end_s) == (7200, 8400)
    assert kick.label(1_700_000_000_000) == {"kind": "kick", "channel": None,
                                             "start_ms": 1_700_000_000_000 + 7_200_000,
                                             "end_ms": 1_700_000_000_000 + 8_400_000}
    assert kick.active(7200) and kick.active(8399.9) and not kick.active(8400) and not kick.active(7199)
    assert parse_events("") == [] and parse_events("  ") == []


@pytest.mark.parametrize("spec, says", [
    ("kick", "KIND@START+DURATION"),
    ("kick@2h", "KIND@START+DURATION"),
    ("kick@soon+1m", "cannot read the time 'soon'"),
    ("kick@1h+-5m", "cannot read the time"),
    ("kick@1h+0s", "more than zero"),
    ("blowout@1h+1m", "unknown kind 'blowout'"),
    ("spike@1h+1m", "needs a channel"),
    ("spike:WOB@1h+1m", "unknown channel 'WOB'"),
    ("kick:SPPA@1h+1m", "takes no channel"),
    ("kick@1h+1m,,loss@2h+1m", "empty item"),
    ("kick@1h+1m,", "empty item"),
])
def test_bad_event_specs_are_refused_with_what_is_accepted(spec, says):
    with pytest.raises(ValueError) as e:
        parse_events(spec)
    message = str(e.value)
    assert says in message
    assert "KIND@START+DURATION" in message or "the catalogue has" in message


# -- physics invariants --------------------------------------------------------------------


@pytest.mark.parametrize("run", [baseline, tripping], ids=["drilling", "tripping"])
def test_hole_depth_never_decreases_and_the_bit_stays_in_the_hole(run):
    hole = 0.0
    for s in run():
        assert s.frame["DMEA"] >= hole
        hole = s.frame["DMEA"]
        assert 0.0 <= s.frame["DBTM"] <= s.frame["DMEA"]


@pytest.mark.parametrize("run", [
    baseline, tripping, eventful, lambda: simulate(24.0, dt=10.0)],
    ids=["drilling", "tripping", "events", "dt10"])
def test_every_value_is_inside_the_catalogue_range(run):
    mnemonics = {c.mnemonic for c in CATALOGUE}
    for s in run():
        assert set(s.frame) == mnemonics
        for name, value in s.frame.items():
            assert check_value(name, value) is None, (s.t, s.activity)


@pytest.mark.parametrize("run", [
    baseline, tripping, eventful], ids=["drilling", "tripping", "events"])
def test_pit_volume_follows_the_flow_balance(run):
    samples = run()
    dt = samples[1].t - samples[0].t
    first = samples[0].frame
    flow_bbl = 0.0
    for s in samples[1:]:
        f = s.frame
        flow_bbl += (f["MFOA"] - f["MFIA"]) * dt / (42 * 60)
        expected = (first["TVA"] + flow_bbl
                    - rig.HOLE_CAPACITY_BBL_FT * (f["DMEA"] - first["DMEA"])
                    + rig.STEEL_DISPLACEMENT_BBL_FT * (f["DBTM"] - first["DBTM"]))
        assert abs(f["TVA"] - expected) < 2.0, (s.t, s.activity, f["TVA"], expected)


def test_connections_have_pumps_off_pipe_in_slips_and_hookload_at_block_weight():
    run = baseline()
    in_slips = [s for s in run if s.activity == "connection" and s.in_slips]
    assert len(in_slips) > 100
    for s in in_slips:
        f = s.frame
        assert f["MFIA"] == 0 and f["SPM1"] + f["SPM2"] + f["SPM3"] == 0 and f["RPMA"] == 0
        assert f["SPPA"] < 30
        assert abs(f["HKLA"] - rig.BLOCK_WEIGHT_KLBF) < 3
    drilling = [s for s in run if s.activity == "drilling" and s.frame["ROPA"] > 0]
    assert min(s.frame["HKLA"] for s in drilling) > rig.BLOCK_WEIGHT_KLBF + 60


def test_pumps_off_gives_flow_back_and_a_small_pit_gain():
    run = baseline()
    for i, s in enumerate(run[1:], 1):
        if s.in_slips and not run[i - 1].in_slips:  # slips set
            before = run[i - 60].frame  # a minute earlier, still circulating
            assert before["MFIA"] > 500
            assert s.frame["MFOA"] > 20  # the lines still draining after the pumps stopped
            # the model's own gain here is ~1.9 bbl; each gauge reading has 0.15 bbl of noise
            assert 1 < s.frame["TVA"] - before["TVA"] < 20
            break
    else:
        pytest.fail("no connection in the run")


def test_about_one_connection_per_stand():
    run = simulate(24.0, dt=10.0)
    starts = sum(1 for a, b in zip(run, run[1:]) if b.activity == "connection" != a.activity)
    drilled = run[-1].frame["DMEA"] - run[0].frame["DMEA"]
    assert drilled > 900
    assert abs(starts - drilled / rig.STAND_FT) <= 1.5


def test_any_step_size_gives_the_same_well():
    holes = [simulate(2.0, dt=dt)[-1].frame["DMEA"] for dt in (0.5, 1.0, 10.0)]
    assert max(holes) - min(holes) < 1.0
    tiny = RigModel(seed=SEED)
    frames = [tiny.step(0.001) for _ in range(5000)]
    assert all(check_value(k, v) is None for f in frames for k, v in f.items())


def test_trip_goes_out_to_surface_and_back_to_bottom_with_slips_every_stand():
    run = tripping()
    order = [run[0].activity]
    for s in run:
        if s.activity != order[-1]:
            order.append(s.activity)
    trip = order.index("tripping_out")
    assert order[trip:trip + 4] == ["tripping_out", "surface", "tripping_in", "circulating"]
    assert "drilling" in order[trip + 4:]

    out = [s for s in run if s.activity == "tripping_out"]
    back = [s for s in run if s.activity == "tripping_in"]
    hole = out[0].frame["DMEA"]
    assert all(s.frame["DMEA"] == hole for s in out + back)
    assert min(s.frame["DBTM"] for s in run if s.activity == "surface") == 0
    assert max(s.frame["BPOS"] for s in out) > 95 and min(s.frame["BPOS"] for s in out) < 15
    slips_set = sum(1 for a, b in zip(out, out[1:]) if b.in_slips and not a.in_slips)
    assert abs(slips_set - hole / rig.STAND_FT) <= 2
    for s in out + back:
        if s.in_slips:
            assert abs(s.frame["HKLA"] - rig.BLOCK_WEIGHT_KLBF) < 3
    assert all(s.frame["MFIA"] == 0 for s in out[300:] + back)  # pumps off once the trip is under way
    assert run[-1].frame["DMEA"] > hole and run[-1].frame["DBTM"] > hole - rig.STAND_FT


def test_pumps_and_paddle_agree_with_the_flow_meters():
    for s in baseline():
        f = s.frame
        assert f["MFIA"] == pytest.approx((f["SPM1"] + f["SPM2"] + f["SPM3"]) * rig.PUMP_GAL_PER_STROKE,
                                          abs=0.06)
    paddle = [abs(s.frame["MFOP"] - 100 * s.frame["MFOA"] / rig.PADDLE_FULL_SCALE_GPM) for s in baseline()]
    assert statistics.fmean(paddle) < 2.0


def test_standpipe_pressure_grows_with_flow_squared_and_with_depth():
    def spp_per_gpm2(run):
        return statistics.fmean(s.frame["SPPA"] / s.frame["MFIA"] ** 2 for s in run
                                if s.frame["MFIA"] > 500 and s.activity == "drilling")

    shallow, deep = (spp_per_gpm2(run) for run in shallow_and_deep())
    assert deep > 1.3 * shallow
    ramp = [s.frame for s in baseline() if 200 < s.frame["MFIA"] < 500 and s.activity == "connection"]
    assert ramp, "no pump ramp sampled"
    for f in ramp:  # during pump ramps SPP follows the square of the flow
        assert f["SPPA"] / f["MFIA"] ** 2 == pytest.approx(spp_per_gpm2(baseline()), rel=0.15)


def test_mud_out_is_warmer_than_mud_in_and_warms_with_circulation():
    run = baseline()
    assert all(s.frame["MTOA"] > s.frame["MTIA"] for s in run)
    assert run[-1].frame["MTOA"] > run[0].frame["MTOA"] + 5
    shallow, deep = shallow_and_deep()
    assert deep[-1].frame["MTOA"] > shallow[-1].frame["MTOA"] + 10


def test_same_seed_same_values_other_seed_other_values():
    a, b = RigModel(seed=11), RigModel(seed=11)
    c = RigModel(seed=12)
    fa = [a.step(1.0) for _ in range(3000)]
    assert fa == [b.step(1.0) for _ in range(3000)]
    assert fa != [c.step(1.0) for _ in range(3000)]


# -- injected events -------------------------------------------------------------------------

START, LENGTH = 1.0 * HOUR, 30 * 60.0


def twin(kind: str, start: float = START, length: float = LENGTH):
    """(run without, run with) one event, to 15 minutes after its end; identical before it starts."""
    spec = f"{kind}@{start:g}+{length:g}"
    hours = (start + length) / HOUR + 0.25
    evented = simulate(hours, events=spec)
    plain = baseline()[:len(evented)]  # the same seed: the baseline is the run without
    for p, e in zip(plain, evented):
        if e.t >= start:
            break
        assert p.frame == e.frame and p.activity == e.activity, f"{spec} changed t={e.t}"
    return plain, evented


def test_kick_flow_out_above_flow_in_pit_gain_gas_up_spp_down():
    plain, kick = twin("kick")
    late = (START + 6 * 60, START + LENGTH)  # after the influx has built up
    assert mean(window(kick, *late, pumping=True), lambda s: s.frame["MFOA"] - s.frame["MFIA"]) > 60
    assert abs(mean(window(plain, *late, pumping=True), lambda s: s.frame["MFOA"] - s.frame["MFIA"])) < 10
    gain = window(kick, START + LENGTH - 1, START + LENGTH)[0].frame["TVA"] - window(kick, START - 1, START)[0].frame["TVA"]
    assert gain > 25
    assert mean(window(kick, *late), lambda s: s.frame["GASA"]) > mean(window(plain, *late), lambda s: s.frame["GASA"]) + 15
    spp = [k.frame["SPPA"] / p.frame["SPPA"] for p, k in zip(window(plain, *late, True), window(kick, *late, True))]
    assert 0.93 < statistics.fmean(spp) < 0.99


def test_loss_flow_out_below_flow_in_and_pit_falling():
    plain, loss = twin("loss")
    late = (START + 3 * 60, START + LENGTH)
    assert mean(window(loss, *late, pumping=True), lambda s: s.frame["MFOA"] - s.frame["MFIA"]) < -150
    drop = window(loss, START - 1, START)[0].frame["TVA"] - window(loss, START + LENGTH - 1, START + LENGTH)[0].frame["TVA"]
    assert drop > 50


def test_washout_spp_drifts_down_at_constant_flow():
    plain, wash = twin("washout", length=HOUR)
    during = list(zip(window(plain, START, START + HOUR, True), window(wash, START, START + HOUR, True)))
    assert all(p.frame["MFIA"] == w.frame["MFIA"] for p, w in during)
    ratios = [w.frame["SPPA"] / p.frame["SPPA"] for p, w in during]
    early, late = statistics.fmean(ratios[:300]), statistics.fmean(ratios[-300:])
    assert early > 0.97 and late < 0.8


def test_packoff_spp_and_torque_up_and_erratic_overpull_on_pick_up():
    plain = baseline()
    first_connection = next(s.t for s in plain if s.activity == "connection")
    start = first_connection - 20 * 60
    plain, pack = twin("packoff", start=start, length=HOUR)
    during = (start + 3 * 60, start + HOUR)

    def drilling(run):
        return [s for s in window(run, *during) if s.frame["ROPA"] > 0]

    def jumpiness(run):  # mean change from one second to the next
        torque = [s.frame["TQA"] for s in drilling(run)]
        return statistics.fmean(abs(b - a) for a, b in zip(torque, torque[1:]))

    assert mean(drilling(pack), lambda s: s.frame["TQA"]) > 1.3 * mean(drilling(plain), lambda s: s.frame["TQA"])
    assert jumpiness(pack) > 5 * jumpiness(plain)
    assert (mean(drilling(pack), lambda s: s.frame["SPPA"])
            > 1.1 * mean(drilling(plain), lambda s: s.frame["SPPA"]))

    def pick_up(run):
        return max(s.frame["HKLA"] for s in window(run, *during) if s.activity == "connection")

    assert pick_up(pack) > pick_up(plain) + 40


def test_flatline_freezes_the_channel_at_its_last_value():
    plain, flat = twin("flatline:SPPA")
    before = window(flat, START - 1, START)[0].frame["SPPA"]
    assert {s.frame["SPPA"] for s in window(flat, START, START + LENGTH)} == {before}
    assert len({s.frame["SPPA"] for s in window(flat, START + LENGTH, START + LENGTH + 600)}) > 100
    for p, f in zip(plain, flat):
        assert {k: v for k, v in p.frame.items() if k != "SPPA"} == {k: v for k, v in f.frame.items() if k != "SPPA"}


def test_spike_gives_occasional_single_sample_spikes():
    plain, spiky = twin("spike:HKLA")
    jumps = [s.t for p, s in zip(plain, spiky) if abs(s.frame["HKLA"] - p.frame["HKLA"]) > 50]
    assert 30 <= len(jumps) <= 150  # about one every 20 s of the 30 minutes
    assert all(START <= t < START + LENGTH for t in jumps)
    assert sum(1 for p, s in zip(plain, spiky) if s.frame["HKLA"] != p.frame["HKLA"]) == len(jumps)


def test_dropout_removes_the_channel_during_the_event_only():
    _, gone = twin("dropout:TVA")
    for s in gone:
        assert ("TVA" in s.frame) == (not START <= s.t < START + LENGTH)
        assert len(s.frame) == len(CATALOGUE) - ("TVA" not in s.frame)


def test_event_starting_between_frames_shows_from_the_next_frame():
    model = RigModel(seed=SEED, events=[Event("dropout", "GASA", 10.25, 12.25)])
    missing = [model.t_s for _ in range(30) if "GASA" not in model.step(0.5)]
    assert missing == [10.5, 11.0, 11.5, 12.0]


# -- the program ---------------------------------------------------------------------------


def simulate_args(broker, tmp: Path, *more: str) -> list[str]:
    return ["simulate", "--set", f"broker_frontend_port={broker.frontend_port}",
            "--set", f"data_dir={tmp}", "--set", f"simulator_labels_path={tmp}/labels.jsonl", *more]


@pytest.mark.slow
def test_simulate_publishes_frames_and_labels_and_stops_after_its_duration(broker, tmp_path):
    cfg = broker.settings()
    with Publisher("test-probe", settings=cfg) as probe, \
            Collector(["drilling", "sim.label", "probe"], cfg) as collector:
        wait_subscribed(probe, collector)
        program = start_program(simulate_args(broker, tmp_path, "--rate", "10", "--speed", "60",
                                              "--duration", "600", "--events", "kick@120s+60s"), tmp_path)
        program.wait_for(r"ready: publishing on tcp://\S+ at 10 Hz × 60")
        assert program.proc.wait(timeout=60) == 0, program.output
        program.wait_for("stopped")

        def labels():
            return [e.frames[0].data for e in collector.envelopes if e.topic == "sim.label"]

        collector.wait_until(lambda: len(labels()) == 2, what="the kick's start and end labels")
        start, end = labels()
        origin = start["start_ms"] - 120_000
        assert start == {"kind": "kick", "channel": None, "start_ms": origin + 120_000,
                         "end_ms": origin + 180_000, "phase": "start"}
        assert end == {**start, "phase": "end"}
        collector.wait_until(lambda: any(f.ts == origin + 600_000 for e in collector.envelopes
                                         if e.topic == "drilling" for f in e.frames), what="the last frame")

    frames = [f for e in collector.envelopes if e.topic == "drilling" for f in e.frames]
    stamps = [f.ts for f in frames]
    assert stamps == list(range(stamps[0], origin + 600_001, 100))  # every 100 ms of rig time, in order
    assert len(frames) > 5000  # only the first few may miss the slow joiner
    assert collector.tracker.gaps == 0 and collector.stats["rejected"] == 0
    assert all(set(f.data) == {c.mnemonic for c in CATALOGUE} for f in frames)
    kick = [f.data for f in frames if origin + 160_000 <= f.ts < origin + 180_000]
    assert statistics.fmean(d["MFOA"] - d["MFIA"] for d in kick) > 20

    lines = [orjson.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    assert {k: lines[0][k] for k in ("kind", "channel", "start_ms", "end_ms", "finished")} == {
        "kind": "kick", "channel": None, "start_ms": origin + 120_000, "end_ms": origin + 180_000,
        "finished": True}
    assert lines[0]["src"].endswith(".simulator")


@pytest.mark.slow
def test_sigterm_stops_the_simulator_with_exit_0_and_unfinished_labels_written(broker, tmp_path):
    program = start_program(simulate_args(broker, tmp_path, "--rate", "1000", "--events",
                                          "washout@0+1h,spike:SPPA@2h+1m"), tmp_path)
    program.wait_for("label start: washout")
    try:
        code = program.stop(signal.SIGTERM)
    except AssertionError as e:  # it did not stop: show what it said
        raise AssertionError(f"{e}\n{program.output}") from None
    assert code == 0, program.output
    assert "stopped (SIGTERM)" in program.output
    lines = [orjson.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [(x["kind"], x["finished"]) for x in lines] == [("washout", False)]


def test_bad_events_setting_stops_start_up_with_instructions(tmp_path):
    program = start_program(["simulate", "--events", "kick@soon+1m"], tmp_path)
    assert program.proc.wait(timeout=30) == 2
    program.wait_for("configuration error: setting simulator_events")
    assert "cannot read the time 'soon'" in program.output and "KIND@START+DURATION" in program.output


def test_unwritable_labels_file_exits_1_saying_what_to_do(tmp_path):
    (tmp_path / "a-file").write_text("")
    program = start_program(["simulate", "--set", f"simulator_labels_path={tmp_path}/a-file/labels.jsonl",
                             "--duration", "1"], tmp_path)
    assert program.proc.wait(timeout=30) == 1
    program.wait_for("cannot write the simulator's labels")
    assert "simulator_labels_path" in program.output


# -- across restarts ---------------------------------------------------------------------


def test_a_carried_on_well_continues_at_its_depth_with_its_pit_and_temperatures():
    first = RigModel(seed=SEED)
    for _ in range(3600):
        first.step(1.0)
    carried = first.carried()
    assert carried["hole_ft"] > 5040  # an hour of drilling from 5,000 ft

    again = RigModel(seed=SEED)
    again.carry_on(carried)
    frames = [again.step(1.0) for _ in range(600)]
    assert frames[0]["DMEA"] >= round(carried["hole_ft"], 2) - 0.01
    assert all(b["DMEA"] >= a["DMEA"] for a, b in zip(frames, frames[1:]))
    assert 0.0 <= frames[0]["DBTM"] <= frames[0]["DMEA"]
    assert abs(frames[0]["TVA"] - carried["pit_bbl"]) < 1.0  # not back at the 550 bbl of a new well
    assert abs(first.pit_bbl - rig.PIT_START_BBL) > 2.0
    assert abs(frames[0]["MTOA"] - carried["temp_out_f"]) < 1.0


def test_well_state_round_trips_and_a_broken_file_says_so(tmp_path):
    from appliance.sources import simstate

    path = str(tmp_path / simstate.STATE_FILE)
    assert simstate.load(path) is None
    state = simstate.WellState(7, 5000.0, 1_796_000_000_123, {"hole_ft": 5123.4, "pit_bbl": 612.0})
    simstate.save(path, state)
    assert simstate.load(path) == state
    assert state.same_well(7, 5000.0) and not state.same_well(8, 5000.0) and not state.same_well(7, 3000.0)
    good = '{"version": 1, "seed": 1, "start_depth_ft": 5000, "last_ts_ms": 1, "speed": 1, "well": {"hole_ft": 5100}}'
    (tmp_path / simstate.STATE_FILE).write_text(good)
    assert simstate.load(path).well == {"hole_ft": 5100.0}
    for text in ("", "{", '{"version": 1}', '{"version": 1, "seed": 1, "start_depth_ft": 5000, '
                 '"last_ts_ms": 1, "well": {"pit_bbl": 1}}', "[]",
                 # parse, but out of range: each would have stopped the simulator from starting
                 good.replace('"hole_ft": 5100', '"hole_ft": -1'),
                 good.replace('"last_ts_ms": 1', '"last_ts_ms": 99999999999999999'),
                 good.replace('"speed": 1', '"speed": 0')):
        (tmp_path / simstate.STATE_FILE).write_text(text)
        with pytest.raises(simstate.StateError, match="is not a simulator state"):
            simstate.load(path)
    with pytest.raises(ValueError):
        RigModel().carry_on({"hole_ft": float("nan")})


def drilling_frames(collector) -> list:
    return [f for e in list(collector.envelopes) if e.topic == "drilling" for f in e.frames]


@pytest.mark.slow
def test_a_restarted_simulator_continues_the_well_after_its_last_frame(broker, tmp_path):
    """Run 1 runs 300 s of rig time at speed 100 (ahead of the clock); run 2, started at once,
    must stamp after it (no interleaving) and drill on from its depth (no jump back to the start
    depth); run 3, with another seed, is a new well at the start depth, still stamped after."""
    cfg = broker.settings()
    runs = []
    with Publisher("test-probe", settings=cfg) as probe, Collector(["drilling", "probe"], cfg) as collector:
        wait_subscribed(probe, collector)
        for more in ((), (), ("--seed", "8")):
            seen = len(drilling_frames(collector))
            program = start_program(simulate_args(broker, tmp_path, "--rate", "1", "--speed", "100",
                                                  "--duration", "300", *more), tmp_path)
            assert program.proc.wait(timeout=60) == 0, program.output
            program.wait_for("stopped")
            state_file = tmp_path / f"simulator-state-{cfg.rig_id}.json"
            assert state_file.exists(), "the simulator keeps no state in data_dir"
            end = int(orjson.loads(state_file.read_bytes())["last_ts_ms"])
            collector.wait_until(lambda: any(f.ts == end for f in drilling_frames(collector)),
                                 what=f"run {len(runs) + 1}'s last frame")
            runs.append((program.output, drilling_frames(collector)[seen:]))
    (out1, run1), (out2, run2), (out3, run3) = runs
    assert "a new well at 5000 ft" in out1
    assert "continuing the well of the previous run" in out2 and "ahead of the clock" in out2
    assert "a new well at 5000 ft" in out3
    assert len(run1) > 250 and len(run2) > 250 and len(run3) > 250  # only the first few may miss the slow joiner
    assert min(f.ts for f in run2) > max(f.ts for f in run1)
    assert min(f.ts for f in run3) > max(f.ts for f in run2)
    assert [f.ts for f in run2] == list(range(run2[0].ts, max(f.ts for f in run1) + 300_001, 1000))
    depth1 = max(f.data["DMEA"] for f in run1)
    assert depth1 > 5002
    assert min(f.data["DMEA"] for f in run2) >= depth1 - 0.01
    assert min(f.data["DMEA"] for f in run3) < 5001


@pytest.mark.slow
def test_after_a_run_at_speed_1_the_clock_stamps_and_new_well_starts_afresh(broker, tmp_path):
    """Stamps ahead of the clock left by a run at speed 1 came from a wrong clock: the next run
    stamps from the clock, not after them (else the data stayed in the future for good); and
    --new-well starts a new well whatever the state file holds."""
    import time as clock

    from appliance.sources import simstate

    cfg = broker.settings()
    path = tmp_path / f"simulator-state-{cfg.rig_id}.json"
    ahead = clock.time_ns() // 1_000_000 + 3_600_000
    simstate.save(str(path), simstate.WellState(1, 5000.0, ahead, {"hole_ft": 5400.0}, 1.0))
    program = start_program(simulate_args(broker, tmp_path, "--rate", "1", "--speed", "1", "--duration", "2"),
                            tmp_path)
    assert program.proc.wait(timeout=60) == 0, program.output
    program.wait_for("stopped")
    assert "continuing the well of the previous run: hole 5400.0 ft" in program.output
    assert "ahead of the clock at speed 1" in program.output
    assert simstate.load(str(path)).last_ts_ms < clock.time_ns() // 1_000_000 + 5_000
    # a run at speed 10 left stamps an hour ahead: runs at speed 1 follow them, and so does the
    # run after one that followed (its stamps are as far ahead), never falling back among them
    simstate.save(str(path), simstate.WellState(1, 5000.0, ahead, {"hole_ft": 5400.0}, 10.0))
    for run in range(2):
        program = start_program(simulate_args(broker, tmp_path, "--rate", "1", "--speed", "1", "--duration", "1"),
                                tmp_path)
        assert program.proc.wait(timeout=60) == 0, program.output
        program.wait_for("stopped")
        assert "ahead of the clock (simulator_speed 10)" in program.output, (run, program.output)
        assert simstate.load(str(path)).last_ts_ms > ahead
        ahead = simstate.load(str(path)).last_ts_ms
    program = start_program(simulate_args(broker, tmp_path, "--rate", "1", "--speed", "1", "--duration", "1",
                                          "--new-well"), tmp_path)
    assert program.proc.wait(timeout=60) == 0, program.output
    program.wait_for("stopped")
    assert "a new well at 5000 ft" in program.output
    assert simstate.load(str(path)).well["hole_ft"] < 5001


# -- what `make run` runs ----------------------------------------------------------------


def dev_settings(tmp: Path):
    """The settings `make run` writes for a new development prefix, and that prefix's ini."""
    import sys

    from appliance.config import load
    from appliance.ops.dev import prepare

    layout = prepare(tmp / "dev", sys.executable)
    return load(config_file=str(layout.config_file), env={}, dotenv=""), layout.config_file


@pytest.mark.slow
def test_make_run_simulator_stamps_its_frames_with_the_wall_clock(broker, tmp_path):
    import time

    from tests.conftest import clean_env

    dev, ini = dev_settings(tmp_path)
    cfg = broker.settings()
    env = clean_env(tmp_path)
    env["RIGTEL_CONFIG"] = str(ini)
    with Publisher("test-probe", settings=cfg) as probe, Collector(["drilling", "probe"], cfg) as collector:
        wait_subscribed(probe, collector)
        started_ms = time.time_ns() // 1_000_000
        program = start_program(simulate_args(broker, tmp_path), tmp_path, env=env)
        program.wait_for("ready: publishing", timeout=60)
        collector.wait_until(lambda: len(drilling_frames(collector)) >= 5, timeout=30, what="5 frames")
        now_ms = time.time_ns() // 1_000_000
        frames = drilling_frames(collector)
        assert program.stop(signal.SIGTERM) == 0, program.output
    # every frame received by now was stamped at most a second past the clock (it was 10 s
    # of rig time per wall second with the first dev settings: ~50 s ahead by the fifth frame)
    assert started_ms <= frames[0].ts and max(f.ts for f in frames) <= now_ms + 1000, (
        started_ms, now_ms, [f.ts for f in frames])


@pytest.mark.slow
def test_make_run_events_are_each_detected_by_the_predictor_soon_after_start(tmp_path):
    """The dev settings' events through the evaluation harness (rig model and predictor in
    step, at the dev rate, seed and start depth): each detected, the first alarm within
    10 minutes of the simulator starting, and no alarm that is not an event's."""
    from appliance.predict.evaluate import ORIGIN_MS, Scenario, catches, run_scenario

    dev, _ = dev_settings(tmp_path)
    events = tuple(parse_events(dev.simulator_events))
    kinds = {e.kind for e in events}
    assert {"kick", "washout"} <= kinds and kinds & {"flatline", "spike", "dropout"}
    assert dev.simulator_start_depth_ft == 5000.0  # what run_scenario drills from
    run = run_scenario(Scenario("make run", dev.simulator_seed, max(e.end_s for e in events) + 600, events,
                                trip_every_ft=dev.simulator_trip_every_ft, rate_hz=dev.simulator_rate_hz))
    delays = {}
    for e in events:
        hits = [r.ts_ms for r in run.raises if catches(e, r) and e.start_s * 1000 <= r.ts_ms - ORIGIN_MS < e.end_s * 1000]
        assert hits, (e, run.raises)
        delays[e.kind] = (min(hits) - ORIGIN_MS) / 1000 - e.start_s
    print(f"\nmake run's events: detected {delays} s after their start")
    first_alarm_wall_s = (min(r.ts_ms for r in run.raises) - ORIGIN_MS) / 1000 / dev.simulator_speed
    assert first_alarm_wall_s <= 600, first_alarm_wall_s
    assert all(delay <= 180 for delay in delays.values()), delays
    stray = [r.id for r in run.raises if not any(catches(e, r) for e in events)]
    assert stray == [], stray


def test_make_run_points_out_a_database_filled_ahead_of_the_clock(tmp_path):
    """A development prefix that ran the first dev settings (speed 10) holds frames stamped in
    the future; `rigtel dev` says so and how to start afresh at the clock."""
    import socket
    import subprocess
    import sys
    import time

    from appliance.bus.envelope import Envelope, Frame
    from appliance.ops.dev import stored_ahead_s
    from appliance.store.writer import Batch, Writer
    from tests.conftest import clean_env

    prefix = tmp_path / "dev"
    lib = prefix / "var/lib/rigtel"
    lib.mkdir(parents=True)
    db = lib / "rigtel.db"
    now_ms = time.time_ns() // 1_000_000
    assert stored_ahead_s(str(db), now_ms) == 0.0  # no database yet
    writer = Writer(db)
    writer.commit(Batch([Envelope("drilling", "dev-rig.simulator", "b1", 1, now_ms, tuple(
        Frame(now_ms + k * 60_000, {"DMEA": 5000.0 + k}) for k in range(0, 25)), 100)]))
    writer.close()
    assert stored_ahead_s(str(db), now_ms) == 24 * 60.0
    assert stored_ahead_s(str(db), now_ms + 30 * 60_000) == 0.0

    ports = []
    for _ in range(5):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    etc = prefix / "etc/rigtel"
    etc.mkdir(parents=True)
    (etc / "appliance.ini").write_text(
        f"[appliance]\nrig_id = dev-rig\ndata_dir = {lib}\ndatabase_path = {db}\n"
        f"supervisor_socket = {prefix}/run/rigtel/supervisor.sock\nbroker_frontend_port = {ports[0]}\n"
        f"broker_backend_port = {ports[1]}\nweb_port = {ports[2]}\nweb_http_port = {ports[3]}\n"
        f"bus_remote_port = {ports[4]}\n")
    env = clean_env(tmp_path)
    del env["RIGTEL_CONFIG"]
    run = subprocess.run([sys.executable, "-m", "appliance", "dev", "--prefix", str(prefix), "--no-start"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "holds frames stamped up to 24 minutes ahead of the clock" in run.stderr, run.stderr
    assert f"delete {lib}" in run.stderr and "simulator_speed = 1" in run.stderr
