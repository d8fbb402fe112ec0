"""`rigtel replay` into the real bus and saver, and `rigtel export` back out of the database:
the fixtures always, the Volve logs when ../shared/data is present; export -> re-import
round trips for CSV, LAS and WITSML."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest

from appliance.sources.files import open_log, parse_time
from appliance.store import export
from tests.conftest import start_program
from tests.fixtures import make_fixtures as fx
from tests.test_files import FIXTURES, VOLVE, close
from tests.test_saver import rows, start_saver, wait_rows


def replay(broker, tmp: Path, *args: str, timeout: float = 60):
    program = start_program(["replay", *broker.port_args(), *args], tmp)
    program.wait_for(r"done: \d+ rows", timeout=timeout)
    assert program.proc.wait(30) == 0, program.output  # it ends by itself at the end of the file
    return program


def test_replay_of_the_csv_fixture_stores_its_values_and_dead_letters_its_bad_rows(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    saver = start_saver(broker, tmp_path, db)
    program = replay(broker, tmp_path, str(FIXTURES / "sim-si.csv"), "--speed", "max", "--original-time")
    assert "SHAKER_LOAD [%] not used: mnemonic not known to the catalogue" in program.output
    assert re.search(r"done: 297 rows", program.output)
    truth = {ts: v for ts, v in fx.truth()}
    wait_rows(db, "SELECT count(*) FROM dead_letters WHERE topic = 'reject'", [(3,)])
    stored = wait_rows(db, "SELECT count(*) FROM samples", [(297,)])
    assert stored
    with_sppa = rows(db, "SELECT s.ts, s.c{0} FROM samples s WHERE s.c{0} IS NOT NULL ORDER BY s.ts".format(
        rows(db, "SELECT id FROM channels WHERE name = 'SPPA'")[0][0]))
    assert len(with_sppa) == 297
    for ts, value in with_sppa:
        assert close(value, truth[ts]["SPPA"], 1e-9)
    dead = rows(db, "SELECT src, reason, payload FROM dead_letters WHERE topic = 'reject' ORDER BY id")
    assert {src for src, _, _ in dead} == {"rig-1.replay"}
    assert sorted(reason for _, reason, _ in dead) == [
        "replay: not a number in DMEA", "replay: time not after the previous row's", "replay: time not readable"]
    assert any(b"yesterday" in payload for _, _, payload in dead)
    assert saver.stop() == 0


def test_replay_extras_go_to_their_own_topic_in_the_files_units(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    saver = start_saver(broker, tmp_path, db)
    replay(broker, tmp_path, str(FIXTURES / "sim-si.csv"), "--speed", "max", "--original-time", "--extras", "vendor")
    wait_rows(db, "SELECT topic, unit FROM channels WHERE name = 'vendor.SHAKER_LOAD'", [("vendor", "")])
    cid = rows(db, "SELECT id FROM channels WHERE name = 'vendor.SHAKER_LOAD'")[0][0]
    # every row with a readable time carries it, even the one whose catalogue channels are all null
    wait_rows(db, f"SELECT count(c{cid}), min(c{cid}), max(c{cid}) FROM samples", [(298, 12.5, 12.5)])
    sppa = rows(db, "SELECT id FROM channels WHERE name = 'SPPA'")[0][0]
    assert rows(db, f"SELECT count(c{sppa}) FROM samples") == [(297,)]
    assert saver.stop() == 0


def test_replay_of_a_depth_log_runs_on_a_synthetic_clock_from_now(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    saver = start_saver(broker, tmp_path, db)
    before = parse_time("2026-01-01")  # any time in this century: the clock is rebased to now
    replay(broker, tmp_path, str(FIXTURES / "sim-depth.las"), "--speed", "max", "--depth-step", "2")
    got = wait_rows(db, "SELECT count(*) FROM samples", [(200,)])
    assert got
    (lo, hi), = rows(db, "SELECT min(ts), max(ts) FROM samples")
    assert lo > before and hi - lo == 199 * 2000
    assert saver.stop() == 0


def test_replay_paces_rows_at_the_speed_asked(broker, tmp_path):
    # 300 s of file at 100x: about 3 s, not instant and not 300 s
    program = start_program(["replay", *broker.port_args(), str(FIXTURES / "sim-time.xml"), "--speed", "100"],
                            tmp_path)
    program.wait_for("ready: replaying", timeout=30)
    m = program.wait_for(r"done: (\d+) rows in \d+ messages in ([\d.]+) s", timeout=60)
    assert int(m.group(1)) == 297
    assert 2.5 <= float(m.group(2)) <= 20, program.output
    assert program.proc.wait(30) == 0


def test_replay_check_reads_without_publishing_and_a_bad_file_is_a_clear_error(tmp_path):
    program = start_program(["replay", "--check", str(FIXTURES / "sim-depth.xml")], tmp_path)
    assert program.proc.wait(60) == 0
    assert "checked: 200 rows would be published" in program.output
    bad = tmp_path / "bad.xml"
    bad.write_text("<logs><log>")
    program = start_program(["replay", str(bad)], tmp_path)
    assert program.proc.wait(60) == 2
    assert "cannot replay" in program.output and "not well-formed" in program.output


@pytest.mark.skipif(not VOLVE.is_dir(), reason="the Volve files are not in ../shared/data/volve")
def test_replay_of_the_volve_time_log(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    saver = start_saver(broker, tmp_path, db)
    replay(broker, tmp_path, str(VOLVE / "F-4_GenTime_time-log.xml"), "--speed", "max", "--original-time",
           timeout=120)
    wait_rows(db, "SELECT count(*) FROM samples", [(3605,)], timeout=60)
    hkla = rows(db, "SELECT id FROM channels WHERE name = 'HKLA'")
    assert rows(db, f"SELECT count(c{hkla[0][0]}) FROM samples") == [(3605,)]
    (first,), = rows(db, f"SELECT c{hkla[0][0]} FROM samples ORDER BY ts LIMIT 1")
    assert close(first, 696574.9 / 4448.2216152605, 1e-9)
    (lo, hi), = rows(db, "SELECT min(ts), max(ts) FROM samples")
    assert (lo, hi) == (parse_time("2016-10-07T05:23:24Z"), parse_time("2016-10-07T08:11:35Z"))
    # Volve writes 0 K for a missing mud temperature: refused as implausible, kept as dead letters
    (implausible,), = rows(db, "SELECT count(*) FROM dead_letters WHERE reason LIKE 'MTIA:%plausible%'")
    assert implausible > 0
    assert saver.stop() == 0


# --- export ---------------------------------------------------------------------------


@pytest.fixture
def replayed(broker, tmp_path):
    """A database holding the CSV fixture, with its original times."""
    db = tmp_path / "rigtel.db"
    saver = start_saver(broker, tmp_path, db)
    replay(broker, tmp_path, str(FIXTURES / "sim-si.csv"), "--speed", "max", "--original-time")
    wait_rows(db, "SELECT count(*) FROM samples", [(297,)])
    assert saver.stop() == 0
    ini = tmp_path / "export.ini"
    ini.write_text(f"[appliance]\ndatabase_path = {db}\nrig_id = sim-rig\n")
    return db, ini


@pytest.mark.parametrize("fmt", ["csv", "las", "witsml"])
def test_export_then_reimport_gives_back_the_replayed_values(replayed, tmp_path, fmt, capsys):
    db, ini = replayed
    out = tmp_path / f"out.{fmt}"
    names = ["DMEA", "HKLA", "SPPA", "MFIA", "MDIA", "MTOA", "TQA", "RPMA"]
    start, end = fx.START_MS, fx.START_MS + 300_000
    code = export.main(["--config", str(ini), "--from", str(start), "--to", str(end),
                        "--channels", ",".join(names), "--format", fmt, "-o", str(out)])
    assert code == 0
    assert "exported 297 rows of 8 channels" in capsys.readouterr().err
    assert not (tmp_path / f"out.{fmt}.partial").exists()
    log = open_log(str(out))
    assert log.format == fmt and {m.channel for m in log.channels.mapped.values()} == set(names)
    back = dict(log.rows())
    assert len(back) == 297 and not log.problems
    truth = {ts: v for ts, v in fx.truth()}
    for ts, values in back.items():
        for name, value in values.items():
            # SI in the fixture -> catalogue units at replay -> exported -> read again
            assert math.isclose(value, truth[ts][name], rel_tol=1e-9, abs_tol=1e-9), (ts, name)
        missing = set(names) - set(values)
        assert not missing or (ts - fx.START_MS) // 1000 in (20, 30)  # the damaged rows


def test_export_to_stdout_and_its_errors(replayed, capsys):
    db, ini = replayed
    assert export.main(["--config", str(ini), "--from", str(fx.START_MS), "--to", str(fx.START_MS + 5000),
                        "--channels", "SPPA"]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0] == "time_utc,ts_ms,SPPA [psi]" and len(lines) == 6
    assert export.main(["--config", str(ini), "--from", "-1h", "--channels", "NOPE"]) == 2
    assert "unknown channel(s): NOPE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main(["--config", str(ini), "--from", "tomorrowish"])


def test_export_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        p = export.Progress(stream, 0, 1000)
        p.last = -1.0
        p(500, 500)
        p.done()
    assert "50%" in tty.getvalue() and "500 rows" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_parse_when():
    now = 1_800_000_000_000
    assert export.parse_when("now", now) == now
    assert export.parse_when("-24h", now) == now - 86_400_000
    assert export.parse_when("-7d", now) == now - 7 * 86_400_000
    assert export.parse_when("-90m", now) == now - 5_400_000
    assert export.parse_when("2016-10-07T05:23:24Z", now) == 1475817804000
