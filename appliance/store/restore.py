"""Restoring a backup over the live database, safely.

A restore checks the backup (`PRAGMA integrity_check` and the appliance's tables),
makes sure no program has the database open for writing, keeps a safety copy of the
current database, removes its WAL by leaving WAL mode (copying the old -wal beside a
new file would corrupt it), and renames a copy of the backup into place. Under
supervisord it can stop and restart the programs that use the database.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import xmlrpc.client
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from appliance.store.backup import (
    BackupError,
    FILE_MODE,
    LIST_COMMAND,
    RESTORE_COMMAND,
    _fsync_dir,
    _fsync_file,
    _own_like,
    check_database,
    SQLITE_BUSY,
    SQLITE_LOCKED,
    default_folder,
    missing_tables,
    open_read_only,
)

class DatabaseInUse(BackupError):
    """The live database is open for writing by another program."""


@dataclass(frozen=True)
class RestoreResult:
    database: Path
    safety_copy: Path | None  # the database as it was before, None if there was none
    safety_copy_raw: bool  # copied byte for byte because SQLite could not read it


def _is_busy(e: sqlite3.Error) -> bool:
    return (getattr(e, "sqlite_errorcode", 0) & 0xFF) in (SQLITE_BUSY, SQLITE_LOCKED)


def restore(backup: str | Path, db_path: str | Path, *, now: datetime | None = None) -> RestoreResult:
    """Put `backup` in place of the database at `db_path`, keeping a safety copy.

    Refuses (BackupError, nothing changed) a backup that fails `PRAGMA integrity_check`
    or lacks the appliance's tables, and (DatabaseInUse) a database another program
    has open for writing.
    """
    backup, db_path = Path(backup), Path(db_path)
    problem = check_database(backup, full=True)
    if problem != "ok":
        raise BackupError(f"{backup} fails the integrity check ({problem}); nothing was changed. "
                          f"Pick another backup: `{LIST_COMMAND} --check` shows them all.")
    missing = missing_tables(backup)
    if missing:
        raise BackupError(f"{backup} is not an appliance database (no table {', '.join(missing)}); "
                          "nothing was changed. Backups are named rigtel-YYYYmmdd-HHMMSS.db.")
    if not db_path.parent.is_dir():
        raise BackupError(f"folder {db_path.parent} does not exist: check database_path (`rigtel config`).")
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")
    wal, shm = (db_path.with_name(db_path.name + s) for s in ("-wal", "-shm"))
    guard: sqlite3.Connection | None = None
    safety: Path | None = None
    raw = False
    model = db_path if db_path.exists() else db_path.parent
    try:
        if db_path.exists():
            safety = db_path.with_name(f"{db_path.name}.before-restore-{stamp}")
            guard = sqlite3.connect(str(db_path), isolation_level=None)
            guard.execute("PRAGMA busy_timeout = 2000")
            try:
                # Leaving WAL mode needs every other writing connection closed: the proof
                # that nothing is writing. It also folds the WAL into the file and deletes
                # it. The held write lock then keeps a starting program out until the end.
                mode = guard.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
                guard.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                if _is_busy(e):
                    raise DatabaseInUse(f"{db_path} is open for writing by another program (the saver or "
                                        "maintenance): stop them first; nothing was changed.") from None
                mode, raw = "unreadable", True  # the broken database a restore is meant to replace
            if mode not in ("delete", "unreadable"):
                raise DatabaseInUse(f"{db_path} could not leave {mode} mode: another program has it "
                                    "open; stop it first. Nothing was changed.")
            if raw:
                shutil.copyfile(db_path, safety)
                if wal.exists():
                    shutil.copyfile(wal, safety.with_name(safety.name + "-wal"))
            else:
                src, dst = open_read_only(db_path), sqlite3.connect(str(safety))
                try:
                    src.backup(dst)  # one step: nothing else writes while the guard holds the lock
                finally:
                    src.close()
                    dst.close()
            _fsync_file(safety)
            _own_like(safety, model, FILE_MODE)
        for stale in (wal, shm):  # gone after leaving WAL mode, unless the old file was unreadable
            stale.unlink(missing_ok=True)
        incoming = db_path.with_name(f".{db_path.name}.restoring-{os.getpid()}")
        try:
            shutil.copyfile(backup, incoming)
            _fsync_file(incoming)
            _own_like(incoming, model, FILE_MODE)
            os.replace(incoming, db_path)
        finally:
            incoming.unlink(missing_ok=True)
        _fsync_dir(db_path.parent)
    finally:
        if guard is not None:
            guard.close()  # its lock was on the old file, now unlinked
    return RestoreResult(db_path, safety, raw)


# -- supervisord: which programs hold the database ---------------------------------------

PROGRAMS_USING_DB = ("saver", "maintenance", "web")
DEFAULT_SUPERVISOR_CONF = Path("/etc/rigtel/supervisord.conf")


def find_supervisor_conf(explicit: str | None, config_file: str | None) -> Path | None:
    """--supervisor-conf, else supervisord.conf beside the settings file (as the installer
    and `rigtel dev` lay them out), else /etc/rigtel/supervisord.conf; None if none exists."""
    if explicit:
        return Path(explicit)
    candidates = []
    config_file = config_file or os.environ.get("RIGTEL_CONFIG")
    if config_file:
        candidates.append(Path(config_file).parent / "supervisord.conf")
    candidates.append(DEFAULT_SUPERVISOR_CONF)
    return next((c for c in candidates if c.is_file()), None)


@dataclass
class Supervisor:
    """supervisord's XML-RPC interface over its unix socket, as supervisorctl uses it."""

    conf: Path
    programs: list[str]  # the [program:x] sections that use the database
    serverurl: str | None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_conf(cls, conf: Path) -> "Supervisor":
        import configparser

        parser = configparser.RawConfigParser(strict=False)
        if not parser.read(conf):
            raise BackupError(f"cannot read {conf}; pass --supervisor-conf FILE")
        programs = [p for p in PROGRAMS_USING_DB if parser.has_section(f"program:{p}")]
        url = parser.get("supervisorctl", "serverurl", fallback=None)
        if url is None and parser.has_option("unix_http_server", "file"):
            url = "unix://" + parser.get("unix_http_server", "file")
        return cls(conf, programs, url, parser.get("supervisorctl", "username", fallback=None),
                   parser.get("supervisorctl", "password", fallback=None))

    def reachable(self) -> bool:
        """Whether supervisord answers on its unix socket (checked with a plain socket:
        a refused connection inside supervisor's transport leaks its socket)."""
        import socket

        if not self.serverurl or not self.serverurl.startswith("unix://"):
            return bool(self.serverurl)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            try:
                s.connect(self.serverurl[len("unix://"):])
            except OSError:
                return False
        return True

    def _call(self, method: str, *args):
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(self.username, self.password, self.serverurl)
        try:
            rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
            return getattr(rpc.supervisor, method)(*args)
        finally:
            transport.close()

    def running(self) -> list[str] | None:
        """Programs using the database that supervisord runs; None if it cannot be reached."""
        if not self.reachable():
            return None
        try:
            infos = self._call("getAllProcessInfo")
        except (OSError, xmlrpc.client.Error):
            return None
        return [i["name"] for i in infos if i["name"] in self.programs
                and i["statename"] in ("RUNNING", "STARTING", "BACKOFF")]

    def stop(self, names: list[str]) -> None:
        for name in names:
            self._call("stopProcess", name, True)

    def start(self, names: list[str]) -> None:
        for name in names:
            self._call("startProcess", name, True)

    def command(self, verb: str, names: list[str] | None = None) -> str:
        return f"supervisorctl -c {self.conf} {verb} {' '.join(names or self.programs)}"




# -- the command --------------------------------------------------------------------


def main(argv) -> int:
    """`rigtel restore FILE`: check the backup, keep a safety copy, put it in place."""
    from appliance.cli import load_settings, settings_parser

    parser = settings_parser("restore", "Replace the database with a backup. The backup is "
                                               "checked first and the current database kept as "
                                               "DATABASE.before-restore-TIME.")
    parser.add_argument("file", metavar="FILE", help="backup file, or its name in backup_dir")
    parser.add_argument("--supervisor-conf", metavar="FILE",
                        help="supervisord.conf, to ask which programs run (default: beside the "
                             "settings file, else /etc/rigtel/supervisord.conf)")
    parser.add_argument("--restart-programs", action="store_true",
                        help="stop the saver, maintenance and web through supervisord, restore, "
                             "then start them again")
    parser.add_argument("--force", action="store_true",
                        help="go ahead although supervisord reports the programs running (the "
                             "database itself is still checked for a writer)")
    args = parser.parse_args(argv)
    cfg = load_settings(args)
    backup = Path(args.file)
    if not backup.exists() and (default_folder(cfg) / args.file).exists():
        backup = default_folder(cfg) / args.file
    if not backup.is_file():
        print(f"{RESTORE_COMMAND}: {args.file}: no such file (nor in {default_folder(cfg)}); "
              f"`{LIST_COMMAND}` lists the backups.", file=sys.stderr)
        return 1
    conf = find_supervisor_conf(args.supervisor_conf, args.config)
    try:
        sup = Supervisor.from_conf(conf) if conf else None
    except BackupError as e:
        print(f"{RESTORE_COMMAND}: {e}", file=sys.stderr)
        return 1
    running = sup.running() if sup else None
    stopped: list[str] = []
    if args.restart_programs:
        if running is None:
            print(f"{RESTORE_COMMAND}: --restart-programs needs supervisord, which cannot be reached "
                  f"({conf or 'no supervisord.conf found; pass --supervisor-conf FILE'}).", file=sys.stderr)
            return 1
        print(f"stopping {', '.join(running) or 'nothing (none running)'} ...", flush=True)
        try:
            sup.stop(running)
        except (OSError, xmlrpc.client.Error) as e:
            print(f"{RESTORE_COMMAND}: supervisord could not stop them ({e}); nothing was restored. "
                  f"Check with: {sup.command('status', running)}", file=sys.stderr)
            return 1
        stopped = running
    elif running and not args.force:
        print(f"{RESTORE_COMMAND}: {', '.join(running)} running under supervisord and using the "
              f"database. Stop them, restore, then start them:\n"
              f"  {sup.command('stop')}\n  {RESTORE_COMMAND} {args.file}\n  {sup.command('start')}\n"
              f"or let this command do it: {RESTORE_COMMAND} --restart-programs {args.file}", file=sys.stderr)
        return 1
    try:
        print(f"checking {backup} (integrity_check) ...", flush=True)
        result = restore(backup, cfg.database_path)
    except BackupError as e:
        print(f"{RESTORE_COMMAND}: {e}", file=sys.stderr)
        if isinstance(e, DatabaseInUse) and sup is None:
            print(f"  under supervisord: supervisorctl -c {DEFAULT_SUPERVISOR_CONF} stop "
                  f"{' '.join(PROGRAMS_USING_DB)}", file=sys.stderr)
        return 1
    finally:
        if stopped:
            print(f"starting {', '.join(stopped)} ...", flush=True)
            try:
                sup.start(stopped)
            except (OSError, xmlrpc.client.Error) as e:
                print(f"{RESTORE_COMMAND}: supervisord could not start them ({e}); start them with: "
                      f"{sup.command('start', stopped)}", file=sys.stderr)
    print(f"restored {backup}\n  into {result.database}")
    if result.safety_copy:
        how = " (byte copy: the old database was unreadable)" if result.safety_copy_raw else ""
        print(f"  the database as it was is kept as {result.safety_copy}{how}")
    if not stopped:
        start = sup.command("start") if sup else \
            f"supervisorctl -c {DEFAULT_SUPERVISOR_CONF} start {' '.join(PROGRAMS_USING_DB)}"
        print(f"next: start the programs that use the database:\n  {start}")
    return 0

