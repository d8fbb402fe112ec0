"""Alarm thresholds: the check, the API, the writer, and the round trip web -> bus -> saver."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from appliance.store.thresholds import TOPIC, ThresholdError, check
from appliance.store import read
from appliance.store.schema import connect_reader
from appliance.store.writer import Batch, Writer
from tests.browser import READY_WEB
from tests.conftest import make_web_login, start_program
from tests.test_saver import wait_rows
from tests.test_web_api import client, stored  # noqa: F401 - fixtures
from tests.test_writer import T0, env

SPP = {"hh": 4500.0, "h": 4000.0, "l": 1000.0, "ll": 500.0, "deadband": 50.0, "priority": "high"}


# -- the check ----------------------------------------------------------------------------


def test_the_settings_priorities_are_the_predictors():
    """Thresholds are checked without the predictor's modules (memory: the saver and the web
    load them otherwise), so their priority names are written out twice and kept equal here."""
    from appliance.predict import alarms
    from appliance.store import thresholds

    assert thresholds.PRIORITIES == tuple(reversed(alarms.PRIORITIES))


def test_a_good_setting_passes_and_unset_limits_are_none():
    t = check({"channel": "SPPA", **SPP, "by": "driller"})
    assert (t.ll, t.l, t.h, t.hh, t.deadband, t.priority, t.by) == (500.0, 1000.0, 4000.0, 4500.0, 50.0, "high",
                                                                     "driller")
    t = check({"h": 30}, channel="TVA")
    assert t.h == 30.0 and t.hh is None and t.ll is None and t.priority is None and not t.cleared
    assert check({}, channel="TVA").cleared


@pytest.mark.parametrize("data, message", [
    ({"h": 4000, "hh": 4000}, "H (4000) must be below HH (4000)"),
    ({"ll": 900, "l": 800}, "LL (900) must be below L (800)"),
    ({"l": 5000, "hh": 4000}, "L (5000) must be below HH (4000)"),
    ({"hh": 16000}, "HH 16000 psi is outside SPPA's plausible range 0..15000 psi"),
    ({"ll": -1}, "outside SPPA's plausible range"),
    ({"h": float("nan")}, "H must be a finite number"),
    ({"h": float("inf")}, "H must be a finite number"),
    ({"h": "4000"}, "H must be a number or null"),
    ({"h": True}, "H must be a number or null"),
    ({"deadband": -5}, "deadband must not be negative"),
    ({"deadband": 20000}, "wider than SPPA's whole range"),
    ({"priority": "urgentish"}, "priority must be one of low, medium, high, critical"),
    ({"hi": 3}, "unknown field(s) hi"),
    ({"channel": "TVA"}, "the body names channel 'TVA' but the address 'SPPA'"),
    ({"by": 3}, "by must be a string"),
])
def test_bad_settings_are_refused_with_the_reason(data, message):
    with pytest.raises(ThresholdError) as e:
        check(data, channel="SPPA")
    assert message in str(e.value)


def test_unknown_channels_are_refused_unless_they_are_stored_derived_channels():
    with pytest.raises(ThresholdError, match="unknown channel 'MYCALC'"):
        check({"h": 1e5}, channel="MYCALC")
    assert check({"h": 1e5, "hh": 2e5}, channel="MYCALC", extra_channels=frozenset({"MYCALC"})).hh == 2e5
    with pytest.raises(ThresholdError, match="must be below"):
        check({"h": 3e5, "hh": 2e5}, channel="MYCALC", extra_channels=frozenset({"MYCALC"}))
    # the predictor's derived channels are in the catalogue, with their ranges
    assert check({"h": 8.0, "hh": 15.0}, channel="PITDEV").hh == 15.0
    with pytest.raises(ThresholdError, match="outside PITDEV's plausible range"):
        check({"ll": -20000.0}, channel="PITDEV")
    with pytest.raises(ThresholdError, match="RIGSTATE is a code .* alarm limits do not apply"):
        check({"h": 3.0}, channel="RIGSTATE")
    with pytest.raises(ThresholdError, match="name the channel"):
        check({"h": 1})
    with pytest.raises(ThresholdError, match="JSON object"):
        check([1, 2], channel="SPPA")


# -- the writer and the reader ------------------------------------------------------------


def test_the_newest_setting_per_channel_is_in_force_and_bad_ones_are_dead_lettered(tmp_path):
    w = Writer(tmp_path / "t.db")
    w.commit(Batch([env("drilling", 1, [(T0, {"SPPA": 3000.0})]),
                    env(TOPIC, 1, [(T0 + 1, {"channel": "SPPA", **SPP, "by": "a"})], src="rig-1.web"),
                    env(TOPIC, 2, [(T0 + 2, {"channel": "TVA", "h": 900.0, "hh": None, "l": None, "ll": None,
                                             "deadband": None, "priority": None, "by": "a"})], src="rig-1.web")]))
    stats = w.commit(Batch([
        env(TOPIC, 3, [(T0 + 3, {"channel": "SPPA", "hh": 5000.0, "h": 4200.0, "by": "b"})], src="rig-1.web"),
        env(TOPIC, 4, [(T0 + 4, {"channel": "SPPA", "h": 5000.0, "hh": 4000.0, "by": "c"})], src="rig-1.web"),
        env(TOPIC, 5, [(T0 + 5, {"channel": "NOPE", "h": 1.0, "by": "c"})], src="rig-1.web")]))
    assert stats.thresholds == 1 and stats.dead_letters == 2
    reasons = [r for (r,) in w.db.execute("SELECT reason FROM dead_letters ORDER BY id")]
    assert "threshold refused: H (5000) must be below HH (4000)" in reasons[0]
    assert "unknown channel 'NOPE'" in reasons[1]
    w.close()
    db = connect_reader(tmp_path / "t.db")
    current = read.current_thresholds(db)
    assert set(current) == {"SPPA", "TVA"}
    assert current["SPPA"]["hh"] == 5000.0 and current["SPPA"]["h"] == 4200.0 and current["SPPA"]["l"] is None
    assert current["SPPA"]["by"] == "b" and current["SPPA"]["ts"] == T0 + 3 and current["SPPA"]["src"] == "rig-1.web"
    assert current["TVA"]["h"] == 900.0
    assert [h["by"] for h in read.threshold_history(db, "SPPA")] == ["b", "a"]
    # events of the topic never land in the generic events table
    assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_a_database_from_before_the_table_reads_as_no_thresholds(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("CREATE TABLE samples (ts INTEGER PRIMARY KEY)").connection.close()
    db = connect_reader(path)
    assert read.current_thresholds(db) == {} and read.threshold_history(db, "SPPA") == []


# -- the API (Flask test client) ----------------------------------------------------------


def test_get_lists_every_catalogue_channel_with_its_range(client):  # noqa: F811
    r = client.get("/api/thresholds")
    assert r.status_code == 200
    rows = {row["channel"]: row for row in r.json["thresholds"]}
    assert rows["SPPA"]["unit"] == "psi" and rows["SPPA"]["high"] == 15000.0 and rows["SPPA"]["hh"] is None
    assert r.json["priorities"] == ["low", "medium", "high", "critical"]
    assert rows["PITDEV"]["unit"] == "bbl" and rows["ROP_RESID"]["low"] == -2000.0
    assert "RIGSTATE" not in rows and "ONBOTTOM" not in rows


def test_put_checks_and_publishes_on_the_control_topic(client):  # noqa: F811
    r = client.put("/api/thresholds/SPPA", json=SPP)
    assert r.status_code == 202 and r.json["hh"] == 4500.0
    topic, data = [m for m in client.bus.sent if m[0] != "audit"][-1]
    assert topic == TOPIC
    assert data == {"channel": "SPPA", **SPP, "by": "admin"}  # from the login


@pytest.mark.parametrize("path, body, status, message", [
    ("/api/thresholds/SPPA", {"h": 5000, "hh": 4000}, 400, "H (5000) must be below HH (4000)"),
    ("/api/thresholds/SPPA", {"hh": 99999}, 400, "outside SPPA's plausible range"),
    ("/api/thresholds/NOPE", {"h": 1}, 400, "unknown channel 'NOPE'"),
    ("/api/thresholds/SPPA", {"h": 1, "by": "me"}, 400, "set by the appliance"),
    ("/api/thresholds/SPPA", "not json", 400, "send the limits as a JSON object"),
])
def test_bad_puts_get_a_clear_400_and_publish_nothing(client, path, body, status, message):  # noqa: F811
    if isinstance(body, str):
        r = client.put(path, data=body, content_type="text/plain")
    else:
        r = client.put(path, json=body)
    assert r.status_code == status and message in r.json["error"], r.json
    assert [m for m in client.bus.sent if m[0] != "audit"] == []  # only the audit trail has it


# -- through the real bus: web program -> broker -> saver -> SQLite -> web program ----------


def _http(url: str, method: str = "GET", body: dict | None = None, login=None) -> tuple[int, dict]:
    import ssl

    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "X-Requested-With": "rigtel",
                                          "Authorization": login.header("admin")})
    try:
        with urllib.request.urlopen(req, timeout=10,
                                    context=ssl.create_default_context(cafile=str(login.cert_file))) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_put_is_stored_by_the_saver_and_read_back_by_the_api(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    common = [*broker.port_args(), "--set", f"database_path={db}", "--set", f"data_dir={tmp_path}"]
    saver = start_program(["saver", *common], tmp_path)
    saver.wait_for("ready: writing")
    login = make_web_login(tmp_path)
    web = start_program(["web", *common, "--set", "web_port=0", "--set", "web_http_port=-1", *login.args(),
                         "--set", f"supervisor_socket={tmp_path / 'none.sock'}"], tmp_path)
    m = web.wait_for(READY_WEB)
    url = f"https://127.0.0.1:{m.group(1)}"
    # the web program's publisher connects on first use; ZeroMQ drops what it sends before
    # the saver's subscription reaches it, so the same setting is re-sent until it is stored
    # (a repeat is harmless: the newest row wins)
    import time

    deadline = time.monotonic() + 60
    while True:
        status, sent = _http(url + "/api/thresholds/TVA", "PUT", {"h": 850.0, "hh": 900.0, "deadband": 2.0}, login)
        assert status == 202, sent
        got = [row for row in _http(url + "/api/thresholds", login=login)[1]["thresholds"]
               if row["channel"] == "TVA"][0]
        if got["ts"] is not None:
            break
        assert time.monotonic() < deadline, "the saver never stored the threshold"
        time.sleep(0.5)
    assert (got["h"], got["hh"], got["l"], got["deadband"]) == (850.0, 900.0, None, 2.0)
    assert got["by"] == "admin"
    status, bad = _http(url + "/api/thresholds/TVA", "PUT", {"h": 950.0, "hh": 900.0}, login)
    assert status == 400 and "must be below" in bad["error"]
    wait_rows(db, "SELECT channel, h, hh FROM thresholds GROUP BY channel", [("TVA", 850.0, 900.0)])
    assert web.stop() == 0 and saver.stop() == 0
