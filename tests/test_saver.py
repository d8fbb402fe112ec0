"""The saver as a real process, fed by a real publisher through a real broker."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import zmq

from appliance.bus import Publisher
from appliance.bus.envelope import encode
from tests.conftest import Program, start_program

T0 = 1_764_449_520_000


def start_saver(broker, tmp: Path, db: Path, *extra: str) -> Program:
    saver = start_program(["saver", *broker.port_args(), "--set", f"database_path={db}", *extra], tmp)
    saver.wait_for("ready: writing")
    return saver


def rows(db: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


def wait_rows(db: Path, sql: str, want, timeout: float = 30) -> list[tuple]:
    """Poll the database (the saver commits on its own clock) until `sql` returns `want`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = rows(db, sql)
        except sqlite3.OperationalError:  # not created yet
            got = None
        if got == want:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{sql}: {got} after {timeout}s, wanted {want}")
        time.sleep(0.05)


def wait_saver_subscribed(pub: Publisher, db: Path, timeout: float = 30) -> None:
    """Publish probes until one sent now is stored: the saver's subscription has reached the
    broker (ZeroMQ drops what is published before that)."""
    deadline = time.monotonic() + timeout
    first = None
    while True:
        seq = pub.publish("probe", {"n": 1})
        first = first or seq
        try:
            (stored,) = rows(db, "SELECT coalesce(max(last_seq), 0) FROM streams WHERE src = ? AND boot = ? "
                                 "AND topic = 'probe'", pub.src, pub.boot)[0]
            if stored >= first:
                return
        except sqlite3.OperationalError:
            pass
        assert time.monotonic() < deadline, "the saver never stored a probe"
        time.sleep(0.05)


def sample_count(db: Path) -> int:
    return rows(db, "SELECT count(*) FROM samples WHERE ts >= ?", T0)[0][0]


def test_n_frames_in_n_rows_out_across_a_sigterm_restart(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    saver = start_saver(broker, tmp_path, db)
    cfg = broker.settings()
    with Publisher("sim", settings=cfg) as pub:
        wait_saver_subscribed(pub, db)
        for i in range(3000):
            pub.publish("drilling", {"DMEA": 5000 + i * 0.01, "HKLA": 210.0, "SPPA": 3000.0}, ts=T0 + i * 100)
        wait_rows(db, "SELECT count(*) FROM samples WHERE ts BETWEEN 1764449520000 AND 1764450520000", [(3000,)])
        assert saver.stop() == 0 and "stopped:" in saver.output
        saver = start_saver(broker, tmp_path, db)
        assert "(2 stream position(s) restored)" in saver.output  # drilling and probe
        wait_saver_subscribed(pub, db)
        pub.publish_batch("drilling", [(T0 + (3000 + i) * 100, {"DMEA": 6000.0, "HKLA": 1.0}) for i in range(2000)])
        wait_rows(db, "SELECT count(*) FROM samples WHERE ts BETWEEN 1764449520000 AND 1764450520000", [(5000,)])
    assert saver.stop() == 0
    drilling = rows(db, "SELECT first_seq, last_seq, messages FROM streams WHERE topic = 'drilling'")
    assert drilling == [(1, 3001, 3001)]
    # (probes sent before the subscription reached the broker are recorded as gaps: they
    # were lost, by ZeroMQ's design; the drilling stream, sent after, has none)
    assert rows(db, "SELECT count(*) FROM gaps WHERE topic = 'drilling'") == [(0,)]
    # the roll-ups saw every value
    assert rows(db, "SELECT sum(r.count) FROM rollup_1m r JOIN channels c ON c.id = r.channel_id "
                    "WHERE c.name = 'DMEA'") == [(5000,)]


def test_kill_9_mid_batch_loses_at_most_the_open_batch_and_reports_exactly_what(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    # a long flush interval keeps a batch open long enough to kill the saver inside it
    saver = start_saver(broker, tmp_path, db, "--set", "saver_flush_ms=10000")
    cfg = broker.settings()
    with Publisher("sim", settings=cfg) as pub:
        wait_saver_subscribed(pub, db)
        committed = rows(db, "SELECT last_seq FROM streams WHERE topic = 'probe'")
        assert committed
        for i in range(1, 201):
            pub.publish("drilling", {"DMEA": float(i)}, ts=T0 + i)
        # received into the open batch or still in flight: either way lost by the kill
        probe_seq = pub.publish("probe", {"n": 2})
        saver.proc.send_signal(signal.SIGKILL)
        assert saver.proc.wait(10) == -signal.SIGKILL
        # nothing of the open batch was committed
        assert rows(db, "SELECT count(*) FROM streams WHERE topic = 'drilling'") == [(0,)]
        saver = start_saver(broker, tmp_path, db)
        wait_saver_subscribed(pub, db)
        pub.publish("drilling", {"DMEA": 201.0}, ts=T0 + 201)
        wait_rows(db, "SELECT count(*) FROM streams WHERE topic = 'drilling'", [(1,)])
    assert saver.stop() == 0
    # both streams' losses are recorded exactly: drilling was never committed, so 1..200;
    # the probe stream resumes after its last committed seq
    assert rows(db, "SELECT first_seq, last_seq FROM gaps WHERE topic = 'drilling'") == [(1, 200)]
    (probe_gap,) = rows(db, "SELECT first_seq, last_seq FROM gaps WHERE topic = 'probe' ORDER BY id DESC LIMIT 1")
    assert probe_gap[0] == committed[0][0] + 1 and probe_gap[1] >= probe_seq
    assert rows(db, "SELECT ts FROM samples WHERE ts BETWEEN ? AND ?", T0, T0 + 1000) == [(T0 + 201,)]


def test_every_kind_of_bad_input_is_dead_lettered(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    saver = start_saver(broker, tmp_path, db, "--set", "bus_max_message_bytes=4096")
    raw = zmq.Context.instance().socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 1000)
    raw.connect(broker.frontend)
    seq = 0
    deadline = time.monotonic() + 30
    while not rows(db, "SELECT count(*) FROM streams WHERE src = 'rig-1.raw'")[0][0] if db.exists() else True:
        seq += 1
        raw.send_multipart([b"probe", encode("rig-1.raw", "b", seq, T0 + 3_600_000 + seq, data={"n": 1})])
        assert time.monotonic() < deadline
        time.sleep(0.05)
    bad = [
        [b"drilling", b"{nope"],
        [b"drilling", b'{"v":1,"src":"s","boot":"b","seq":1,"ts":1,"data":{"x":NaN}}'],
        [b"drilling", b'{"v":1,"src":"s","boot":"b","seq":"1","ts":1,"data":{}}'],
        [b"drilling", b"z" * 5000],
        [b"drilling"],
        [b"drilling", encode("rig-1.raw", "b", 1, T0, data={"SPPA": 99999.0, "RPMA": "x", "DMEA": 100.0})],
        [b"drilling", encode("rig-1.raw", "b", 1, T0, data={"DMEA": 100.0})],  # a repeat of seq 1
    ]
    for parts in bad:
        raw.send_multipart(parts)
    want = [("bad JSON",), ("bad JSON",), ("'seq' must",), ("oversized",), ("expected 2 frames",),
            ("SPPA: 99999 psi outside",), ("RPMA: not a number",), ("repeated or out of order",)]
    deadline = time.monotonic() + 30
    while True:
        reasons = [r for (r,) in rows(db, "SELECT reason FROM dead_letters ORDER BY id")]
        if len(reasons) >= len(want) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raw.close()
    assert saver.stop() == 0
    assert len(reasons) == len(want), reasons
    for (w,) in set(want):  # a batch's rows are not in arrival order: compare counts
        assert sum(w in r for r in reasons) == want.count((w,)), (w, reasons)
    # the good value of the frame with bad ones was kept, once
    assert rows(db, "SELECT count(*) FROM samples WHERE ts = ?", T0) == [(1,)]


def test_a_message_that_cannot_be_stored_is_dead_lettered_and_the_rest_of_its_batch_kept(tmp_path):
    from appliance.bus.envelope import Envelope, Frame
    from appliance.store.saver import Saver
    from appliance.store.writer import Writer
    from tests.conftest import settings_for

    cfg = settings_for(tmp_path, {"database_path": str(tmp_path / "s.db")})
    writer = Writer(tmp_path / "s.db")
    saver = Saver(cfg, writer)
    good = Envelope("drilling", "rig-1.a", "b", 1, T0, (Frame(T0, {"DMEA": 1.0}),), 50)
    # a payload the writer cannot encode back (a set is not JSON): a poisoned message
    poison = Envelope("custom", "rig-1.b", "b", 1, T0, (Frame(T0, {"x": {1, 2}}),), 50)
    later = Envelope("drilling", "rig-1.a", "b", 2, T0 + 1, (Frame(T0 + 1, {"DMEA": 2.0}),), 50)
    for e in (good, poison, later):
        saver.on_envelope(e)
    assert saver.flush()
    db = writer.db
    assert db.execute("SELECT count(*) FROM samples WHERE ts IN (?, ?)", (T0, T0 + 1)).fetchone() == (2,)
    (reason,) = db.execute("SELECT reason FROM dead_letters WHERE src = 'rig-1.b'").fetchone()
    assert reason.startswith("could not be stored: TypeError")
    writer.close()
