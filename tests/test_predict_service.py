"""`rigtel predictor` on the real bus: frames in, derived frames and alerts out, stored by
the real saver; acks and shelves through the real web API; the real simulator's events
detected. Real processes, real sockets on ephemeral ports, a real SQLite file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from appliance.bus import Publisher
from appliance.sources.events import parse_events
from appliance.web.app import create_app
from tests.conftest import Collector, start_program
from tests.test_predict_units import drilling
from tests.test_web_api import client, stored  # noqa: F401  (fixtures for the shelve API test)

T0 = 1_764_000_000_000


def alerts_in_db(db: Path) -> list[dict]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT ts, src, alert_id, state, data FROM alerts ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
    return [{"ts": ts, "src": src, "id": i, "state": st, **orjson.loads(d)} for ts, src, i, st, d in rows]


def wait_for(what: str, check, timeout: float = 60.0, poll=None):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        (poll or time.sleep)(0.05)


class Feed:
    """Publishes constructed drilling frames, one second of data time each, in batches."""

    def __init__(self, pub: Publisher) -> None:
        self.pub = pub
        self.k = 0

    def ts(self) -> int:
        return T0 + self.k * 1000

    def send(self, seconds: int, **over: float) -> None:
        frames = []
        for _ in range(seconds):
            self.k += 1
            frames.append((self.ts(), drilling(self.k, **over)))
        for i in range(0, len(frames), 200):
            self.pub.publish_batch("drilling", frames[i:i + 200])


@pytest.fixture
def appliance(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    common = [*broker.port_args(), "--set", f"database_path={db}", "--set", f"data_dir={tmp_path}"]
    saver = start_program(["saver", *common], tmp_path)
    saver.wait_for("ready:", 60)
    predictor = start_program(["predictor", *common, "--set", "predictor_derived_hz=1"], tmp_path)
    predictor.wait_for("ready:", 60)
    yield broker, db, common, saver, predictor
    for p in (predictor, saver):
        if p.proc.poll() is None:
            assert p.stop() == 0, p.output


def test_lifecycle_through_the_bus_into_the_saver(appliance, tmp_path, web_login):
    broker, db, common, saver, predictor = appliance
    cfg = broker.settings(database_path=str(db), **web_login.overrides())
    with Publisher("test-rig", settings=cfg) as pub, Collector(["alert", "derived"], cfg) as seen:
        feed = Feed(pub)

        def derived_seen():
            return any(e.topic == "derived" for e in seen.envelopes)

        # the predictor is subscribed once its derived frames come back
        wait_for("derived frames", lambda: derived_seen() or feed.send(5), 60, seen.wait_change)
        frames = [f for e in seen.envelopes if e.topic == "derived" for f in e.frames]
        assert frames[-1].data["RIGSTATE"] == 1.0 and frames[-1].data["ONBOTTOM"] == 1.0

        def states(alert_id: str) -> list[str]:
            return [a["state"] for a in alerts_in_db(db) if a["id"] == alert_id]

        # a limit from the dashboard, then the value crosses it: raised, stored by the saver
        pub.publish("control.thresholds", {"channel": "GASA", "hh": None, "h": 5.0, "l": None, "ll": None,
                                           "deadband": 1.0, "priority": "high", "by": "admin"})
        feed.send(20, GASA=8.0)
        wait_for("the GASA alarm stored", lambda: states("threshold.GASA.h") == ["active_unack"], 60)
        stored_event = next(a for a in alerts_in_db(db) if a["id"] == "threshold.GASA.h")
        assert stored_event["src"] == "rig-1.predictor" and stored_event["priority"] == "high"
        assert stored_event["evidence"]["value"] == 8.0 and stored_event["kind"] == "threshold"

        # acknowledged through the web API; the clear then goes straight to normal
        app = create_app(cfg, hub=None, bus=pub)
        web = web_login.client(app, "viewer")  # a viewer may acknowledge: the driller must
        r = web.post("/api/alerts/threshold.GASA.h/ack")
        assert r.status_code == 202 and r.json["state"] == "active_ack"
        wait_for("the ack stored", lambda: states("threshold.GASA.h")[-1:] == ["active_ack"], 60)
        feed.send(20, GASA=1.0)
        wait_for("the clear stored", lambda: states("threshold.GASA.h")[-1:] == ["normal"], 60)

        # shelved by an admin for a minute of data time: silent while shelved, back after
        feed.send(20, GASA=8.0)
        wait_for("raised again", lambda: states("threshold.GASA.h")[-1:] == ["active_unack"], 60)
        admin = web_login.client(app, "admin")  # shelving is for admins (a viewer is refused below)
        r = admin.post("/api/alerts/threshold.GASA.h/shelve", json={"minutes": 1, "reason": "gas sensor swap"})
        assert r.status_code == 202 and r.json["state"] == "shelved", r.json
        wait_for("the shelve stored", lambda: states("threshold.GASA.h")[-1:] == ["shelved"], 60)
        time.sleep(0.5)  # let the shelve reach the predictor before more data
        feed.send(30, GASA=8.0)
        feed.send(40, GASA=8.0)
        wait_for("back from the shelf", lambda: states("threshold.GASA.h")[-1:] == ["active_unack"], 60)
        back = [a for a in alerts_in_db(db) if a["id"] == "threshold.GASA.h"][-1]
        assert back["action"] == "unshelve" and back["src"] == "rig-1.predictor"
        shelved = [a for a in alerts_in_db(db) if a["id"] == "threshold.GASA.h" and a["state"] == "shelved"]
        assert shelved[0]["reason"] == "gas sensor swap" and shelved[0]["minutes"] == 1
        assert shelved[0]["by"] == "admin"
        assert web.post("/api/alerts/threshold.GASA.h/shelve",
                           json={"minutes": 1, "reason": "x"}).status_code == 403  # shelving is for admins

        # suppression: a low pressure limit means nothing with the pumps off
        pub.publish("control.thresholds", {"channel": "SPPA", "l": 1000.0, "by": "admin"})
        feed.send(40, SPPA=800.0)
        wait_for("low pressure raised", lambda: states("threshold.SPPA.l")[-1:] == ["active_unack"], 60)
        feed.send(40, SPPA=0.0, MFIA=0.0, MFOA=0.0, SPM1=0.0, SPM2=0.0, RPMA=0.0, TQA=0.0)
        wait_for("suppressed", lambda: states("threshold.SPPA.l")[-1:] == ["cleared_unack"], 60)
        cleared = [a for a in alerts_in_db(db) if a["id"] == "threshold.SPPA.l"][-1]
        assert cleared["evidence"]["cleared"].startswith("suppressed: pumps")

    # a restarted predictor takes over the alarms left raised
    assert predictor.stop() == 0
    assert "stopped" in predictor.output
    again = start_program(["predictor", *common], tmp_path)
    again.wait_for(r"limits for \d+ channel\(s\); [1-9]\d* alarm\(s\) taken over", 60)
    assert again.stop() == 0


def test_shelve_api_checks_its_input(client):  # noqa: F811
    r = client.post("/api/alerts/kick-1/shelve", json={"minutes": 30, "reason": "well control drill"})
    assert r.status_code == 202 and r.json["state"] == "shelved"
    topic, event = [m for m in client.bus.sent if m[0] != "audit"][-1]
    assert topic == "alert" and event["action"] == "shelve" and event["minutes"] == 30
    assert event["until_ms"] == r.json["until_ms"] and event["kind"] == "kick"
    for body, why in [({"minutes": 0, "reason": "x"}, "'minutes'"), ({"minutes": 30}, "'reason'"),
                      ({"minutes": True, "reason": "x"}, "'minutes'"), ({"minutes": 99999, "reason": "x"}, "'minutes'"),
                      ("nope", "JSON object")]:
        r = client.post("/api/alerts/kick-1/shelve", json=body)
        assert r.status_code == 400 and why in r.json["error"]
    assert client.post("/api/alerts/nope/shelve", json={"minutes": 5, "reason": "x"}).status_code == 404


def test_simulator_events_are_detected_on_the_bus(appliance, tmp_path):
    broker, db, common, saver, predictor = appliance
    spec = "kick@25m+10m,flatline:SPPA@45m+6m,loss@60m+8m"
    cfg = broker.settings()
    with Collector(["alert", "sim.label", "derived"], cfg) as seen:
        sim = start_program(["simulate", *common, "--rate", "1", "--speed", "300", "--duration", "75m",
                             "--events", spec, "--seed", "3"], tmp_path)
        sim.wait_for("duration done", 120)
        assert sim.stop() == 0
        wait_for("the last label", lambda: sum(e.topic == "sim.label" for e in seen.envelopes) >= 6, 30,
                 seen.wait_change)
        labels = [f.data for e in seen.envelopes if e.topic == "sim.label" for f in e.frames if f.data["phase"] == "start"]
        last_ms = labels[0]["start_ms"] - 25 * 60_000 + 75 * 60_000  # the simulation's last frame

        def caught_up():
            return any(f.ts >= last_ms - 2000 for e in list(seen.envelopes) if e.topic == "derived" for f in e.frames)
        wait_for("the predictor to work through the run", caught_up, 120, seen.wait_change)
    raised = [(f.ts, f.data) for e in seen.envelopes if e.topic == "alert" for f in e.frames
              if f.data["state"] == "active_unack"]
    expect = {"kick": "kick", "loss": "loss", "flatline": "sensor.flatline.SPPA"}
    for label in labels:
        alert_id = expect[label["kind"]]
        hits = [ts for ts, a in raised if a["id"] == alert_id and label["start_ms"] <= ts <= label["end_ms"]]
        assert hits, (label, raised)
        assert hits[0] - label["start_ms"] <= 120_000, (label, hits[0] - label["start_ms"])
    # nothing else raised outside the events
    windows = [(lb["start_ms"], lb["end_ms"] + 600_000) for lb in labels]
    stray = [a["id"] for ts, a in raised if not any(s <= ts <= e for s, e in windows)]
    assert stray == [], stray
    assert len(parse_events(spec)) == len(labels)
