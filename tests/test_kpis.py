"""Performance KPIs against the simulator's ground truth, through a real SQLite file and the API.

The rig model is run for eight rig hours at 1 s (drilling from 1,000 ft, a trip after 300 ft);
its attributes (activity, in_slips, on_bottom_drilling, hole_ft) are the truth the estimates
from the stored raw channels are checked against.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from appliance.analytics import kpis
from appliance.sources.rig import RigModel
from appliance.store.schema import connect_reader
from appliance.store.writer import Batch, Writer
from appliance.web.app import create_app
from tests.conftest import settings_for
from tests.test_web_api import RecordingBus
from tests.test_writer import T0, env

HOURS = 8
END = T0 + HOURS * 3_600_000 + 1000


def store(path, frames, keep=None):
    w = Writer(path)
    for seq, i in enumerate(range(0, len(frames), 3600), start=1):
        chunk = [(ts, {k: v for k, v in f.items() if keep is None or k in keep}) for ts, f in frames[i:i + 3600]]
        w.commit(Batch([env("drilling", seq, chunk)]))
    w.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """(database path, frames, truth) of a simulated run; truth holds the model's own record."""
    m = RigModel(seed=3, start_depth_ft=1000.0, trip_every_ft=300.0)
    frames, activity, slips, drilling, hole = [], [], [], [], []
    for i in range(HOURS * 3600):
        frames.append((T0 + (i + 1) * 1000, m.step(1.0)))
        activity.append(m.activity)
        slips.append(m.in_slips)
        drilling.append(m.on_bottom_drilling)
        hole.append(m.hole_ft)
    db = tmp_path_factory.mktemp("kpis") / "rigtel.db"
    store(db, frames, keep=kpis.CHANNELS)
    truth = {"activity": np.array(activity), "slips": np.array(slips), "drilling": np.array(drilling),
             "hole": np.array(hole), "ts": np.array([t for t, _ in frames])}
    return db, frames, truth


@pytest.fixture(scope="module")
def answer(rig):
    conn = connect_reader(str(rig[0]))
    try:
        return kpis.kpis_for_range(conn, T0, END)
    finally:
        conn.close()


def test_connections_match_the_models_slip_to_slip_times(rig, answer):
    truth = rig[2]
    in_conn = (truth["activity"] == "connection") & truth["slips"]
    expected = [(int(truth["ts"][a]), (b - a) * 1.0) for a, b in kpis.runs(in_conn)]
    assert len(expected) >= 4
    found = answer["connections"]
    assert answer["connection_summary"]["count"] == len(found) == len(expected)
    for c, (start, seconds) in zip(found, expected):
        assert abs(c["start"] - start) <= 2000 and abs(c["duration_s"] - seconds) <= 3, (c, start, seconds)
        assert 100 < c["weight_to_weight_s"] < 400  # pick-up, slips, pumps on, back to bottom
    assert answer["connection_summary"]["median_s"] == pytest.approx(np.median([s for _, s in expected]), abs=3)
    assert answer["source"] == kpis.SOURCE and "predictor not running" in answer["source"]
    assert answer["missing"] == []


def test_tripping_speed_and_trips_are_plausible(answer):
    speed = answer["tripping_speed"]
    for direction in ("in", "out"):
        s = speed[direction]
        assert s["distance_ft"] > 1000, s
        assert 1000 < s["ft_h"] < 4000 and 10 < s["stands_per_h"] < 45, s  # slips time included
        assert s["ft_h"] < s["running_ft_h"] < 8000, s  # the block runs at 1.2-3 ft/s
    trips = answer["trips"]
    assert [t["direction"] for t in trips] == ["out", "in"]
    assert trips[0]["from_depth_ft"] > 1200 and trips[0]["to_depth_ft"] < 5
    assert trips[1]["to_depth_ft"] > 1200


def test_rop_per_stand_matches_the_model(rig, answer):
    truth = rig[2]
    # the model's stands: drilled feet over drilling seconds, closed when drilling stops
    model: dict[int, float] = {}
    feet = seconds = 0.0
    for i in range(1, len(truth["ts"])):
        if truth["drilling"][i]:
            feet += truth["hole"][i] - truth["hole"][i - 1]
            seconds += 1.0
        elif truth["activity"][i - 1] == "drilling" and seconds:
            model[round(truth["hole"][i])] = feet / seconds * 3600.0
            feet = seconds = 0.0
    whole = [s for s in answer["rop_per_stand"] if not s["partial"]]
    assert len(whole) >= 3
    for s in whole:
        assert s["rop_ft_h"] == pytest.approx(model[round(s["end_depth_ft"])], rel=0.03), s
        assert s["drilled_ft"] <= kpis.STAND_FT + 1
    assert answer["rop_per_stand"][0]["partial"]  # the range starts mid-stand


def test_time_by_activity_sums_to_the_range_and_tracks_the_model(rig, answer):
    hours = answer["time_by_activity"]
    assert sum(hours.values()) == pytest.approx((END - T0) / 3_600_000, abs=0.01)
    truth = rig[2]
    model_drilling_h = truth["drilling"].sum() / 3600
    assert hours["drilling_h"] == pytest.approx(model_drilling_h, rel=0.02)
    model_trip_h = np.isin(truth["activity"], ("tripping_in", "tripping_out")).sum() / 3600
    assert hours["tripping_in_h"] + hours["tripping_out_h"] == pytest.approx(model_trip_h, rel=0.15)
    # without progress for 15 min or more: circulating bottoms up before the trip, the bit change at surface
    circulating, surface = answer["npt"]
    assert circulating["activity"] == "circulating" and circulating["bit_depth_ft"] > 1300
    assert circulating["circulating_s"] == pytest.approx(900, abs=60)
    assert surface["activity"] == "other" and surface["bit_depth_ft"] < 5
    assert surface["duration_s"] == pytest.approx((truth["activity"] == "surface").sum(), rel=0.1)


def test_missing_channels_are_named_not_invented(tmp_path, rig):
    frames = rig[1][:7200]
    db = tmp_path / "nohook.db"
    store(db, frames, keep=("DBTM", "DMEA", "RPMA"))
    conn = connect_reader(str(db))
    try:
        a = kpis.kpis_for_range(conn, T0, T0 + 7_200_000)
    finally:
        conn.close()
    reasons = {m["kpi"]: m["reason"] for m in a["missing"]}
    assert "no hookload channel (HKLA)" in reasons["connections"]
    assert "rop_per_stand" in reasons and "time_by_activity.circulating" in reasons
    assert a["connections"] == [] and a["connection_summary"] is None and a["rop_per_stand"] == []
    assert a["tripping_speed"]["in"]["running_ft_h"] is None
    assert a["time_by_activity"]["drilling_h"] > 1 and a["time_by_activity"]["circulating_h"] == 0

    nothing = kpis.compute(np.array([T0]), {"HKLA": np.array([50.0])}, T0, T0 + 1000)
    assert {m["reason"] for m in nothing["missing"]} == {"no bit depth channel (DBTM)"}
    empty = kpis.compute(np.zeros(0), {}, T0, T0 + 1000)
    assert empty["time_by_activity"] is None and empty["missing"][0]["reason"] == "no samples in this range"


def test_pure_rules_on_small_arrays():
    assert kpis.runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    filled = kpis.fill(np.array([np.nan, 2.0, np.nan, 3.0]))
    assert filled.tolist() == [2.0, 2.0, 2.0, 3.0]
    assert kpis.fill(np.array([np.nan])) is None
    assert kpis.slips_threshold_klbf(np.full(100, 150.0)) is None  # one level only: no slips in sight
    ts = np.append(np.arange(0, 10_000, 1000.0), 600_000.0)  # 1 s samples, then 10 min without data
    assert kpis.sample_durations_s(ts, 601_000).tolist() == [1.0] * 11  # the gap is no data, not the last sample's
    # a bit-depth reset (0 to 8,444 ft in 5 s, as in a Volve log) is not movement
    path, jumps = kpis.bit_path_ft(np.array([0.0, 5000.0, 10_000.0]), np.array([0.0, 8444.0, 8440.0]))
    assert path.tolist() == [0.0, 0.0, -4.0] and jumps == 1


def test_the_api_answers_and_checks_its_range(tmp_path, rig, web_login):
    cfg = settings_for(tmp_path, {"database_path": str(rig[0]), "supervisor_socket": str(tmp_path / "none.sock"),
                                  **web_login.overrides()})
    app = create_app(cfg, hub=None, bus=RecordingBus())  # type: ignore[arg-type]
    client = web_login.client(app, "viewer")
    r = client.get(f"/api/kpis?from={T0}&to={T0 + 3 * 3_600_000}")
    assert r.status_code == 200, r.data
    body = r.json
    assert body["source"] == kpis.SOURCE
    assert set(body) >= {"connections", "connection_summary", "trips", "tripping_speed", "rop_per_stand",
                         "time_by_activity", "npt", "missing"}
    assert body["connection_summary"]["count"] == 3
    assert sum(body["time_by_activity"].values()) == pytest.approx(3.0, abs=0.01)
    assert "empty or inverted" in client.get(f"/api/kpis?from={T0 + 10}&to={T0}").json["error"]
    assert "at most 7 days" in client.get(f"/api/kpis?from={T0}&to={T0 + 8 * 86_400_000}").json["error"]
    assert client.get("/api/kpis?from=yesterday").status_code == 400
    empty = client.get(f"/api/kpis?from={T0 - 3_600_000}&to={T0}").json
    assert empty["missing"][0]["reason"] == "no samples in this range"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, rig):
    """The same run through the real predictor, its derived channels stored beside the raw ones
    as the saver stores them (same timestamps, topic `derived`)."""
    from appliance.predict.engine import Predictor

    predictor = Predictor()
    derived = []
    for ts, frame in rig[1]:
        r = predictor.step(ts, frame)
        derived.append((ts, {"RIGSTATE": r.derived["RIGSTATE"]}))
    db = tmp_path_factory.mktemp("kpis-predicted") / "rigtel.db"
    w = Writer(db)
    for seq, i in enumerate(range(0, len(derived), 3600), start=1):
        raw = [(ts, {k: v for k, v in f.items() if k in kpis.CHANNELS}) for ts, f in rig[1][i:i + 3600]]
        w.commit(Batch([env("drilling", seq, raw), env("derived", seq, derived[i:i + 3600], src="rig-1.predictor")]))
    w.close()
    conn = connect_reader(str(db))
    try:
        return kpis.kpis_for_range(conn, T0, END)
    finally:
        conn.close()


def test_the_predictors_rig_state_is_preferred_when_stored(rig, answer, predicted):
    truth = rig[2]
    assert predicted["source"] == kpis.PREDICTOR_SOURCE
    by_state = predicted["time_by_rig_state"]
    assert sum(by_state.values()) == pytest.approx(HOURS, abs=0.01)
    model_drilling_h = truth["drilling"].sum() / 3600
    assert by_state.get("rotary_drilling", 0) + by_state.get("slide_drilling", 0) == pytest.approx(model_drilling_h,
                                                                                                    rel=0.05)
    assert predicted["time_by_activity"]["drilling_h"] == pytest.approx(model_drilling_h, rel=0.05)
    # the same connections as the model's, slip to slip within a few seconds
    in_conn = (truth["activity"] == "connection") & truth["slips"]
    expected = [(int(truth["ts"][a]), (b - a) * 1.0) for a, b in kpis.runs(in_conn)]
    found = predicted["connections"]
    assert len(found) == len(expected), (found, expected)
    for c, (start, seconds) in zip(found, expected):
        assert abs(c["start"] - start) <= 5000 and abs(c["duration_s"] - seconds) <= 6, (c, start, seconds)
        assert c["weight_to_weight_s"] is not None and 100 < c["weight_to_weight_s"] < 420
    assert [t["direction"] for t in predicted["trips"]] == ["out", "in"]
    assert len([s for s in predicted["rop_per_stand"] if not s["partial"]]) >= 3


def test_a_rig_state_that_covers_too_little_falls_back_to_the_estimate(rig):
    ts = np.array([t for t, _ in rig[1][:7200]], dtype=float)
    channels = {k: np.array([f.get(k, np.nan) for _, f in rig[1][:7200]]) for k in ("DBTM", "DMEA", "HKLA", "MFIA")}
    channels["RIGSTATE"] = np.full(len(ts), np.nan)
    channels["RIGSTATE"][:100] = 1.0
    a = kpis.compute(ts, channels, T0, T0 + 7_200_000)
    assert a["source"] == kpis.SOURCE and a["time_by_rig_state"] is None
    assert any("covers less than 90%" in n for n in a["notes"])


def test_the_child_process_answers_caches_and_fails_clearly(rig, tmp_path):
    """appliance.analytics.offload: the same bytes as computing here, a second ask from the
    cache, and each way it can fail an error that says what to do."""
    import orjson

    from appliance.analytics import offload
    from appliance.store import read

    runner = offload.KpiRunner(timeout_s=120)
    conn = connect_reader(str(rig[0]))
    try:
        expected = orjson.dumps(kpis.kpis_for_range(conn, T0, T0 + 3_600_000))
    finally:
        conn.close()
    assert runner.kpis_json(str(rig[0]), T0, T0 + 3_600_000) == expected
    assert runner.kpis_json(str(rig[0]), T0, T0 + 3_600_000) == expected and runner.children == 1
    assert offload.MAX_RANGE_MS == kpis.MAX_RANGE_MS
    with pytest.raises(read.QueryError, match="at most 7 days"):
        runner.kpis_json(str(rig[0]), T0, T0 + 8 * 86_400_000)
    assert runner.children == 1  # refused here, no child started
    not_a_db = tmp_path / "not.db"
    not_a_db.write_text("this is not a database\n" * 100)
    with pytest.raises(offload.KpiFailed, match="the KPI computation failed .*DatabaseError") as failed:
        runner.kpis_json(str(not_a_db), T0, T0 + 3_600_000)
    assert failed.value.status == 500
    with pytest.raises(offload.KpiFailed, match="longer than 0 s and was stopped") as slow:
        offload.KpiRunner(timeout_s=0.05).kpis_json(str(rig[0]), T0, T0 + 2 * 3_600_000)
    assert slow.value.status == 504
    busy = offload.KpiRunner(timeout_s=120)
    offload_wait = offload.SLOT_WAIT_S
    offload.SLOT_WAIT_S = 0.2
    try:
        with busy._slot:  # another range's computation holds the slot: a short wait, not 120 s
            started = time.monotonic()
            with pytest.raises(offload.KpiFailed, match="another range are being computed") as waited:
                busy.kpis_json(str(rig[0]), T0, T0 + 3_600_000)
            assert time.monotonic() - started < 30
    finally:
        offload.SLOT_WAIT_S = offload_wait
    assert waited.value.status == 503 and waited.value.retry_after_s == 60 and busy.children == 0


def test_the_api_says_why_when_the_computation_fails(tmp_path, web_login):
    not_a_db = tmp_path / "rigtel.db"
    not_a_db.write_text("this is not a database\n" * 100)
    cfg = settings_for(tmp_path, {"database_path": str(not_a_db), **web_login.overrides()})
    client = web_login.client(create_app(cfg, hub=None, bus=RecordingBus()), "viewer")  # type: ignore[arg-type]
    r = client.get(f"/api/kpis?from={T0}&to={T0 + 3_600_000}")
    assert r.status_code == 500 and "the KPI computation failed" in r.json["error"]
    assert r.headers["Content-Type"] == "application/json"
