"""A full disk: ingest goes on with pruning and an alert, and recovers by itself.

On a real 24 MB tmpfs holding the database and the spools (as /var/lib/rigtel holds both
on a rig): ballast leaves little room, so the maintenance program's disk guard prunes the
oldest raw samples and raises `disk-low` while the saver keeps storing; then the disk is
filled to the last byte, so the saver's commits fail (SQLITE_FULL) and it keeps its batch
and retries; then the space comes back. No program restarts, every published message ends
up stored exactly once, the alert clears, and the database passes integrity_check.
"""

from __future__ import annotations

import errno
import re
import sqlite3
from contextlib import closing
import threading
import time
from pathlib import Path

import pytest

from appliance.bus import Publisher
from appliance.channels import CATALOGUE
from tests.conftest import start_program, wait_until
from tests.test_maintenance import small_filesystem  # noqa: F401  (the fixture)

T0 = 1_764_449_520_000
CHANNELS = [c for c in CATALOGUE][:20]


def query(db: Path, sql: str, *args) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, args).fetchall()


def fill(path: Path, leave_bytes: int = 0) -> None:
    """Write zeros to `path` until only `leave_bytes` are free on its filesystem."""
    import shutil
    with open(path, "wb") as f:
        try:
            while True:
                free = shutil.disk_usage(path.parent).free - leave_bytes
                if free <= 0:
                    break
                f.write(b"\0" * min(free, 1 << 20))
                f.flush()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise


class Feeder(threading.Thread):
    """A spooling source: 100 one-second frames per message, 20 messages a second."""

    def __init__(self, cfg) -> None:
        super().__init__(name="feeder", daemon=True)
        self.cfg = cfg
        self.stop = threading.Event()
        self.published = 0
        self.src = ""
        self.ready = threading.Event()

    def run(self) -> None:
        with Publisher("feed", settings=self.cfg, spool=True) as pub:
            self.src = pub.src
            self.ready.set()
            k = 0
            while not self.stop.wait(0.05):
                batch = [(T0 + (k + i) * 1000, {c.mnemonic: c.low + (k + i) % 7 for c in CHANNELS})
                         for i in range(100)]
                k += 100
                self.published = pub.publish_batch("drilling", batch)


@pytest.mark.slow
def test_full_disk_prunes_alerts_and_recovers_by_itself_losing_nothing(broker, small_filesystem, tmp_path):
    mnt = small_filesystem
    db = mnt / "rigtel.db"
    common = [*broker.port_args(), "--set", f"database_path={db}", "--set", f"data_dir={mnt}",
              "--set", "bus_heartbeat_s=0.5"]
    saver = start_program(["saver", *common], tmp_path)
    saver.wait_for("ready: writing")
    maintenance = start_program(["maintenance", *common, "--set", "maintenance_check_s=1",
                                 "--set", "disk_min_free_mb=6", "--set", "retention_raw_days=0",
                                 "--set", "retention_batch_rows=2000"], tmp_path)
    maintenance.wait_for("ready: database")
    fill(mnt / "ballast", leave_bytes=12 * 1024 * 1024)
    feeder = Feeder(broker.settings(data_dir=str(mnt), spool_max_mb="2", bus_heartbeat_s="0.5"))
    feeder.start()
    try:
        assert feeder.ready.wait(30)
        # 1. little room: the guard prunes the oldest samples and raises disk-low; ingest goes on
        wait_until(lambda: query(db, "SELECT 1 FROM alerts WHERE alert_id = 'disk-low' AND state = 'active_unack'"),
                   120, "the disk-low alert stored")
        newest = query(db, "SELECT max(ts) FROM samples")[0][0]
        wait_until(lambda: query(db, "SELECT max(ts) FROM samples")[0][0] > newest + 200_000, 60,
                   "ingest going on after the alert")
        assert query(db, "SELECT min(ts) FROM samples")[0][0] > T0, "the guard pruned the oldest samples"

        # 2. no room at all: commits fail, the saver keeps what it has and retries
        fill(mnt / "ballast2")
        saver.wait_for(r"cannot commit \d+ message\(s\) \(database or disk is full\)", timeout=60)
        time.sleep(3)  # an outage of a few seconds with the source still publishing

        # 3. space comes back: everything is stored, nothing lost, the alert clears
        (mnt / "ballast2").unlink()
        (mnt / "ballast").unlink()
        wait_until(lambda: query(db, "SELECT 1 FROM alerts WHERE alert_id = 'disk-low' AND state = 'cleared_unack'"),
                   120, "the disk-low alert cleared")
    finally:
        feeder.stop.set()
        feeder.join(30)
    published = feeder.published
    wait_until(lambda: query(db, "SELECT messages FROM streams WHERE src = ? AND topic = 'drilling'", feeder.src)
               == [(published,)], 120, f"all {published} messages stored")
    assert query(db, "SELECT first_seq, last_seq FROM streams WHERE src = ? AND topic = 'drilling'",
                 feeder.src) == [(1, published)]
    assert query(db, "SELECT count(*) FROM gaps WHERE state IN ('lost', 'pending')") == [(0,)]
    assert query(db, "SELECT count(*) FROM dead_letters") == [(0,)]
    # roll-ups are never pruned: they saw every frame exactly once
    assert query(db, "SELECT sum(r.count) FROM rollup_1h r JOIN channels c ON c.id = r.channel_id "
                     "WHERE c.name = ?", CHANNELS[0].mnemonic) == [(published * 100,)]
    assert saver.proc.poll() is None and maintenance.proc.poll() is None, "a program exited"
    assert saver.stop() == 0 and maintenance.stop() == 0
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    print(f"\ndisk full: {published} messages ({published * 100} frames) stored exactly once; "
          f"{saver.output.count('cannot commit')} failed commit(s) retried")


@pytest.mark.slow
def test_saver_holds_a_bounded_batch_while_the_disk_is_full_and_fetches_the_rest_from_the_spool(
        broker, small_filesystem, tmp_path):
    """The database's disk full to the last byte, the spool on another disk (as when the
    database has a disk of its own): the saver keeps at most saver_max_pending_frames,
    leaves the rest in the spool as pending gaps, raises saver-backlog, and once space is
    back stores every message exactly once, the shed ones fetched from the spool."""
    import json

    mnt = small_filesystem
    db = mnt / "rigtel.db"
    limit = 1000  # frames: ten of the feeder's messages
    saver = start_program(["saver", *broker.port_args(), "--set", f"database_path={db}",
                           "--set", f"data_dir={mnt}", "--set", "bus_heartbeat_s=0.5",
                           "--set", f"saver_max_pending_frames={limit}"], tmp_path)
    saver.wait_for("ready: writing")
    feeder = Feeder(broker.settings(data_dir=str(tmp_path), bus_heartbeat_s="0.5"))
    feeder.start()
    try:
        assert feeder.ready.wait(30)
        wait_until(lambda: query(db, "SELECT messages FROM streams WHERE src = ?", feeder.src), 60,
                   "the first messages stored")
        fill(mnt / "ballast")
        saver.wait_for(r"cannot commit \d+ message\(s\) \(database or disk is full\)", timeout=60)
        saver.wait_for("newer messages are left in the sources' spools", timeout=60)
        at_shedding = feeder.published
        wait_until(lambda: feeder.published >= at_shedding + 100, 60,
                   "100 more messages published while the disk is full")  # 100 x 100 frames, ten times the bound
        (mnt / "ballast").unlink()
        saver.wait_for("the database is written again", timeout=60)
        # the source keeps running: its spool serves what was shed
        wait_until(lambda: query(db, "SELECT count(*) FROM gaps WHERE state = 'recovered'")[0][0]
                   and not query(db, "SELECT count(*) FROM gaps WHERE state = 'pending'")[0][0], 120,
                   "the shed messages fetched from the spool")
    finally:
        feeder.stop.set()
        feeder.join(30)
    published = feeder.published
    try:
        wait_until(lambda: query(db, "SELECT first_seq, last_seq, messages FROM streams WHERE src = ? "
                                     "AND topic = 'drilling'", feeder.src) == [(1, published, published)],
                   120, f"all {published} messages stored")
        wait_until(lambda: query(db, "SELECT count(*) FROM gaps WHERE state = 'pending'") == [(0,)], 60,
                   "no gap pending")
    except AssertionError as e:
        raise AssertionError(f"{e}: streams {query(db, 'SELECT * FROM streams')}, "
                             f"gaps {query(db, 'SELECT * FROM gaps')}; saver:\n{saver.output[-4000:]}") from None
    assert query(db, "SELECT count(*) FROM gaps WHERE state = 'lost'") == [(0,)]
    assert query(db, "SELECT count(*) FROM dead_letters") == [(0,)]
    assert query(db, "SELECT sum(r.count) FROM rollup_1h r JOIN channels c ON c.id = r.channel_id "
                     "WHERE c.name = ?", CHANNELS[0].mnemonic) == [(published * 100,)]
    # what stayed in memory was bounded: every failed commit held at most the bound (plus the alert)
    held = [int(n) for n in re.findall(r"cannot commit (\d+) message\(s\)", saver.output)]
    assert held and max(held) <= limit // 100 + 2, held
    # the alert says what was left in the spool, and that much was fetched from it
    states = query(db, "SELECT state, data FROM alerts WHERE alert_id = 'saver-backlog' ORDER BY id")
    assert [s for s, _ in states] == ["active_unack", "cleared_unack"], states
    shed = json.loads(states[1][1])["shed_messages"]
    recovered = query(db, "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM gaps "
                          "WHERE src = ? AND state = 'recovered'", feeder.src)[0][0]
    assert shed >= 90 and recovered == shed, (shed, recovered)
    assert saver.proc.poll() is None, "the saver exited"
    assert saver.stop() == 0
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    print(f"\nbounded batch: {published} messages, at most {max(held)} held in memory, {shed} shed to the "
          f"spool and fetched back; every message stored exactly once")
