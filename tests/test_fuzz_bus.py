"""100,000 malformed messages at a running broker, saver and logger: nothing restarts, and
the saver records exactly the dead letters and gaps the fuzzer says they must cause."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from appliance.bus import Publisher
from tests.conftest import clean_env, start_broker, start_program
from tests.test_saver import wait_saver_subscribed

COUNT = 100_000


def query(db: Path, sql: str, *args) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.mark.slow
def test_a_hundred_thousand_malformed_messages_are_all_counted_and_nothing_restarts(tmp_path):
    small = ["--set", "bus_max_message_bytes=4096"]
    broker = start_broker(tmp_path, 0, 0, *small)
    db = tmp_path / "rigtel.db"
    common = [*broker.port_args(), *small, "--set", f"data_dir={tmp_path}", "--set", "bus_heartbeat_s=0.5"]
    saver = start_program(["saver", *common, "--set", f"database_path={db}"], tmp_path)
    saver.wait_for("ready: writing")
    logger = start_program(["logger", *common], tmp_path)
    logger.wait_for("ready")
    with Publisher("probe", settings=broker.settings(bus_max_message_bytes="4096")) as pub:
        wait_saver_subscribed(pub, db)
    before = query(db, "SELECT count(*) FROM dead_letters")[0][0]
    pids = {p.args[0]: p.proc.pid for p in (broker.program, saver, logger)}

    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "appliance", "fuzz-bus", *broker.port_args(), *small,
                          "--count", str(COUNT), "--rate", "20000", "--seed", "7"],
                         cwd=tmp_path, env=clean_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    m = re.search(r"expected in the database: (\d+) dead letter\(s\) and (\d+) gap\(s\) from (\S+);", run.stdout)
    assert m, run.stdout
    dead, gaps, src = int(m[1]) + before, int(m[2]), m[3]

    def counted() -> tuple[int, int, int]:
        return (query(db, "SELECT count(*) FROM dead_letters")[0][0],
                query(db, "SELECT count(*) FROM gaps WHERE src = ? AND state = 'lost'", src)[0][0],
                query(db, "SELECT count(*) FROM gaps WHERE state = 'pending'")[0][0])

    deadline = time.monotonic() + 300
    while counted() != (dead, gaps, 0):
        assert time.monotonic() < deadline, f"counted {counted()}, expected {(dead, gaps, 0)}"
        time.sleep(0.5)
    seconds = time.monotonic() - started
    time.sleep(2)  # nothing more trickles in
    assert counted() == (dead, gaps, 0)
    for program in (broker.program, saver, logger):
        assert program.proc.poll() is None, f"{program.args[0]} exited:\n{program.output[-3000:]}"
        assert program.proc.pid == pids[program.args[0]]
    # the lost gaps raised a data-gap alert, rate-limited: no flood
    alerts = query(db, "SELECT count(*) FROM alerts WHERE kind = 'data_gap'")[0][0]
    assert 1 <= alerts <= 3
    # bogus announcements were ignored; the good values of half-bad frames were kept
    assert "Traceback" not in saver.output + logger.output + broker.program.output
    kept = query(db, "SELECT count(*) FROM streams WHERE src = ?", src)
    assert kept == [(1,)]
    print(f"\nfuzz: {COUNT} messages, {dead - before} dead letters and {gaps} lost gaps counted exactly "
          f"in {seconds:.1f} s; {run.stdout.splitlines()[0]}")
    assert saver.stop() == 0 and logger.stop() == 0 and broker.program.stop() == 0
