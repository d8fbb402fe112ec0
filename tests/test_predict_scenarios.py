"""The predictor on the rig simulator's physics (appliance.sources.rig), in process: each
injected event kind detected within its delay, and normal drilling with connections and a
trip without a single alarm. The bus version of a few of these is in test_predict_service."""

from __future__ import annotations

import pytest

from appliance.predict.engine import Predictor
from appliance.predict.states import SIMULATOR_ACTIVITY
from appliance.sources.events import parse_events
from appliance.sources.rig import RigModel

T0 = 1_764_000_000_000


def run_until(model: RigModel, seconds: int, stop_on: str | None = None):
    """Step model and predictor at 1 Hz; returns (raised [(s, id)], predictor, agreement)."""
    p = Predictor()
    raised: list[tuple[int, str]] = []
    agree = total = 0
    for k in range(1, seconds + 1):
        r = p.step(T0 + k * 1000, model.step(1.0))
        total += 1
        agree += r.state in SIMULATOR_ACTIVITY[model.activity]
        for a in r.alerts:
            if a["state"] == "active_unack":
                raised.append((k, a["id"]))
                if a["id"] == stop_on:
                    return raised, p, agree / total
    return raised, p, agree / total


@pytest.mark.parametrize("spec, alert_id, max_delay_s", [
    ("kick@80m+20m", "kick", 120),  # starts while tripping out: pumps off, flow-back model
    ("washout@40m+1h", "washout", 600),  # the pressure drifts down over 30 minutes
    ("packoff@40m+20m", "packoff", 150),
    ("spike:SPPA@40m+10m", "sensor.spike.SPPA", 180),
    ("dropout:MFOA@40m+10m", "sensor.dropout.MFOA", 40),
    ("flatline:HKLA@40m+10m", "sensor.flatline.HKLA", 45),
])
def test_simulator_event_is_detected(spec, alert_id, max_delay_s):
    event = parse_events(spec)[0]
    model = RigModel(seed=1, trip_every_ft=60, events=[event])
    raised, _, _ = run_until(model, int(event.end_s), stop_on=alert_id)
    hits = [k for k, i in raised if i == alert_id and k >= event.start_s]
    assert hits, raised
    assert hits[0] - event.start_s <= max_delay_s
    assert [i for k, i in raised if k < event.start_s] == []  # nothing before the event


def test_normal_drilling_connections_and_a_trip_raise_nothing():
    model = RigModel(seed=2, trip_every_ft=60)
    raised, p, agreement = run_until(model, 4 * 3600)
    assert raised == []  # alarm rate target: at most one per 10 minutes; here none in 4 h
    assert p.counts["steps"] == 4 * 3600
    assert agreement > 0.97  # rig state agrees with the simulator's activity


from tests.test_files import VOLVE  # ../shared/data/volve beside the checkout, when present
VOLVE_TIME_LOGS = ["F-4_GenTime_time-log.xml", "F-4_GenTime2_trip-log.xml"]


@pytest.mark.parametrize("name", VOLVE_TIME_LOGS)
def test_real_volve_logs_raise_no_flood_and_no_well_control_alarm(name):
    """Reality check on Equinor's Volve logs (read from ../shared/data when present):
    a real rig's quiet hours must stay quiet."""
    path = VOLVE / name
    if not path.exists():
        pytest.skip(f"{path} not present (the project's own tests do not need it)")
    from appliance.channels import BY_MNEMONIC
    from appliance.sources.files import open_log

    p = Predictor()
    raised = []
    first = last = None
    for ts, values in open_log(str(path)).rows():
        first = first or ts
        last = ts
        for a in p.step(ts, {k: v for k, v in values.items() if k in BY_MNEMONIC}).alerts:
            if a["state"] == "active_unack":
                raised.append(a["id"])
    hours = (last - first) / 3_600_000
    assert len(raised) <= hours * 6  # the alarm-rate target: at most one per 10 minutes
    assert not {"kick", "loss", "alarm-flood"} & set(raised), raised
    assert p.counts["steps"] > 3000


def test_a_spiking_pressure_gauge_alarms_at_its_third_spike_and_is_no_packoff():
    """Issue 6: the simulator's spiking SPPA (evaluate's spike:SPPA seed 4) raised its alarm
    70 s after the third spike (two spikes on consecutive samples read as a step, and a
    pack-off from erratic torque plus the spikes) and a pack-off. Every spike counts now:
    the alarm comes the second after the sample that ends the third one. (The simulator's
    spikes, 750-1,500 psi, are gross, and two gross ones make the alarm; but these land
    within a minute of the pumps coming back after a connection, while the gauge's scatter
    is still the one learned on the pumps' ramp, and 814 and 1,001 psi are then under 24
    times it: ordinary spikes, three needed.)"""
    from appliance.predict import evaluate as ev

    (sc,) = ev.scenarios([4], 0, ["spike:SPPA"])
    model = RigModel(seed=sc.seed, start_depth_ft=5000.0, trip_every_ft=sc.trip_every_ft, events=sc.events)
    injected: list[int] = []
    apply_faults = model._apply_faults
    k = 0

    def watched(out, dt):
        before = out.get("SPPA")
        apply_faults(out, dt)
        if before is not None and out.get("SPPA") != before:
            injected.append(k)

    model._apply_faults = watched
    p = Predictor()
    raised: dict[str, int] = {}
    start = int(sc.events[0].start_s)
    for k in range(1, start + 400):
        for a in p.step(T0 + k * 1000, model.step(1.0)).alerts:
            if a["state"] == "active_unack":
                raised.setdefault(a["id"], k)
    spikes = [t for t in injected if t >= start]
    third = next(spikes[i] for i in range(2, len(spikes)) if spikes[i] - spikes[i - 2] <= 300)
    # the first two spikes land as the pumps stop for a connection (the pressure falling
    # 250 psi a second): a step, after which the scatter is relearned and nothing judged;
    # the next three, on the still gauge, each count (it was 5975 s, 70 s later, when
    # those spikes inside the relearning had taught it a 12 x 100 psi threshold)
    assert spikes[:5] == [5862, 5868, 5904, 5907, 5910]
    assert third + 1 <= raised["sensor.spike.SPPA"] <= spikes[4] + 1, (raised, spikes[:5])
    assert "packoff" not in raised, raised
