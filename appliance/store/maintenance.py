"""`rigtel maintenance`: keeps the database healthy on a schedule while ingest goes on.

Two jobs on an APScheduler scheduler (coalescing, one instance of each at a time, with a
misfire grace so a run missed while the box was off happens once when it is back):

- nightly at backup_time (local time): `PRAGMA quick_check` of the live database (alert
  `db-integrity` when it fails), a backup (backup.py) with its own quick_check, rotation;
- every maintenance_check_s: the disk guard, retention (raw samples and dead letters
  older than retention_raw_days), and an incremental vacuum.

Every write here is a short `BEGIN IMMEDIATE` transaction of at most retention_batch_rows
rows on this program's own connection, followed by a pause at least as long, so the saver
(the ingest writer; SQLite in WAL mode takes one writer at a time) waits at most one
batch. Never a full `VACUUM`: it rewrites the whole file inside one write transaction and
blocks the saver for seconds. Space comes back through `auto_vacuum = INCREMENTAL` (set
by the saver when it creates the database) and `PRAGMA incremental_vacuum(N)` in steps.

The scheduler runs in its own threads (a BackgroundScheduler, not a BlockingScheduler: the
main thread must stay free to own the bus publisher and to notice SIGTERM, so the signal
handler only sets a flag). Jobs hand their alerts to the main thread through a queue and
watch the same flag between batches, so a stop never waits for more than one batch.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from appliance.store.backup import (BackupError, BackupInterrupted, check_database, default_folder,
                                    record_check, reserve_bytes, rotate, take_backup)

log = logging.getLogger("rigtel.maintenance")

MB = 1024 * 1024
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
DISK_GUARD_KEEP_MS = HOUR_MS  # the disk guard never prunes the last hour of raw data
MIN_PAUSE_S = 0.05  # between write transactions: longer than the saver's busy-wait steps
VACUUM_CHUNK_PAGES = 256  # 1 MB of 4 KiB pages per incremental_vacuum step
NIGHTLY_GRACE_S = 3600
ALERT_TOPIC = "alert"
MAINTENANCE_ALERTS = ("disk-low", "db-integrity", "backup-failed")

# table -> (key column, time column) of what retention may prune; roll-ups, events,
# alerts, streams and gaps are kept for the life of the well
PRUNABLE = {"samples": ("ts", "ts"), "dead_letters": ("id", "received_ms")}

Wait = Callable[[float], bool]  # sleep up to s seconds; True means stop now


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


# -- pure --------------------------------------------------------------------------------


def cutoff_ms(now_ms: int, newest_ms: int | None, keep_ms: float) -> int | None:
    """Rows stamped before this (epoch ms) may be pruned; None: nothing may be.

    Counted back from the newest sample, or from now when that is earlier: a replayed old
    well keeps its last `keep_ms` of data, and a sample stamped in the future by a bad
    clock cannot make the present prunable. keep_ms <= 0 means keep everything.
    """
    if keep_ms <= 0 or newest_ms is None:
        return None
    return min(now_ms, newest_ms) - int(keep_ms)


def free_mb_of(folder: Path) -> float:
    """Free space, in MB, on the filesystem holding `folder` (for this user)."""
    return shutil.disk_usage(folder).free / MB


# -- database work: short transactions on this program's own connection -------------------


def connect(path: str | Path) -> sqlite3.Connection:
    """A writing connection to an existing database; never creates one (the saver does)."""
    db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 5000")
    # Debian builds SQLite with secure_delete on: zeroing every freed page costs writes
    # (and WAL space, just when the disk guard is short of it) to hide pruned drilling data
    db.execute("PRAGMA secure_delete = FAST")
    # keep the WAL from staying large after the bursts of pages a vacuum writes
    db.execute("PRAGMA journal_size_limit = 67108864")
    return db


def _pause(wait: Wait, busy_s: float) -> bool:
    # at least as long as the transaction: the saver gets the lock at least half the time
    return wait(max(MIN_PAUSE_S, busy_s))


@dataclass
class PruneResult:
    rows: int = 0
    batches: int = 0
    longest_ms: float = 0.0  # longest write transaction: the most the saver waited on us

    def add(self, other: "PruneResult") -> "PruneResult":
        return PruneResult(self.rows + other.rows, self.batches + other.batches,
                           max(self.longest_ms, other.longest_ms))


def prune(db: sqlite3.Connection, table: str, before_ms: int, batch_rows: int, *,
          max_rows: int | None = None, wait: Wait = _sleep) -> PruneResult:
    """Delete `table`'s rows stamped before `before_ms` (epoch ms), oldest first, in
    transactions of `batch_rows` rows, until none is left, `max_rows` are gone, or
    `wait` says stop."""
    key, stamp = PRUNABLE[table]
    sql = (f"DELETE FROM {table} WHERE {key} IN "
           f"(SELECT {key} FROM {table} WHERE {stamp} < ? ORDER BY {stamp} LIMIT ?)")
    result = PruneResult()
    while max_rows is None or result.rows < max_rows:
        db.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        try:
            n = db.execute(sql, (before_ms, batch_rows)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        busy = time.monotonic() - started
        result.rows += n
        result.batches += 1
        result.longest_ms = max(result.longest_ms, busy * 1000)
        if n < batch_rows or _pause(wait, busy):
            break
    return result


@dataclass
class VacuumResult:
    pages: int  # pages given back to the filesystem
    bytes_before: int  # size of the database file (without its WAL)
    bytes_after: int
    longest_ms: float = 0.0  # longest step: the most the saver waited on us


def incremental_vacuum(db: sqlite3.Connection, path: str | Path, *, chunk_pages: int = VACUUM_CHUNK_PAGES,
                       wait: Wait = _sleep) -> VacuumResult:
    """Give free pages back to the filesystem in steps of `chunk_pages`, then checkpoint
    so the database file itself shrinks. Does nothing unless auto_vacuum is INCREMENTAL."""
    before = os.path.getsize(path)
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return VacuumResult(0, before, before)
    pages, longest = 0, 0.0
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    while free > 0:
        started = time.monotonic()
        # executescript() steps the pragma to completion; execute() (and fetchall() on
        # Python 3.11) returns after the first step, having freed a single page
        db.executescript(f"PRAGMA incremental_vacuum({min(free, chunk_pages)});")
        busy = time.monotonic() - started
        longest = max(longest, busy)
        left = db.execute("PRAGMA freelist_count").fetchone()[0]
        pages += free - left
        if left >= free or _pause(wait, busy):
            break
        free = left
    if pages:
        # PASSIVE never waits for the saver or readers; the file is truncated once every
        # frame is copied back, which is the usual case between two saver commits
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return VacuumResult(pages, before, os.path.getsize(path), longest * 1000)


def newest_sample_ms(db: sqlite3.Connection) -> int | None:
    return db.execute("SELECT max(ts) FROM samples").fetchone()[0]


@dataclass
class DiskGuardResult:
    free_mb_before: float
    free_mb_after: float
    threshold_mb: float
    pruned: PruneResult = field(default_factory=PruneResult)
    exhausted: bool = False  # nothing older than DISK_GUARD_KEEP_MS was left to prune

    @property
    def low_before(self) -> bool:
        return self.free_mb_before < self.threshold_mb

    @property
    def low_after(self) -> bool:
        return self.free_mb_after < self.threshold_mb


def guard_disk(db: sqlite3.Connection, path: str | Path, threshold_mb: float, batch_rows: int, *,
               now_ms: int, free_mb: Callable[[Path], float] = free_mb_of,
               wait: Wait = _sleep) -> DiskGuardResult:
    """Below `threshold_mb` free on the database's filesystem, prune the oldest raw
    samples (then dead letters), never the last hour, vacuuming as it goes, until the
    free space is back above the threshold or nothing old is left.

    free_mb(folder) measures the free space in MB (injectable for tests).
    """
    folder = Path(path).parent
    before = free_mb(folder)
    result = DiskGuardResult(before, before, threshold_mb)
    if before >= threshold_mb:
        return result
    floors = {"samples": cutoff_ms(now_ms, newest_sample_ms(db), DISK_GUARD_KEEP_MS),
              "dead_letters": now_ms - DISK_GUARD_KEEP_MS}
    while result.free_mb_after < threshold_mb:
        pruned = PruneResult()
        for table, floor in floors.items():
            if floor is not None and not pruned.rows:
                # one batch, then vacuum and measure again: prune no more than needed
                pruned = prune(db, table, floor, batch_rows, max_rows=batch_rows, wait=wait)
        result.pruned = result.pruned.add(pruned)
        incremental_vacuum(db, path, wait=wait)
        result.free_mb_after = free_mb(folder)
        if not pruned.rows:
            result.exhausted = True
            break
        if wait(0):
            break
    return result


# -- the jobs ----------------------------------------------------------------------------


class Maintenance:
    """The scheduled jobs. They run in scheduler threads and reach the bus only through
    `emit(topic, data)`; `stop` (an Event) makes them return between two batches."""

    def __init__(self, cfg: Any, emit: Callable[[str, dict], None], stop: threading.Event | None = None,
                 free_mb: Callable[[Path], float] = free_mb_of, src: str | None = None) -> None:
        self.cfg = cfg
        self.db_path = Path(cfg.database_path)
        self.backup_folder = default_folder(cfg)
        self.emit = emit
        self.stop = stop or threading.Event()
        self.free_mb = free_mb
        self.src = src or f"{cfg.rig_id}.maintenance"
        self.budget_s = cfg.maintenance_check_s / 2  # a check ends before the next is due
        self.active: dict[str, bool] | None = None  # alert id -> raised, as last published
        self.lock = threading.Lock()
        self.totals = {"checks": 0, "pruned_rows": 0, "vacuumed_pages": 0, "backups": 0,
                       "last_backup": None, "free_mb": None}

    def summary(self) -> dict:
        with self.lock:
            active = sorted(a for a, on in (self.active or {}).items() if on)
        return {**self.totals, "alerts": active}

    # -- alerts, published on change only ------------------------------------------------

    def _known_alerts(self) -> dict[str, bool]:
        """What this program last said about its alerts, from the database: an alert left
        raised by a previous run is cleared by this one when the condition is gone."""
        states: dict[str, bool] = {}
        try:
            db = sqlite3.connect(self.db_path.resolve().as_uri() + "?mode=ro", uri=True)
        except sqlite3.Error:
            return states
        try:
            for alert_id, state in db.execute(
                    "SELECT alert_id, state FROM alerts WHERE src = ? ORDER BY ts, id", (self.src,)):
                states[alert_id] = state in ("active_unack", "active_ack")
        except sqlite3.Error:
            pass
        finally:
            db.close()
        return states

    def alert(self, alert_id: str, kind: str, raised: bool, message: str,
              priority: str = "high", **details: Any) -> None:
        with self.lock:
            if self.active is None:
                self.active = self._known_alerts()
            if self.active.get(alert_id, False) == raised:
                return
            self.active[alert_id] = raised
        # ISA-18.2 states, as the dashboard knows them: raised unacknowledged; a clear
        # still waits for an operator's acknowledgement
        data = {"id": alert_id, "kind": kind, "state": "active_unack" if raised else "cleared_unack",
                "priority": priority, "message": message, **details}
        (log.warning if raised else log.info)("alert %s %s: %s", alert_id, data["state"], message)
        self.emit(ALERT_TOPIC, data)

    # -- every maintenance_check_s -------------------------------------------------------

    def _waiter(self, budget_s: float) -> Wait:
        deadline = time.monotonic() + budget_s

        def wait(seconds: float) -> bool:
            if self.stop.wait(max(0.0, min(seconds, deadline - time.monotonic()))):
                return True
            return time.monotonic() >= deadline

        return wait

    def check(self, now_ms: int | None = None) -> dict | None:
        """Disk guard, retention, incremental vacuum; returns what was done."""
        if not self.db_path.is_file():
            log.debug("check: no database at %s yet (the saver creates it)", self.db_path)
            return None
        cfg = self.cfg
        now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        wait = self._waiter(self.budget_s)
        db = connect(self.db_path)
        try:
            guard = guard_disk(db, self.db_path, cfg.disk_min_free_mb, cfg.retention_batch_rows,
                               now_ms=now_ms, free_mb=self.free_mb, wait=wait)
            pruned = guard.pruned
            keep_ms = cfg.retention_raw_days * DAY_MS
            cut = cutoff_ms(now_ms, newest_sample_ms(db), keep_ms)
            if cut is not None and not wait(0):
                pruned = pruned.add(prune(db, "samples", cut, cfg.retention_batch_rows, wait=wait))
            if keep_ms > 0 and not wait(0):
                pruned = pruned.add(prune(db, "dead_letters", now_ms - int(keep_ms),
                                          cfg.retention_batch_rows, wait=wait))
            vacuum = incremental_vacuum(db, self.db_path, wait=wait)
        finally:
            db.close()
        if guard.low_before:
            self.alert("disk-low", "disk_low", True,
                       f"{guard.free_mb_before:,.0f} MB free for {self.db_path}, below disk_min_free_mb "
                       f"({cfg.disk_min_free_mb} MB): pruned the {guard.pruned.rows} oldest raw samples "
                       f"(roll-ups kept), now {guard.free_mb_after:,.0f} MB free"
                       + (". Nothing older than an hour is left to prune: free space on this disk now "
                          f"(old backups in {self.backup_folder}, logs)." if guard.exhausted else ""),
                       free_mb=round(guard.free_mb_before, 1), threshold_mb=cfg.disk_min_free_mb)
        if not guard.low_after:
            self.alert("disk-low", "disk_low", False,
                       f"free space back to {guard.free_mb_after:,.0f} MB (threshold {cfg.disk_min_free_mb} MB)",
                       free_mb=round(guard.free_mb_after, 1), threshold_mb=cfg.disk_min_free_mb)
        with self.lock:
            self.totals["checks"] += 1
            self.totals["pruned_rows"] += pruned.rows
            self.totals["vacuumed_pages"] += vacuum.pages
            self.totals["free_mb"] = round(guard.free_mb_after, 1)
        done = {"pruned_rows": pruned.rows, "batches": pruned.batches, "longest_ms": round(pruned.longest_ms, 1),
                "vacuumed_pages": vacuum.pages, "file_bytes": vacuum.bytes_after,
                "free_mb": round(guard.free_mb_after, 1), "disk_low": guard.low_after}
        (log.info if pruned.rows or vacuum.pages else log.debug)(
            "check: pruned %d row(s) in %d batch(es) (longest %.0f ms), vacuumed %d page(s) "
            "(file %s -> %s bytes), %.0f MB free", pruned.rows, pruned.batches, pruned.longest_ms,
            vacuum.pages, vacuum.bytes_before, vacuum.bytes_after, guard.free_mb_after)
        return done

    # -- nightly ---------------------------------------------------------------------------

    def nightly(self) -> Path | None:
        """Integrity check of the live database, a backup, its check, rotation."""
        cfg = self.cfg
        if not self.db_path.is_file():
            log.warning("nightly: no database at %s, nothing to check or back up", self.db_path)
            return None
        result = check_database(self.db_path)
        self.alert("db-integrity", "db_integrity", result != "ok",
                   f"PRAGMA quick_check of {self.db_path}: {result}"
                   + ("" if result == "ok" else f". Restore the latest good backup from {self.backup_folder} "
                                                "(docs/STORAGE.md, 'Restoring a backup')."))
        try:
            backup = take_backup(self.db_path, self.backup_folder, should_stop=self.stop.is_set,
                                 reserve=reserve_bytes(self.db_path, self.backup_folder, cfg.disk_min_free_mb))
        except BackupInterrupted:
            log.info("nightly: backup abandoned, the program is stopping")
            return None
        except (BackupError, OSError) as e:
            self.alert("backup-failed", "backup_failed", True, f"nightly backup failed: {e}", priority="medium")
            return None
        checked = check_database(backup.path)
        record_check(backup.path, checked)
        if checked != "ok":
            backup.path.unlink(missing_ok=True)
            self.alert("backup-failed", "backup_failed", True,
                       f"the new backup failed its quick_check ({checked}) and was deleted", priority="medium")
            return None
        self.alert("backup-failed", "backup_failed", False, f"backup {backup.path.name} taken", priority="medium")
        removed = rotate(self.backup_folder, cfg.backup_keep_daily, cfg.backup_keep_weekly)
        with self.lock:
            self.totals["backups"] += 1
            self.totals["last_backup"] = backup.path.name
        log.info("nightly: live database %s; backup %s, %.1f MB in %.1f s, quick_check ok; rotation removed %s",
                 result, backup.path, backup.size_bytes / MB, backup.seconds,
                 ", ".join(p.name for p in removed) or "nothing")
        return backup.path

    # -- what the scheduler calls: an exception is logged, never fatal ----------------------

    def run_check(self) -> None:
        try:
            self.check()
        except Exception:
            log.exception("check failed; it runs again in %g s", self.cfg.maintenance_check_s)

    def run_nightly(self) -> None:
        try:
            self.nightly()
        except Exception as e:
            log.exception("nightly backup and check failed; it runs again tomorrow at %s", self.cfg.backup_time)
            try:
                self.alert("backup-failed", "backup_failed", True, f"nightly job failed: {e}", priority="medium")
            except Exception:
                log.exception("cannot raise the backup-failed alert")


def build_scheduler(cfg: Any, jobs: Maintenance):
    """A BackgroundScheduler with the nightly (cron) and check (interval) jobs."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    hour, minute = (int(x) for x in cfg.backup_time.split(":"))
    # two threads: the check (disk guard) keeps running during a long nightly backup
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(2)},
                                    job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.add_job(jobs.run_nightly, CronTrigger(hour=hour, minute=minute), id="nightly",
                      name="integrity check, backup, rotation", misfire_grace_time=NIGHTLY_GRACE_S)
    scheduler.add_job(jobs.run_check, IntervalTrigger(seconds=cfg.maintenance_check_s), id="check",
                      name="disk guard, retention, incremental vacuum", next_run_time=datetime.now().astimezone(),
                      misfire_grace_time=max(1, int(cfg.maintenance_check_s)))
    return scheduler


def _publish_waiting(outbox: "queue.SimpleQueue[tuple[str, dict]]", publish: Callable[[str, dict], Any]) -> None:
    while True:
        try:
            topic, data = outbox.get_nowait()
        except queue.Empty:
            return
        try:
            publish(topic, data)
        except ValueError as e:
            log.error("cannot publish on %r: %s", topic, e)


def main(argv: Sequence[str]) -> int:
    from appliance.bus.heartbeat import Heartbeat
    from appliance.bus.publisher import Publisher
    from appliance.cli import load_settings, settings_parser
    from appliance.ops.runtime import StopSignal, configure_logging

    parser = settings_parser("maintenance", "Nightly backup, rotation and integrity check; retention, "
                                            "disk guard and incremental vacuum every maintenance_check_s.")
    cfg = load_settings(parser.parse_args(argv))
    configure_logging(cfg, "maintenance")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per run
    stop = StopSignal().install()
    outbox: queue.SimpleQueue[tuple[str, dict]] = queue.SimpleQueue()
    # spooled: an alert published while the saver or the broker is down is fetched later
    with Publisher("maintenance", settings=cfg, spool=True) as pub:
        jobs = Maintenance(cfg, emit=lambda topic, data: outbox.put((topic, data)), stop=stop.event, src=pub.src)
        scheduler = build_scheduler(cfg, jobs)
        heartbeat = Heartbeat(pub, "maintenance", cfg.bus_heartbeat_s, stats=jobs.summary)
        scheduler.start()
        log.info("ready: database %s, backups in %s; next backup %s, next check %s", cfg.database_path,
                 jobs.backup_folder, scheduler.get_job("nightly").next_run_time.isoformat(timespec="seconds"),
                 scheduler.get_job("check").next_run_time.isoformat(timespec="seconds"))
        # the main thread owns the publisher: heartbeats, and the alerts the jobs queue
        while not stop.wait(min(heartbeat.seconds_to_next(), 1.0)):
            _publish_waiting(outbox, pub.publish)
            heartbeat.tick()
        log.info("stopping on %s: waiting for a running job to reach a safe point", stop.signal_name)
        scheduler.shutdown(wait=True)
        _publish_waiting(outbox, pub.publish)
    log.info("stopped: %s", jobs.summary())
    return 0
