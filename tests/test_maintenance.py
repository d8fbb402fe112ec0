"""Maintenance against real SQLite files made by the real writer: retention, incremental
vacuum, online backups under a committing writer, rotation, restore, the disk guard (with
its alert on a real bus), and `rigtel maintenance` / `rigtel backup` as real processes."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from appliance.bus import Publisher
from appliance.bus.envelope import Envelope, Frame
from appliance.store import backup, maintenance
from appliance.store.backup import BackupError
from appliance.store.restore import DatabaseInUse, Supervisor, restore
from appliance.store.maintenance import DAY_MS, HOUR_MS, Maintenance
from appliance.store.writer import Batch, Writer
from tests.conftest import Collector, clean_env, settings_for, start_program, wait_subscribed

T0 = 1_764_449_520_000  # 2025-11-29 20:52 UTC, on a minute boundary
SECOND = 1000


def env(seq: int, frames: list[tuple[int, dict]], topic: str = "drilling", boot: str = "b1") -> Envelope:
    return Envelope(topic, "rig-1.sim", boot, seq, frames[-1][0], tuple(Frame(t, d) for t, d in frames), 100)


def frames(start_ms: int, n: int, step_ms: int = SECOND) -> list[tuple[int, dict]]:
    return [(start_ms + i * step_ms, {"DMEA": 5000.0 + i * 0.01, "HKLA": 200.0 + i % 50, "SPPA": 3000.0})
            for i in range(n)]


def make_db(path: Path, n: int, start_ms: int = T0, step_ms: int = SECOND, batch: int = 5000) -> None:
    """A database holding `n` raw rows one `step_ms` apart, written by the real writer."""
    w = Writer(path)
    for seq, i in enumerate(range(0, n, batch), 1):
        w.commit(Batch([env(seq, frames(start_ms + i * step_ms, min(batch, n - i), step_ms))]))
    w.close()


def query(path: Path, sql: str, *args) -> list[tuple]:
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def rollup_counts(path: Path) -> list[tuple]:
    return query(path, "SELECT channel_id, bucket, count FROM rollup_1m ORDER BY 1, 2")


class CommittingWriter(threading.Thread):
    """The saver's stand-in: commits one small batch after another through the real
    Writer and records every commit's latency (how long maintenance made it wait)."""

    def __init__(self, path: Path, start_ms: int, frames_per_commit: int = 10) -> None:
        super().__init__(name="committing-writer", daemon=True)
        self.path, self.next_ms, self.per = path, start_ms, frames_per_commit
        self.stop = threading.Event()
        self.committed: list[int] = []  # timestamps, in commit order
        self.latencies: list[float] = []
        self.progressed = threading.Condition()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            w = Writer(self.path)
            seq = 0
            while not self.stop.is_set():
                seq += 1
                batch = frames(self.next_ms, self.per, 100)
                started = time.monotonic()
                w.commit(Batch([env(seq, batch, boot="live")]))
                self.latencies.append(time.monotonic() - started)
                with self.progressed:
                    self.committed.extend(t for t, _ in batch)
                    self.progressed.notify_all()
                self.next_ms += self.per * 100
                self.stop.wait(0.005)
            w.close()
        except BaseException as e:  # surfaced by finish()
            self.error = e

    def wait_commits(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with self.progressed:
            while len(self.committed) < n * self.per:
                assert self.error is None, self.error
                assert time.monotonic() < deadline, f"the writer committed only {len(self.committed)} frames"
                self.progressed.wait(0.1)

    def finish(self) -> float:
        """Stop; returns the longest commit, in ms."""
        self.stop.set()
        self.join(10)
        assert self.error is None, self.error
        return max(self.latencies) * 1000


# -- pure logic --------------------------------------------------------------------------


def test_cutoff_counts_back_from_the_newest_sample_or_now_whichever_is_earlier():
    now = T0 + 100 * DAY_MS
    assert maintenance.cutoff_ms(now, now - HOUR_MS, 90 * DAY_MS) == now - HOUR_MS - 90 * DAY_MS
    # a replayed old well keeps its own last 90 days
    assert maintenance.cutoff_ms(now, T0, 90 * DAY_MS) == T0 - 90 * DAY_MS
    # a sample stamped in the future by a bad clock does not make the present prunable
    assert maintenance.cutoff_ms(now, now + 365 * DAY_MS, 90 * DAY_MS) == now - 90 * DAY_MS
    assert maintenance.cutoff_ms(now, None, 90 * DAY_MS) is None  # no samples
    assert maintenance.cutoff_ms(now, now, 0) is None  # retention_raw_days = 0: keep forever


def test_backup_names_round_trip_in_utc():
    when = datetime(2025, 11, 29, 20, 52, 7, tzinfo=timezone(timedelta(hours=-6)))
    assert backup.backup_name(when) == "rigtel-20251130-025207.db"
    assert backup.backup_time("rigtel-20251130-025207.db") == when
    for other in ("rigtel-20251130-025207.db.check", "rigtel.db", "rigtel-20251340-000000.db", ".partial-1-x"):
        assert backup.backup_time(other) is None


def nightly_names(last: datetime, days: int) -> list[str]:
    return [backup.backup_name(last - timedelta(days=d)) for d in range(days)]


def test_rotation_keeps_the_dailies_then_the_newest_of_each_older_week():
    last = datetime(2025, 11, 30, 2, 30, tzinfo=timezone.utc)  # a Sunday
    names = nightly_names(last, 60) + ["notes.txt"]
    kept = backup.choose_kept(names, keep_daily=7, keep_weekly=4)
    # the 7 newest: Mon 24 .. Sun 30 Nov, which is exactly one ISO week
    dailies = {backup.backup_name(last - timedelta(days=d)) for d in range(7)}
    # then the Sundays of the four weeks before
    weeklies = {backup.backup_name(last - timedelta(days=7 * w)) for w in range(1, 5)}
    assert kept == dailies | weeklies | {"notes.txt"}

    # dailies spanning two weeks cover both: the weeklies start a week further back
    wed = datetime(2025, 11, 26, 2, 30, tzinfo=timezone.utc)
    kept = backup.choose_kept(nightly_names(wed, 60), 7, 2)
    assert sorted(kept)[:2] == [backup.backup_name(datetime(2025, 11, 9, 2, 30, tzinfo=timezone.utc)),
                                backup.backup_name(datetime(2025, 11, 16, 2, 30, tzinfo=timezone.utc))]
    assert len(kept) == 9
    # a week with no backup (the box was off) is skipped, not counted
    sparse = [n for n in nightly_names(last, 60) if not "20251110" <= n[7:15] <= "20251116"]
    assert len(backup.choose_kept(sparse, 7, 4) - set(backup.choose_kept(sparse, 7, 0))) == 4
    assert backup.choose_kept(names[:3], 7, 4) == set(names[:3])  # fewer than asked: all kept
    assert backup.choose_kept(nightly_names(last, 20), 1, 0) == {backup.backup_name(last)}


# -- retention and vacuum ----------------------------------------------------------------


def test_retention_prunes_exactly_the_rows_before_the_cutoff_in_batches_and_keeps_rollups(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 10_000)
    rollups_before = rollup_counts(db)
    cut = T0 + 7_350 * SECOND
    conn = maintenance.connect(db)
    result = maintenance.prune(conn, "samples", cut, 700, wait=lambda s: False)
    conn.close()
    assert result.rows == 7_350 and result.batches == 11  # 10 full batches and the rest
    assert query(db, "SELECT min(ts), max(ts), count(*) FROM samples") == [(cut, T0 + 9_999 * SECOND, 2_650)]
    assert rollup_counts(db) == rollups_before  # roll-ups hold the pruned history


def test_the_check_job_prunes_samples_and_dead_letters_by_retention_and_shrinks_the_file(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 20_000)  # 5.6 h of 1 s data
    w = Writer(db)
    now = T0 + 20_000 * SECOND
    w.commit(Batch(refused=[(now - DAY_MS, "drilling", "s", 1, "old", 0, b"x"),
                            (now - 60_000, "drilling", "s", 2, "recent", 0, b"y")]))
    w.close()
    cfg = settings_for(tmp_path, {"database_path": str(db), "data_dir": str(tmp_path),
                                  "retention_raw_days": str(2 / 24), "retention_batch_rows": "1000"})
    size_before = db.stat().st_size
    emitted: list = []
    done = Maintenance(cfg, lambda t, d: emitted.append(d), free_mb=lambda _: 1e9).check(now_ms=now)
    newest = T0 + 19_999 * SECOND
    assert query(db, "SELECT min(ts) FROM samples") == [(newest - 2 * HOUR_MS,)]
    assert done["pruned_rows"] == 20_000 - 7_201 + 1  # and the old dead letter
    assert query(db, "SELECT reason FROM dead_letters") == [("recent",)]
    assert query(db, "PRAGMA freelist_count") == [(0,)]
    assert done["vacuumed_pages"] > 0 and db.stat().st_size < size_before
    assert emitted == []  # nothing to alert about


def test_a_failing_job_is_logged_and_the_next_run_goes_on(tmp_path, caplog):
    db = tmp_path / "rigtel.db"
    db.write_bytes(b"not a database" * 100)
    cfg = settings_for(tmp_path, {"database_path": str(db), "data_dir": str(tmp_path)})
    jobs = Maintenance(cfg, lambda t, d: None)
    jobs.run_check()
    jobs.run_check()
    failures = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 2 and "check failed; it runs again in 60 s" in failures[0].getMessage()
    assert failures[0].exc_info is not None  # with the traceback


def test_incremental_vacuum_runs_to_completion_where_a_plain_execute_frees_one_page(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 30_000)
    conn = maintenance.connect(db)
    maintenance.prune(conn, "samples", T0 + 25_000 * SECOND, 5000)
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert free > 50
    conn.execute("PRAGMA incremental_vacuum").fetchall()  # the trap: one page only
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == free - 1
    size = db.stat().st_size
    result = maintenance.incremental_vacuum(conn, db, chunk_pages=16, wait=lambda s: False)
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    conn.close()
    assert result.pages == free - 1
    assert db.stat().st_size <= size - (free - 1) * 4096  # the file itself shrank
    assert backup.check_database(db, full=True) == "ok"


def test_pruning_while_the_writer_commits_keeps_every_commit_short(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 40_000)
    writer = CommittingWriter(db, T0 + 10 * DAY_MS)
    writer.start()
    writer.wait_commits(5)
    conn = maintenance.connect(db)
    result = maintenance.prune(conn, "samples", T0 + 40_000 * SECOND, 2000)
    vacuum = maintenance.incremental_vacuum(conn, db)
    conn.close()
    worst_ms = writer.finish()
    print(f"\nprune {result.rows} rows in {result.batches} batches, longest transaction "
          f"{result.longest_ms:.0f} ms; vacuum {vacuum.pages} pages; worst writer commit {worst_ms:.0f} ms")
    assert result.rows == 40_000
    assert query(db, "SELECT count(*) FROM samples") == [(len(writer.committed),)]  # nothing of its lost
    assert worst_ms < 3000  # generous: this machine is shared; docs/STORAGE.md has quiet numbers


# -- backups -----------------------------------------------------------------------------


def test_a_backup_taken_while_the_writer_commits_is_a_consistent_prefix(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 30_000)
    writer = CommittingWriter(db, T0 + 10 * DAY_MS)
    writer.start()
    writer.wait_commits(5)
    before = len(writer.committed)
    steps = []

    def slowly() -> bool:  # stretch the copy over many of the writer's commits
        steps.append(len(writer.committed))
        time.sleep(0.05)  # called every 20,000 SQLite instructions: a handful of times here
        return False

    result = backup.take_backup(db, tmp_path / "backups", should_stop=slowly)
    writer.wait_commits(len(writer.committed) // writer.per + 3)  # and it goes on after
    worst_ms = writer.finish()
    print(f"\nbackup {result.size_bytes / 1e6:.1f} MB in {result.seconds:.2f} s while the writer committed "
          f"{(steps[-1] - steps[0]) // writer.per} times; worst writer commit {worst_ms:.0f} ms")
    assert steps[-1] - steps[0] >= 5 * writer.per  # the writer really went on during the copy
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o640
    assert not list(result.path.parent.glob(".partial-*"))
    assert backup.check_database(result.path, full=True) == "ok"
    live = [ts for (ts,) in query(result.path, "SELECT ts FROM samples WHERE ts >= ? ORDER BY ts", T0 + 10 * DAY_MS)]
    assert before <= len(live) <= len(writer.committed)
    assert live == writer.committed[:len(live)]  # a prefix: whole commits, none missing
    # the stream positions agree with the rows: a restored saver resumes exactly there
    (messages,) = query(result.path, "SELECT messages FROM streams WHERE boot = 'live'")[0]
    assert messages * writer.per == len(live)
    assert query(result.path, "SELECT count(*) FROM samples WHERE ts < ?", T0 + 10 * DAY_MS) == [(30_000,)]


def test_a_stopping_program_abandons_a_backup_and_leaves_nothing_behind(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 5_000)
    folder = tmp_path / "backups"
    with pytest.raises(backup.BackupInterrupted):
        backup.take_backup(db, folder, should_stop=lambda: True)
    assert list(folder.iterdir()) == []
    with pytest.raises(BackupError, match=r"not enough free space .*\(disk_min_free_mb\)"):
        backup.take_backup(db, folder, reserve=shutil.disk_usage(folder).free)
    assert list(folder.iterdir()) == []


def test_the_nightly_job_checks_backs_up_rotates_and_alerts_on_corruption(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 20_000)
    folder = tmp_path / "backups"
    folder.mkdir()
    old = nightly_names(datetime(2025, 1, 12, 2, 30, tzinfo=timezone.utc), 10)  # Sunday 12 .. Friday 3 Jan
    for name in old:
        (folder / name).write_bytes(b"")
    cfg = settings_for(tmp_path, {"database_path": str(db), "data_dir": str(tmp_path), "disk_min_free_mb": "0",
                                  "backup_keep_daily": "2", "backup_keep_weekly": "1"})
    emitted: list[dict] = []
    jobs = Maintenance(cfg, lambda topic, data: emitted.append(data))
    made = jobs.nightly()
    assert made is not None and backup.cached_check(made)[0] == "ok"
    # the new one and Sunday 12 Jan (daily), Sunday 5 Jan (the week before)
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".db") == sorted([made.name, old[0], old[7]])
    assert emitted == []

    with open(db, "r+b") as f:  # a torn page in the live database
        f.seek(db.stat().st_size // 2 // 4096 * 4096)
        f.write(os.urandom(8192))
    jobs.nightly()
    by_id = {e["id"]: e for e in emitted}
    assert by_id["db-integrity"]["state"] == "active_unack" and by_id["db-integrity"]["kind"] == "db_integrity"
    assert "Restore the latest good backup" in by_id["db-integrity"]["message"]
    assert by_id["backup-failed"]["state"] == "active_unack" and "damaged" in by_id["backup-failed"]["message"]


def test_rotation_deletes_backups_and_their_check_files_only(tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    last = datetime(2025, 11, 30, 2, 30, tzinfo=timezone.utc)
    for name in nightly_names(last, 21):
        (folder / name).write_bytes(b"x")
        (folder / (name + ".check")).write_text("{}")
    (folder / "README").write_text("keep me")
    removed = backup.rotate(folder, keep_daily=3, keep_weekly=1)
    left = sorted(p.name for p in folder.iterdir())
    kept = sorted(backup.choose_kept(nightly_names(last, 21), 3, 1))
    assert len(removed) == 21 - 4
    assert left == sorted(["README", *kept, *(k + ".check" for k in kept)])


KILLED_SAVER = """
import os, sys
from tests.test_maintenance import Batch, T0, DAY_MS, Writer, env, frames
w = Writer(sys.argv[1])
w.db.execute("PRAGMA wal_autocheckpoint = 0")
w.commit(Batch([env(100, frames(T0 + 2 * DAY_MS, 10))]))
os._exit(0)
"""


def test_restore_round_trips_and_keeps_a_safety_copy(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 3_000)
    taken = backup.take_backup(db, tmp_path / "backups").path
    w = Writer(db)
    w.commit(Batch([env(99, frames(T0 + DAY_MS, 500))]))  # after the backup: lost by the restore
    w.close()
    # a saver killed with -9 leaves committed rows in the WAL, which the restore must not
    # leave beside the restored file (SQLite would replay them into it)
    subprocess.run([sys.executable, "-c", KILLED_SAVER, str(db)], check=True, env=clean_env(tmp_path))
    wal = Path(str(db) + "-wal")
    assert wal.stat().st_size > 0
    result = restore(taken, db)
    assert query(db, "SELECT count(*), min(ts), max(ts) FROM samples") == [(3_000, T0, T0 + 2_999 * SECOND)]
    assert query(result.safety_copy, "SELECT count(*) FROM samples") == [(3_510,)]
    assert result.safety_copy.name.startswith("rigtel.db.before-restore-") and not result.safety_copy_raw
    assert not wal.exists() and not Path(str(db) + "-shm").exists()
    assert stat.S_IMODE(db.stat().st_mode) == 0o640
    # the saver starts on it again and resumes the streams where the backup left them
    w = Writer(db)
    assert w.stream_positions()[0][:4] == ("rig-1.sim", "b1", "drilling", 1)
    w.commit(Batch([env(2, frames(T0 + 3_000 * SECOND, 1))]))
    w.close()
    assert backup.check_database(db, full=True) == "ok"


def test_restore_refuses_a_corrupt_backup_a_foreign_database_and_a_database_in_use(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 5_000)
    good = backup.take_backup(db, tmp_path / "backups").path
    corrupt = tmp_path / "corrupt.db"
    shutil.copyfile(good, corrupt)
    with open(corrupt, "r+b") as f:  # garbage over the middle of the file
        f.seek(corrupt.stat().st_size // 2)
        f.write(os.urandom(20_000))
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    with pytest.raises(BackupError, match="fails the integrity check"):
        restore(corrupt, db)
    with pytest.raises(BackupError, match="not an appliance database"):
        restore(foreign, db)
    with pytest.raises(BackupError, match="fails the integrity check"):
        restore(tmp_path / "missing.db", db)
    w = Writer(db)  # a running saver
    with pytest.raises(DatabaseInUse, match="stop them first"):
        restore(good, db)
    w.close()
    assert query(db, "SELECT count(*) FROM samples") == [(5_000,)]
    assert query(db, "PRAGMA journal_mode") == [("wal",)]  # untouched
    assert not list(tmp_path.glob("*.before-restore-*"))


def test_restore_replaces_an_unreadable_database_keeping_a_byte_copy(tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 1_000)
    good = backup.take_backup(db, tmp_path / "backups").path
    db.write_bytes(b"this is not a database" * 500)
    result = restore(good, db)
    assert result.safety_copy_raw and result.safety_copy.read_bytes().startswith(b"this is not")
    assert query(db, "SELECT count(*) FROM samples") == [(1_000,)]


# -- the disk guard ----------------------------------------------------------------------


def test_disk_guard_prunes_oldest_first_and_raises_then_clears_the_alert_on_the_bus(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 12_000)  # 3.3 h
    cfg = broker.settings(database_path=str(db), data_dir=str(tmp_path), retention_raw_days="0",
                          disk_min_free_mb="500", retention_batch_rows="1000")
    newest = T0 + 11_999 * SECOND

    def rows() -> int:
        return query(db, "SELECT count(*) FROM samples")[0][0]

    # fake free space: low until a third of the rows are gone
    free = {"mb": None}

    def free_mb(folder: Path) -> float:
        return free["mb"] if free["mb"] is not None else (100.0 if rows() > 8_000 else 800.0)

    with Collector(["alert", "probe"], cfg) as alerts, Publisher("maintenance", settings=cfg) as pub:
        wait_subscribed(pub, alerts)
        jobs = Maintenance(cfg, pub.publish, free_mb=free_mb, src=pub.src)
        done = jobs.check(now_ms=newest + 60_000)
        assert done["pruned_rows"] == 4_000 and not done["disk_low"]  # batch by batch, no more than needed
        assert query(db, "SELECT min(ts) FROM samples") == [(T0 + 4_000 * SECOND,)]  # oldest first
        alerts.wait_until(lambda: len([e for e in alerts.envelopes if e.topic == "alert"]) == 2, what="raise, clear")
        raised, cleared = [e.frames[0].data for e in alerts.envelopes if e.topic == "alert"]
        assert raised["id"] == "disk-low" and raised["kind"] == "disk_low" and raised["state"] == "active_unack"
        assert raised["priority"] == "high" and raised["threshold_mb"] == 500 and raised["free_mb"] == 100.0
        assert "pruned the 4000 oldest raw samples" in raised["message"]
        assert cleared["id"] == "disk-low" and cleared["state"] == "cleared_unack" and cleared["free_mb"] == 800.0

        # still low and nothing older than an hour left: the alert stays, saying so
        free["mb"] = 50.0
        done = jobs.check(now_ms=newest + 60_000)
        assert query(db, "SELECT min(ts) FROM samples") == [(newest - HOUR_MS,)]
        alerts.wait_until(lambda: len([e for e in alerts.envelopes if e.topic == "alert"]) == 3, what="raise")
        again = [e.frames[0].data for e in alerts.envelopes if e.topic == "alert"][-1]
        assert again["state"] == "active_unack" and "Nothing older than an hour" in again["message"]
        jobs.check(now_ms=newest + 60_000)  # no change: no new event
        free["mb"] = 900.0
        jobs.check(now_ms=newest + 60_000)
        alerts.wait_until(lambda: len([e for e in alerts.envelopes if e.topic == "alert"]) == 4, what="clear")
        assert [e.frames[0].data["state"] for e in alerts.envelopes if e.topic == "alert"] == [
            "active_unack", "cleared_unack", "active_unack", "cleared_unack"]


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 24 MB tmpfs, when this test runs as root and may mount; else skipped."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {run.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)  # a failed test's program holds it open


def test_disk_guard_frees_real_space_on_a_small_filesystem(small_filesystem):
    db = small_filesystem / "rigtel.db"
    make_db(db, 60_000)  # 1.7 MB
    # something else fills the disk until 1.5 MB are left; the guard wants 2.5 MB
    ballast = shutil.disk_usage(small_filesystem).free - int(1.5 * maintenance.MB)
    with open(small_filesystem / "ballast", "wb") as f:
        for _ in range(ballast // 65536):
            f.write(b"\0" * 65536)
    size_before = db.stat().st_size
    conn = maintenance.connect(db)
    result = maintenance.guard_disk(conn, db, 2.5, 5000, now_ms=T0 + 59_999 * SECOND)
    conn.close()
    print(f"\ndisk guard on tmpfs: {result.free_mb_before:.2f} -> {result.free_mb_after:.2f} MB free, "
          f"pruned {result.pruned.rows} rows, file {size_before} -> {db.stat().st_size} bytes")
    assert result.low_before and not result.low_after and not result.exhausted
    assert maintenance.free_mb_of(small_filesystem) >= 2.5
    assert 0 < result.pruned.rows < 60_000 - 3_600  # stopped once enough was back
    assert backup.check_database(db, full=True) == "ok"


# -- real programs and commands ----------------------------------------------------------


def test_rigtel_maintenance_runs_its_check_on_schedule_and_stops_cleanly(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    make_db(db, 8_000)
    now = time.time_ns() // 1_000_000
    w = Writer(db)  # recent data, so retention counts back from now
    w.commit(Batch([env(99, frames(now - 1_000 * SECOND, 1_000))]))
    w.close()
    cfg = broker.settings()
    with Collector(["sys.heartbeat"], cfg) as beats:
        program = start_program(["maintenance", *broker.port_args(), "--set", f"database_path={db}",
                                 "--set", f"data_dir={tmp_path}", "--set", "maintenance_check_s=1",
                                 "--set", "retention_raw_days=1", "--set", "disk_min_free_mb=0",
                                 "--set", "log_level=DEBUG"], tmp_path)
        program.wait_for(r"ready: database .*; next backup \S+, next check \S+")
        program.wait_for(r"check: pruned 8000 row\(s\)")
        first = len([line for line in program.lines if "check: pruned" in line])
        program.wait_for(r"check: pruned 0 row\(s\)")  # a second run, a second later
        assert first == 1
        beats.wait_until(lambda: any(e.frames[0].data.get("program") == "maintenance" for e in beats.envelopes),
                         what="a maintenance heartbeat")
        assert program.stop() == 0, program.output
    assert "stopped:" in program.lines[-1]
    assert query(db, "SELECT count(*) FROM samples") == [(1_000,)]


def rigtel(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], cwd=tmp_path, env=clean_env(tmp_path),
                          capture_output=True, text=True, timeout=60)


def test_rigtel_backup_list_and_restore_as_commands(tmp_path):
    db = tmp_path / "var/rigtel.db"
    db.parent.mkdir()
    make_db(db, 4_000)
    where = ["--set", f"database_path={db}", "--set", f"data_dir={tmp_path / 'var'}", "--set", "disk_min_free_mb=0"]
    run = rigtel(tmp_path, "backup", *where)
    assert run.returncode == 0, run.stderr
    assert f"backing up {db}" in run.stdout and "integrity (quick_check): ok" in run.stdout
    made = Path(run.stdout.split("done: ")[1].split()[0])
    assert made.parent == tmp_path / "var/backups" and " MB in " in run.stdout

    listing = rigtel(tmp_path, "backups", *where)
    assert listing.returncode == 0 and str(made) in listing.stdout and "ok (checked" in listing.stdout
    (made.parent / (made.name + ".check")).unlink()
    assert "not checked" in rigtel(tmp_path, "backups", *where).stdout
    assert "ok" in rigtel(tmp_path, "backups", "--check", *where).stdout.splitlines()[1]

    w = Writer(db)
    w.commit(Batch([env(50, frames(T0 + DAY_MS, 100))]))
    w.close()
    restored = rigtel(tmp_path, "restore", made.name, *where)
    assert restored.returncode == 0, restored.stderr
    assert "before-restore-" in restored.stdout and "supervisorctl" in restored.stdout
    assert query(db, "SELECT count(*) FROM samples") == [(4_000,)]

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\0" * 10_000)
    refused = rigtel(tmp_path, "restore", str(garbage), *where)
    assert refused.returncode == 1 and "nothing was changed" in refused.stderr


SUPERVISORD_CONF = """\
[unix_http_server]
file = {tmp}/supervisor.sock
[supervisord]
logfile = {tmp}/supervisord.log
pidfile = {tmp}/supervisord.pid
nodaemon = true
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl = unix://{tmp}/supervisor.sock
[program:saver]
command = {python} -c "import time; time.sleep(600)"
startsecs = 0
autorestart = false
"""


def test_restore_asks_supervisord_and_can_stop_and_start_the_programs(tmp_path):
    conf = tmp_path / "sup/supervisord.conf"
    conf.parent.mkdir()
    conf.write_text(SUPERVISORD_CONF.format(tmp=conf.parent, python=sys.executable))
    supervisord = subprocess.Popen([str(Path(sys.executable).parent / "supervisord"), "-c", str(conf)],
                                   cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sup = Supervisor.from_conf(conf)
        assert sup.programs == ["saver"]
        deadline = time.monotonic() + 20
        while sup.running() != ["saver"]:  # supervisord has no readiness line to wait on
            assert time.monotonic() < deadline and supervisord.poll() is None, "supervisord never ran the saver"
            time.sleep(0.05)
        db = tmp_path / "rigtel.db"
        make_db(db, 100)
        taken = backup.take_backup(db, tmp_path / "backups").path
        where = ["--set", f"database_path={db}", "--set", f"data_dir={tmp_path}", "--supervisor-conf", str(conf)]
        refused = rigtel(tmp_path, "restore", str(taken), *where)
        assert refused.returncode == 1
        assert f"supervisorctl -c {conf} stop saver" in refused.stderr and "--restart-programs" in refused.stderr
        done = rigtel(tmp_path, "restore", str(taken), "--restart-programs", *where)
        assert done.returncode == 0, done.stderr
        assert "stopping saver" in done.stdout and "starting saver" in done.stdout
        assert sup.running() == ["saver"]
        log = (conf.parent / "supervisord.log").read_text()
        assert "stopped: saver" in log and log.count("spawned: 'saver'") == 2
    finally:
        supervisord.terminate()
        supervisord.wait(20)
