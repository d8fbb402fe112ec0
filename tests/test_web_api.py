"""The JSON API through Flask's test client, over a real SQLite file made by the writer."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from appliance.store.writer import Batch, Writer
from appliance.web.app import create_app
from tests.conftest import settings_for
from tests.test_writer import T0, env


class RecordingBus:
    """Stands in for the bus link: records what the API publishes."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def publish(self, topic: str, data: dict) -> int:
        self.sent.append((topic, data))
        return len(self.sent)


@pytest.fixture
def stored(tmp_path):
    db = tmp_path / "rigtel.db"
    w = Writer(db)
    frames = [(T0 + i * 1000, {"DMEA": 5000.0 + i / 10, "HKLA": 200.0 + i % 7}) for i in range(7200)]
    w.commit(Batch([env("drilling", 1, frames)]))
    w.commit(Batch([env("alert", 1, [(T0 + 5000, {"id": "kick-1", "kind": "kick", "state": "active_unack",
                                                   "priority": "high", "message": "pit gain 6 bbl"})],
                        src="rig-1.predictor"),
                    env("alert", 2, [(T0 + 6000, {"id": "wash-1", "kind": "washout", "state": "normal",
                                                  "priority": "low", "message": "gone"})], src="rig-1.predictor")]))
    w.close()
    return db


@pytest.fixture
def client(tmp_path, stored, web_login):
    cfg = settings_for(tmp_path, {"database_path": str(stored), "supervisor_socket": str(tmp_path / "none.sock"),
                                  **web_login.overrides()})
    bus = RecordingBus()
    app = create_app(cfg, hub=None, bus=bus)  # type: ignore[arg-type]
    app.testing = True
    c = web_login.client(app)
    c.bus = bus
    return c


def test_healthz_is_data_free_and_headers_are_strict(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and set(r.json) == {"status", "version"}
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_channels_and_series(client):
    names = {c["name"]: c for c in client.get("/api/channels").json}
    assert names["HKLA"]["unit"] == "klbf" and names["HKLA"]["description"].startswith("Hookload")
    r = client.get(f"/api/series?channels=HKLA,DMEA&from={T0}&to={T0 + 600_000}")
    assert r.status_code == 200 and r.json["resolution"] == "raw"
    assert len(r.json["channels"]["DMEA"]["value"]) == 600
    assert r.headers["Cache-Control"] == "no-store"
    r = client.get(f"/api/series?channels=HKLA&from={T0}&to={T0 + 7_200_000}")
    assert r.json["resolution"] == "1m" and len(r.json["channels"]["HKLA"]["ts"]) == 120


@pytest.mark.parametrize("query", [
    f"channels=HKLA,DMEA&from={T0}&to={T0 + 600_000}",  # raw
    f"channels=DMEA,HKLA,DMEA&from={T0 - 3_600_000}&to={T0 + 7_200_000}&max_points=200",  # 1m, a name twice
    f"channels=HKLA&from={T0 + 9_000_000}&to={T0 + 9_600_000}&resolution=raw",  # nothing there
])
def test_series_is_sent_a_channel_at_a_time_as_the_same_json(client, stored, query):
    """/api/series sends read.series_json's pieces (one channel's values at a time in memory):
    byte for byte orjson.dumps(read.series(...)), with its Content-Length."""
    import orjson

    from appliance.store import read
    from appliance.store.schema import connect_reader

    r = client.get(f"/api/series?{query}")
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(r.data))
    args = dict(a.split("=") for a in query.split("&"))
    conn = connect_reader(stored)
    want = read.series(conn, args["channels"].split(","), int(args["from"]), int(args["to"]),
                       int(args.get("max_points", read.DEFAULT_MAX_POINTS)), args.get("resolution"))
    conn.close()
    assert r.data == orjson.dumps(want)


@pytest.mark.parametrize("query, message", [
    ("channels=NOPE", "unknown channel(s): NOPE"),
    ("", "parameter 'channels' is required"),
    (f"channels=HKLA&from={T0 + 10}&to={T0}", "empty or inverted"),
    ("channels=HKLA&from=yesterday", "must be a whole number"),
    ("channels=HKLA&max_points=0", "max_points"),
    ("channels=HKLA&resolution=5s", "resolution must be"),
])
def test_bad_series_requests_get_a_clear_400(client, query, message):
    r = client.get(f"/api/series?{query}")
    assert r.status_code == 400 and message in r.json["error"]


def test_export_streams_csv_with_units(client):
    r = client.get(f"/api/export?channels=DMEA,HKLA&from={T0}&to={T0 + 10_000}")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert rows[0] == ["time_utc", "ts_ms", "DMEA [ft]", "HKLA [klbf]"]
    assert len(rows) == 11 and rows[1][1] == str(T0) and float(rows[1][2]) == 5000.0
    assert rows[1][0].endswith("Z")
    assert client.get("/api/export?channels=NOPE").status_code == 400


@pytest.mark.parametrize("fmt, mimetype, suffix", [("las", "text/plain", ".las"), ("witsml", "application/xml", ".xml"),
                                                    ("csv", "text/csv", ".csv")])
def test_export_in_each_format_reads_back_as_stored(client, tmp_path, fmt, mimetype, suffix):
    from appliance.sources.files import open_log

    r = client.get(f"/api/export?channels=DMEA,HKLA&from={T0}&to={T0 + 3_600_000}&format={fmt}")
    assert r.status_code == 200 and r.mimetype == mimetype
    assert r.headers["Content-Disposition"].endswith(f'{suffix}"')
    path = tmp_path / f"export{suffix}"
    path.write_bytes(r.get_data())
    rows = list(open_log(str(path)).rows())
    assert len(rows) == 3600
    assert rows[10] == (T0 + 10_000, {"DMEA": 5000.0 + 10 / 10, "HKLA": 200.0 + 10 % 7})


def test_export_refuses_an_unknown_format(client):
    r = client.get(f"/api/export?channels=DMEA&from={T0}&to={T0 + 1000}&format=xlsx")
    assert r.status_code == 400 and "csv, las, witsml" in r.json["error"]


def test_alerts_active_history_and_acknowledge(client):
    active = client.get("/api/alerts").json
    assert [a["id"] for a in active] == ["kick-1"] and active[0]["state"] == "active_unack"
    history = client.get(f"/api/alerts?state=all&from={T0}&to={T0 + 10_000}").json
    assert [a["id"] for a in history] == ["wash-1", "kick-1"]
    r = client.post("/api/alerts/kick-1/ack")
    assert r.status_code == 202 and r.json == {"id": "kick-1", "state": "active_ack"}
    topic, event = next(m for m in client.bus.sent if m[0] == "alert")
    assert topic == "alert" and event["id"] == "kick-1" and event["state"] == "active_ack"
    assert event["kind"] == "kick" and event["action"] == "ack" and event["by"] == "admin"
    assert client.bus.sent[-1][0] == "audit" and client.bus.sent[-1][1]["path"] == "/api/alerts/kick-1/ack"
    assert client.post("/api/alerts/wash-1/ack").status_code == 409
    assert client.post("/api/alerts/nope/ack").status_code == 404
    assert client.get("/api/alerts?state=maybe").status_code == 400


def test_system_reports_storage_and_why_supervisord_is_unknown(client, stored):
    r = client.get("/api/system").json
    assert r["database"]["channels"] == 2 and r["database"]["first_ts"] == T0
    assert r["programs"] == [] and "no supervisord control socket" in r["programs_error"]
    assert r["disk"]["free_bytes"] > 0


def test_no_database_yet_is_a_503_that_says_why(tmp_path, web_login):
    cfg = settings_for(tmp_path, {"database_path": str(tmp_path / "missing.db"), **web_login.overrides()})
    app = create_app(cfg, hub=None, bus=RecordingBus())  # type: ignore[arg-type]
    r = web_login.client(app, "viewer").get("/api/channels")
    assert r.status_code == 503 and "is the saver running" in orjson.loads(r.data)["error"]


def test_stream_parameters_are_checked_and_a_head_request_gives_its_slot_back(tmp_path, stored, web_login):
    from appliance.web.hub import LiveHub

    cfg = settings_for(tmp_path, {"database_path": str(stored), **web_login.overrides()})
    hub = LiveHub(cfg, max_streams=1)  # not started: no bus needed to hand out slots
    app = create_app(cfg, hub=hub, bus=RecordingBus())  # type: ignore[arg-type]
    c = web_login.client(app, "viewer")
    assert c.get("/api/stream?rate_hz=abc").status_code == 400
    assert "from 0.2 to 20" in c.get("/api/stream?rate_hz=0.000001").json["error"]
    for _ in range(3):  # the server closes each response, as waitress does
        with c.head("/api/stream") as r:
            assert r.status_code == 200
    assert hub.stream_count() == 0
    assert c.get(f"/api/series?channels=HKLA&to={10**20}").status_code == 400
    assert c.get("/api/export?channels=HKLA&from=0&to=9000000000000").status_code == 200


def test_latest_answers_for_every_stored_channel_live_or_not(tmp_path, stored, web_login):
    """The hub keeps only `drilling` and `derived` live; a custom topic's channel (and any
    channel before live data comes) is answered from storage, the newer of the two winning."""
    from appliance.bus.envelope import Envelope, Frame
    from appliance.web.hub import LiveHub

    w = Writer(stored)
    w.commit(Batch([env("custom_topic", 1, [(T0 + 1000, {"shaker_load": 0.6}), (T0 + 90_000, {"shaker_load": 0.7})],
                        src="rig-1.mud-logger")]))
    w.close()
    cfg = settings_for(tmp_path, {"database_path": str(stored), **web_login.overrides()})
    hub = LiveHub(cfg, max_streams=1)  # not started: fed by hand below
    c = web_login.client(create_app(cfg, hub=hub, bus=RecordingBus()), "viewer")  # type: ignore[arg-type]
    r = c.get("/api/latest?channels=custom_topic.shaker_load,HKLA,NOPE").json
    last = T0 + 7199 * 1000
    assert r["values"] == {"custom_topic.shaker_load": {"ts": T0 + 90_000, "value": 0.7},
                           "HKLA": {"ts": last, "value": 200.0 + 7199 % 7}}  # unknown names left out
    hub.on_envelope(Envelope("drilling", "x", "b", 1, last + 1000, (Frame(last + 1000, {"HKLA": 250.0}),), 10))
    r = c.get("/api/latest?channels=HKLA,custom_topic.shaker_load").json
    assert r["values"]["HKLA"] == {"ts": last + 1000, "value": 250.0}  # live, newer than stored
    assert r["values"]["custom_topic.shaker_load"]["value"] == 0.7
    every = c.get("/api/latest").json["values"]
    assert set(every) == {"DMEA", "HKLA", "custom_topic.shaker_load"} and every["HKLA"]["value"] == 250.0
    # no database yet: the live values, not a 503
    cfg = settings_for(tmp_path, {"database_path": str(tmp_path / "missing.db"), **web_login.overrides()})
    c = web_login.client(create_app(cfg, hub=hub, bus=RecordingBus()), "viewer")  # type: ignore[arg-type]
    r = c.get("/api/latest")
    assert r.status_code == 200 and set(r.json["values"]) == {"HKLA"}


def test_latest_reads_the_roll_ups_by_index_never_by_scan(stored):
    """A scan of rollup_1m took 2.2 s for 200 channels over a week; the index, under 1 ms."""
    from appliance.store import read
    from appliance.store.schema import connect_reader

    db = connect_reader(str(stored))
    plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + read.LATEST_SQL)]
    assert not [p for p in plan if p.startswith("SCAN") and "channels" not in p and not p.startswith("SCAN c")], plan
    assert any(p.startswith("SEARCH r USING PRIMARY KEY (channel_id=? AND bucket=?)") for p in plan), plan
    db.close()


def test_the_live_hub_takes_only_its_own_topics(tmp_path):
    from appliance.bus.envelope import Envelope, Frame
    from appliance.web.hub import LiveHub

    hub = LiveHub(settings_for(tmp_path, {}), max_streams=2)
    s = hub.open(None)
    hub.on_envelope(Envelope("drilling_test", "x", "b", 1, T0, (Frame(T0, {"DMEA": 0.0}),), 10))
    hub.on_envelope(Envelope("drilling", "x", "b", 1, T0, (Frame(T0, {"DMEA": 5000.0}),), 10))
    assert hub.latest == {"DMEA": (T0, 5000.0)}
    assert s.drain()[0] == [(T0, {"DMEA": 5000.0})]


def test_a_stalled_live_stream_holds_at_most_its_byte_bound(tmp_path):
    """A browser that stops reading is skipped forward: what its queue holds is bounded in
    bytes (measured with tracemalloc), the newest frames are kept in order, the rest counted."""
    import tracemalloc

    from appliance.bus.envelope import Envelope, Frame
    from appliance.web.hub import QUEUE_BYTES, LiveHub

    hub = LiveHub(settings_for(tmp_path, {}), max_streams=3)
    stalled, some = hub.open(None), hub.open(frozenset({"C000", "C001"}))
    names = [f"C{i:03d}" for i in range(20)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(10_000):  # 100 s at 100 Hz, 20 channels
            ts = T0 + n * 10
            hub.on_envelope(Envelope("drilling", "x", "b", n + 1, ts,
                                     (Frame(ts, {c: n + i / 100 for i, c in enumerate(names)}),), 10))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < min(QUEUE_BYTES * 2 + 100_000, 1_200_000), held  # both streams, with the hub's own state
    frames, _ = stalled.drain()
    assert 300 < len(frames) < 1000 and stalled.skipped == 10_000 - len(frames)
    assert [ts for ts, _ in frames] == [T0 + n * 10 for n in range(10_000 - len(frames), 10_000)]
    assert frames[-1][1]["C019"] == 9999 + 0.19
    kept, _ = some.drain()
    assert kept[-1] == (T0 + 99_990, {"C000": 9999.0, "C001": 9999.01}) and some.skipped == 10_000 - len(kept)
    assert stalled.drain()[0] == [] and stalled.queued_bytes == 0


def test_idle_web_threads_hold_no_finished_connection():
    """waitress's workers keep their last task (the connection: request, buffers) while they
    wait; server.task_dispatcher's hand-over lets it go. Served by every thread in turn, then
    no connection object is left alive, against one per thread with waitress's own pool."""
    import concurrent.futures
    import gc
    import threading
    import time
    import urllib.request

    from waitress.channel import HTTPChannel
    from waitress.server import create_server

    from appliance.web.server import task_dispatcher

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x" * 20_000]

    def alive_after_requests(**kw) -> int:
        server = create_server(app, host="127.0.0.1", port=0, threads=8, **kw)
        threading.Thread(target=server.run, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.effective_port}/"
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                assert all(len(b) == 20_000 for b in pool.map(
                    lambda _: urllib.request.urlopen(url, timeout=30).read(), range(200)))
            deadline = time.monotonic() + 10
            while True:  # the loop closes each connection once its response is sent
                gc.collect()
                alive = [c for c in gc.get_objects() if isinstance(c, HTTPChannel) and c.server is server]
                if all(not c.connected for c in alive) or time.monotonic() > deadline:
                    return len(alive)
                time.sleep(0.1)
        finally:
            server.close()

    assert alive_after_requests(_dispatcher=task_dispatcher(8)) == 0
    assert alive_after_requests() > 0  # waitress's own pool: the hazard is real


def test_a_failed_task_is_named_in_waitress_log_line():
    """waitress logs "Exception when servicing %r" with the task it handed out: the wrapper
    has dropped its task by then, and must still name it."""
    from appliance.web.server import _Released

    class Task:
        def service(self):
            raise RuntimeError("boom")

        def __repr__(self):
            return "<channel 42>"

    wrapped = _Released(Task())
    with pytest.raises(RuntimeError):
        wrapped.service()
    assert wrapped.task is None
    assert repr(wrapped) == "<channel 42>"


def test_tracemalloc_snapshots_only_when_python_traces(tmp_path):
    """server.TraceDumps: the memory-debugging snapshots exist only under PYTHONTRACEMALLOC
    (tracemalloc tracing), never otherwise."""
    import tracemalloc

    from appliance.web.server import TraceDumps

    off = TraceDumps(str(tmp_path / "off"))
    off.next = 0.0
    off.tick()
    assert not (tmp_path / "off").exists()
    tracemalloc.start()
    try:
        on = TraceDumps(str(tmp_path / "on"))
        on.next = 0.0
        on.tick()
    finally:
        tracemalloc.stop()
    (dump,) = (tmp_path / "on").iterdir()
    assert dump.name.endswith(".tracemalloc") and tracemalloc.Snapshot.load(str(dump)).traces
    tracemalloc.start()
    try:  # left on, it keeps the last KEEP snapshots: it must not fill the data disk
        for minute in range(TraceDumps.KEEP + 3):
            on.started -= 60  # a minute later each time: a new file name
            on.next = 0.0
            on.tick()
    finally:
        tracemalloc.stop()
    assert len(list((tmp_path / "on").iterdir())) == TraceDumps.KEEP
