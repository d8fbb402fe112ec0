"""The supervisord event listener's logic: parsing the protocol, which events become alerts,
and delivery in order with retries until stored. The real thing under supervisord is in
test_install.py (kill -9 of each program) and test_supervised.py."""

from __future__ import annotations

import os
import sqlite3

from appliance.ops.program_alerts import AlertTable, Event, Outbox, Protocol, alert_for, parse_events
from appliance.store.schema import DDL


def _event(name: str, payload: str) -> bytes:
    body = payload.encode()
    return (f"ver:3.0 server:supervisor serial:21 pool:program-alerts poolserial:10 "
            f"eventname:{name} len:{len(body)}\n").encode() + body


def test_parse_events_handles_split_and_joined_reads():
    one = _event("PROCESS_STATE_EXITED", "processname:saver groupname:saver from_state:RUNNING expected:0 pid:42")
    two = _event("PROCESS_STATE_RUNNING", "processname:saver groupname:saver from_state:STARTING pid:43")
    stream = one + two
    events, rest = parse_events(stream[:10])
    assert events == [] and rest == stream[:10]
    events, rest = parse_events(stream[:len(one) + 5])
    assert [e.name for e in events] == ["PROCESS_STATE_EXITED"] and rest == two[:5]
    events, rest = parse_events(rest + two[5:])
    assert [e.payload["pid"] for e in events] == ["43"] and rest == b""


def test_which_events_are_alerts():
    exited = Event("PROCESS_STATE_EXITED", {}, {"processname": "saver", "groupname": "saver",
                                                "expected": "0", "pid": "42"})
    a = alert_for(exited)
    assert a["id"] == "program-saver" and a["state"] == "active_unack" and a["priority"] == "medium"
    assert "exited unexpectedly" in a["message"] and "supervisorctl tail saver" in a["message"]
    assert alert_for(exited._replace(payload={**exited.payload, "expected": "1"})) is None  # a normal exit
    fatal = alert_for(Event("PROCESS_STATE_FATAL", {}, {"processname": "web", "groupname": "web"}))
    assert fatal["priority"] == "high" and "supervisorctl start web" in fatal["message"]
    running = alert_for(Event("PROCESS_STATE_RUNNING", {}, {"processname": "web", "groupname": "web"}))
    assert running["state"] == "cleared_unack"
    assert alert_for(Event("PROCESS_STATE_STOPPED", {}, {"processname": "web"})) is None


class FakeBus:
    """The publish and stored edges of an Outbox: a list of publications and a set of stored
    (alert id, ts, seq) that the test fills in as the saver would."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, dict]] = []
        self.stored_keys: set[tuple[str, int, int]] = set()
        self.now = 0.0

    def publish(self, ts: int, data: dict) -> int:
        self.sent.append((len(self.sent) + 1, ts, data))
        return len(self.sent)

    def stored(self, alert_id: str, ts: int, seq: int) -> bool:
        return (alert_id, ts, seq) in self.stored_keys

    def store_last(self) -> None:
        seq, ts, data = self.sent[-1]
        self.stored_keys.add((data["id"], ts, seq))


def _outbox(bus: FakeBus) -> Outbox:
    return Outbox(publish=bus.publish, stored=bus.stored, retry_s=3, clock=lambda: bus.now)


RAISE = {"id": "program-saver", "state": "active_unack", "priority": "medium", "message": "down"}
CLEAR = {"id": "program-saver", "state": "cleared_unack", "priority": "medium", "message": "up"}


def test_a_lost_alert_is_published_again_and_the_clear_waits_for_it():
    bus = FakeBus()
    box = _outbox(bus)
    assert box.add(1000, RAISE)
    box.work()
    assert [d["state"] for _, _, d in bus.sent] == ["active_unack"]
    assert box.add(2000, CLEAR)  # the program is back before the raise was stored
    bus.now = 1
    box.work()
    assert len(bus.sent) == 1  # the clear waits: the raise is not stored yet, not due again
    bus.now = 3.5
    box.work()
    assert len(bus.sent) == 2 and bus.sent[1][1:] == (1000, RAISE)  # again, with its own time
    bus.store_last()
    box.work()
    assert bus.sent[2][1:] == (2000, CLEAR) and box.pending == 1
    bus.store_last()
    box.work()
    assert box.pending == 0 and box.delivered == 2 and len(bus.sent) == 3


def test_repeats_are_not_queued_but_fatal_escalates():
    bus = FakeBus()
    box = _outbox(bus)
    assert not box.add(1, CLEAR)  # nothing raised: nothing to clear
    assert box.add(2, RAISE)
    assert not box.add(3, RAISE)
    assert box.add(4, {**RAISE, "priority": "high"})  # FATAL after the exit: raised higher
    other = {**RAISE, "id": "program-web"}
    assert box.add(5, other)
    box.work()
    assert {d["id"] for _, _, d in bus.sent} == {"program-saver", "program-web"}  # one head per alert


def test_alert_table_reads_what_the_saver_stored(tmp_path):
    path = tmp_path / "rigtel.db"
    db = sqlite3.connect(path)
    db.executescript(DDL)
    db.execute("INSERT INTO alerts (ts, src, seq, alert_id, kind, state, priority, data) VALUES "
               "(10, 'r.supervisor', 4, 'program-saver', 'program_down', 'active_unack', 'medium', '{}')")
    db.commit()
    db.close()
    table = AlertTable(str(path), "r.supervisor")
    assert table.stored("program-saver", 10, 4) and not table.stored("program-saver", 10, 5)
    assert table.raised() == {"program-saver": True}
    table.close()
    assert AlertTable(str(tmp_path / "none.db"), "x").raised() == {}


def test_protocol_acknowledges_each_event_and_says_ready_again():
    to_us_r, to_us_w = os.pipe()
    from_us_r, from_us_w = os.pipe()
    proto = Protocol(to_us_r, from_us_w)
    proto.ready()
    assert os.read(from_us_r, 100) == b"READY\n"
    os.write(to_us_w, _event("PROCESS_STATE_RUNNING", "processname:web groupname:web pid:1"))
    events = list(proto.events(5))
    assert [e.name for e in events] == ["PROCESS_STATE_RUNNING"]
    assert os.read(from_us_r, 100) == b"RESULT 2\nOKREADY\n"
    assert list(proto.events(0.01)) == []  # nothing waiting: returns at once
    os.close(to_us_w)
    assert list(proto.events(5)) == [] and proto.closed
    for fd in (to_us_r, from_us_r, from_us_w):
        os.close(fd)


def _listener(broker, tmp_path, db):
    """`rigtel program-alerts` as supervisord runs it: events on its stdin, protocol on its
    stdout (collected with its log lines, which go to stderr)."""
    import subprocess
    import sys
    import threading

    from tests.conftest import _STARTED, REPO, Program, clean_env

    args = ["program-alerts", *broker.port_args(), "--set", f"database_path={db}", "--set", f"data_dir={tmp_path}",
            "--set", "bus_heartbeat_s=0.5"]
    proc = subprocess.Popen([sys.executable, "-m", "appliance", *args], cwd=tmp_path, env=clean_env(tmp_path),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    program = Program(args, proc)
    _STARTED.append(program)
    threading.Thread(target=program._pump, name="pump-program-alerts", daemon=True).start()
    program.wait_for("ready: listening")
    return program


def test_an_alert_published_while_the_saver_is_down_is_stored_after_the_listener_dies_too(broker, tmp_path):
    """The saver killed -9, the listener raises its alert, then the listener is killed -9
    too before anything could store it: the restarted saver fetches it from the listener's
    spool (the restarted listener serves its earlier run's), so the alert is in the database."""
    import signal

    from tests.conftest import start_program, wait_until

    db = tmp_path / "rigtel.db"
    saver_args = ["saver", *broker.port_args(), "--set", f"database_path={db}", "--set", f"data_dir={tmp_path}",
                  "--set", "bus_heartbeat_s=0.5"]
    saver = start_program(saver_args, tmp_path)
    saver.wait_for("ready: writing")
    listener = _listener(broker, tmp_path, db)
    saver.proc.send_signal(signal.SIGKILL)
    saver.proc.wait(10)
    listener.proc.stdin.write(_event("PROCESS_STATE_EXITED", f"processname:saver groupname:saver from_state:RUNNING "
                                                             f"expected:0 pid:{saver.proc.pid}").decode())
    listener.proc.stdin.flush()
    listener.wait_for("alert program-saver active_unack")
    listener.proc.send_signal(signal.SIGKILL)
    listener.proc.wait(10)
    first = listener

    saver = start_program(saver_args, tmp_path)
    saver.wait_for("ready: writing")
    listener = _listener(broker, tmp_path, db)  # its spool holds the first run's alert
    try:
        rows = wait_until(lambda: sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(
            "SELECT state, src, seq FROM alerts WHERE alert_id = 'program-saver'").fetchall(), 60,
            f"the saver's program-down alert stored; saver:\n{saver.output[-3000:]}\nlistener:\n{listener.output[-3000:]}")
        assert [r[0] for r in rows] == ["active_unack"], rows
        gaps = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(
            "SELECT state, last_seq - first_seq + 1 FROM gaps WHERE topic = 'alert' AND src = ?", (rows[0][1],)).fetchall()
        assert gaps and all(state == "recovered" for state, _ in gaps), gaps  # fetched from the spool
    finally:
        listener.proc.stdin.close()  # supervisord went away: the listener stops
        assert listener.proc.wait(20) == 0
        assert saver.stop() == 0
        first.proc.stdin.close()
