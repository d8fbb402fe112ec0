"""Backups of the database: taken online, rotated, listed with their integrity, restored.

A backup is written with `VACUUM INTO` to a hidden partial file in backup_dir, fsynced
with its folder, then renamed to `rigtel-YYYYmmdd-HHMMSS.db` (UTC, so names never go
backwards across a DST change): a backup file is complete or does not exist. VACUUM
INTO reads one snapshot inside a read transaction, so in WAL mode the saver keeps
committing throughout, and it writes a compact copy with no free pages. sqlite3's
`Connection.backup()` has a progress callback, but when another connection writes
between its steps it starts again from the first page; with the saver committing every
100 ms a stepped backup of a large database never finishes (docs/STORAGE.md has the
numbers). Progress here comes from a SQLite progress handler that looks at the size of
the file being written, and the same handler lets a stopping program abandon a backup.

A restore checks the backup (`PRAGMA integrity_check` and the appliance's tables),
makes sure no program has the database open for writing, keeps a safety copy of the
current database, removes its WAL by leaving WAL mode (copying the old -wal beside a
new file would corrupt it), and renames a copy of the backup into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable

NAME_FORMAT = "rigtel-%Y%m%d-%H%M%S.db"
NAME = re.compile(r"^rigtel-(\d{8}-\d{6})\.db$")
PARTIAL = re.compile(r"^\.partial-(\d+)-")  # .partial-<pid>-<final name>, while being written
CHECK_SUFFIX = ".check"  # cached integrity result beside each backup, JSON
FILE_MODE = 0o640
DIR_MODE = 0o750
MB = 1024 * 1024
APPLIANCE_TABLES = ("samples", "streams", "channels")
PROGRESS_EVERY_S = 0.5
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
LIST_COMMAND = "rigtel backups"
RESTORE_COMMAND = "rigtel restore"


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says what to do instead."""


class BackupInterrupted(BackupError):
    """A backup abandoned because the program is stopping; nothing was left behind."""


# -- names and rotation: pure ------------------------------------------------------------


def backup_name(when: datetime) -> str:
    """The file name of a backup taken at `when` (an aware datetime), in UTC."""
    return when.astimezone(timezone.utc).strftime(NAME_FORMAT)


def backup_time(name: str) -> datetime | None:
    """When a backup was taken, from its file name (UTC); None for any other name."""
    m = NAME.match(name)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def choose_kept(names: Iterable[str], keep_daily: int, keep_weekly: int) -> set[str]:
    """The backup names rotation keeps.

    The newest `keep_daily` backups, plus, beyond them, the newest backup of each of the
    `keep_weekly` most recent ISO weeks (Monday to Sunday, UTC) that the daily ones do not
    already cover. Names that are not backup names are returned too: never deleted.
    """
    names = list(names)
    dated = sorted(((t, n) for n in names if (t := backup_time(n)) is not None), reverse=True)
    kept = {n for n in names if backup_time(n) is None}
    covered: set[tuple[int, int]] = set()
    for t, n in dated[:keep_daily]:
        kept.add(n)
        covered.add(t.isocalendar()[:2])
    weekly = 0
    for t, n in dated[keep_daily:]:
        if weekly >= keep_weekly:
            break
        week = t.isocalendar()[:2]
        if week not in covered:  # newest first, so this is the week's newest backup
            covered.add(week)
            kept.add(n)
            weekly += 1
    return kept


# -- files -------------------------------------------------------------------------------


def default_folder(cfg) -> Path:
    """backup_dir, or DATA_DIR/backups when it is empty."""
    return Path(cfg.backup_dir) if cfg.backup_dir else Path(cfg.data_dir) / "backups"


def open_read_only(path: str | Path) -> sqlite3.Connection:
    """A read-only connection that never creates the file."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 10000")
    return db


def check_database(path: str | Path, *, full: bool = False) -> str:
    """'ok', or what is wrong with the database file at `path`.

    full: `PRAGMA integrity_check` (also cross-checks indexes against tables: reads
    everything, a few seconds per GB); else `PRAGMA quick_check`.
    """
    try:
        db = open_read_only(path)
    except (BackupError, sqlite3.Error) as e:
        return f"cannot open: {e}"
    try:
        rows = db.execute("PRAGMA integrity_check" if full else "PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as e:
        return str(e)
    finally:
        db.close()
    problems = [str(r[0]) for r in rows]
    if problems == ["ok"]:
        return "ok"
    return "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")


def missing_tables(path: str | Path) -> list[str]:
    """The appliance tables a database file lacks (all of them if it cannot be read)."""
    try:
        db = open_read_only(path)
        try:
            have = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except (BackupError, sqlite3.Error):
        return list(APPLIANCE_TABLES)
    return [t for t in APPLIANCE_TABLES if t not in have]


def _check_file(path: Path) -> Path:
    return path.with_name(path.name + CHECK_SUFFIX)


def record_check(path: Path, result: str) -> None:
    """Remember an integrity result beside the backup, valid while the file is unchanged."""
    st = path.stat()
    body = {"result": result, "checked_ms": time.time_ns() // 1_000_000, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}
    tmp = path.with_name(f".{path.name}{CHECK_SUFFIX}.{os.getpid()}")
    tmp.write_text(json.dumps(body))
    _own_like(tmp, path, FILE_MODE)
    os.replace(tmp, _check_file(path))


def cached_check(path: Path) -> tuple[str, int] | None:
    """(result, checked at epoch ms) recorded for this very file, or None."""
    try:
        body = json.loads(_check_file(path).read_text())
        st = path.stat()
        if body["size"] == st.st_size and body["mtime_ns"] == st.st_mtime_ns:
            return str(body["result"]), int(body["checked_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    taken: datetime  # from the name, UTC
    size_bytes: int
    check: tuple[str, int] | None  # cached (result, checked epoch ms)


def list_backups(folder: Path) -> list[BackupInfo]:
    """Backups in `folder`, newest first."""
    out = []
    if folder.is_dir():
        for p in folder.iterdir():
            taken = backup_time(p.name)
            if taken is not None and p.is_file():
                out.append(BackupInfo(p, taken, p.stat().st_size, cached_check(p)))
    return sorted(out, key=lambda b: b.taken, reverse=True)


def rotate(folder: Path, keep_daily: int, keep_weekly: int) -> list[Path]:
    """Delete the backups `choose_kept` does not keep; returns what was deleted."""
    names = [b.path.name for b in list_backups(folder)]
    kept = choose_kept(names, keep_daily, keep_weekly)
    removed = []
    for name in names:
        if name not in kept:
            path = folder / name
            path.unlink(missing_ok=True)
            _check_file(path).unlink(missing_ok=True)
            removed.append(path)
    if removed:
        _fsync_dir(folder)
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable across a power cut."""
    _fsync_file(path)


def _own_like(path: Path, model: Path, mode: int) -> None:
    """Give `path` the mode, and (when run as root, e.g. by a technician with sudo) the
    owner of `model`, so the appliance's programs can still read and write it."""
    os.chmod(path, mode)
    if os.geteuid() == 0:
        st = model.stat()
        os.chown(path, st.st_uid, st.st_gid)


def _remove_stale_partials(folder: Path) -> None:
    """Partial files left by a backup that was killed (its process is gone)."""
    for p in folder.iterdir():
        m = PARTIAL.match(p.name)
        if m:
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                p.unlink(missing_ok=True)
            except PermissionError:
                pass  # alive, another user's


def reserve_bytes(db_path: str | Path, folder: Path, disk_min_free_mb: int) -> int:
    """Free space a backup must leave: disk_min_free_mb when the backups share the
    database's filesystem (a backup must never starve ingest), else nothing."""
    try:
        same = Path(db_path).parent.stat().st_dev == folder.stat().st_dev
    except OSError:
        same = True
    return disk_min_free_mb * MB if same else 0


# -- taking a backup ---------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    seconds: float
    estimate_bytes: int  # what the live database held in used pages


def take_backup(db_path: str | Path, folder: Path, *, reserve: int = 0, now: datetime | None = None,
                progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> BackupResult:
    """Back up the live database into `folder` online; returns the new file.

    reserve: bytes of free space that must remain after the backup, else BackupError.
    progress(written_bytes, estimate_bytes) is called about twice a second.
    should_stop() returning True abandons the backup (BackupInterrupted), removing the
    partial file.
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}: nothing to back up. Check database_path "
                          "(`rigtel config` shows it) and that the saver has run.")
    if not folder.is_dir():
        folder.mkdir(mode=DIR_MODE, parents=True)
        if os.geteuid() == 0:
            _own_like(folder, folder.parent, DIR_MODE)
    _remove_stale_partials(folder)
    src = open_read_only(db_path)
    partial: Path | None = None
    try:
        page_size, pages, free_pages = (src.execute(f"PRAGMA {p}").fetchone()[0]
                                        for p in ("page_size", "page_count", "freelist_count"))
        estimate = (pages - free_pages) * page_size
        free = shutil.disk_usage(folder).free
        if free - estimate < reserve:
            raise BackupError(
                f"not enough free space in {folder} for a backup: {free // MB} MB free, the backup "
                f"needs about {estimate // MB} MB and {reserve // MB} MB must stay free for ingest "
                "(disk_min_free_mb). Delete old backups, or set backup_dir to a folder on another disk.")
        when = now or datetime.now(timezone.utc)
        final = folder / backup_name(when)
        while final.exists():  # two backups within a second
            when += timedelta(seconds=1)
            final = folder / backup_name(when)
        partial = folder / f".partial-{os.getpid()}-{final.name}"
        # VACUUM INTO accepts an existing empty file: creating it first sets its mode
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        started = time.monotonic()
        last_report = started

        def on_progress() -> int:
            nonlocal last_report
            if should_stop is not None and should_stop():
                return 1  # SQLite stops the statement: "interrupted"
            t = time.monotonic()
            if progress is not None and t - last_report >= PROGRESS_EVERY_S:
                last_report = t
                progress(partial.stat().st_size, estimate)
            return 0

        src.set_progress_handler(on_progress, 20_000)
        try:
            src.execute("VACUUM INTO ?", (str(partial),))
        except sqlite3.DatabaseError as e:
            if should_stop is not None and should_stop():
                raise BackupInterrupted("backup abandoned: the program is stopping") from None
            if isinstance(e, sqlite3.OperationalError):
                advice = f"Check the free space and permissions of {folder}."
            else:
                advice = "The database is damaged: restore the latest good backup (docs/STORAGE.md)."
            raise BackupError(f"backup of {db_path} failed: {e}. {advice}") from None
        _fsync_file(partial)
        _own_like(partial, folder, FILE_MODE)
        os.replace(partial, final)
        partial = None
        _fsync_dir(folder)
        return BackupResult(final, final.stat().st_size, time.monotonic() - started, estimate)
    finally:
        src.close()
        if partial is not None:
            partial.unlink(missing_ok=True)



# -- commands ----------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / MB:,.1f} MB"


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def main(argv) -> int:
    """`rigtel backup`: take a backup now, with progress."""
    from appliance.cli import load_settings, settings_parser

    parser = settings_parser("backup", "Back up the database now, online (ingest goes on), into "
                                       "backup_dir; `rigtel backups` lists the backups and "
                                       "`rigtel restore FILE` brings one back.")
    cfg = load_settings(parser.parse_args(argv))
    folder = default_folder(cfg)
    print(f"backing up {cfg.database_path} into {folder} ...", flush=True)

    def progress(written: int, estimate: int) -> None:
        print(f"  {_mb(written)} written of about {_mb(estimate)}"
              f" ({min(99, 100 * written // max(estimate, 1))}%)", flush=True)

    try:
        result = take_backup(cfg.database_path, folder, progress=progress,
                             reserve=reserve_bytes(cfg.database_path, folder, cfg.disk_min_free_mb))
    except (BackupError, OSError) as e:
        print(f"rigtel backup: {e}", file=sys.stderr)
        return 1
    print(f"done: {result.path}\n  {_mb(result.size_bytes)} in {result.seconds:.1f} s", flush=True)
    check = check_database(result.path)
    record_check(result.path, check)
    print(f"  integrity (quick_check): {check}")
    return 0 if check == "ok" else 1


def list_main(argv) -> int:
    """`rigtel backups [--check]`: path, size, age and integrity of every backup."""
    from appliance.cli import load_settings, settings_parser

    parser = settings_parser("backups", "List the backups in backup_dir, newest first, with "
                                            "their size, age and integrity.")
    parser.add_argument("--check", action="store_true",
                        help="run PRAGMA quick_check on each backup now (reads every file) "
                             "instead of showing the result remembered from the last check")
    args = parser.parse_args(argv)
    cfg = load_settings(args)
    folder = default_folder(cfg)
    backups = list_backups(folder)
    if not backups:
        print(f"no backups in {folder}: `rigtel backup` takes one now; `rigtel maintenance` takes "
              f"one every night at {cfg.backup_time}.")
        return 0
    now = time.time()
    bad = 0
    print(f"{'backup':<60} {'size':>12} {'age':>9}  integrity")
    for b in backups:
        if args.check:
            result = check_database(b.path)
            record_check(b.path, result)
            integrity = result
        elif b.check is not None:
            integrity = f"{b.check[0]} (checked {_age(now - b.check[1] / 1000)} ago)"
        else:
            integrity = "not checked (--check checks it)"
        bad += not integrity.startswith("ok") and not integrity.startswith("not checked")
        print(f"{str(b.path):<60} {_mb(b.size_bytes):>12} {_age(now - b.taken.timestamp()):>9}  {integrity}")
    return 1 if bad else 0
