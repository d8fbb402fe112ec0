"""The database: one SQLite file in WAL mode, one writer (the saver), many readers.

Samples live in a wide table, one row per timestamp and one REAL column per channel,
with the time in epoch milliseconds as the rowid. Measured on this 2-core machine with
20-channel frames, it ingests ~160-210k frames/s in batches of 1,000 at 9.8 bytes per
value, where a narrow (channel, time, value) table managed ~22k frames/s at ~27 bytes
per value; single-channel range reads are equally fast (a rowid range scan). Frames of
different sources or topics that share a millisecond merge into one row (an upsert,
measured at the same speed as a plain insert). Channel names map to columns through
the `channels` table, so a channel first seen at run time only costs an ALTER TABLE ADD
COLUMN, and no name from the bus is ever spliced into SQL.

Roll-ups (`rollup_1m`, `rollup_1h`) hold min/max/sum/count/last per channel and bucket,
maintained by the saver as data arrives, so long-range charts never scan raw rows.
`thresholds` keeps every alarm-limit change (the newest row per channel is in force).
`streams` records, in the same transaction as the data, the last sequence number
committed per (source, boot, topic); `gaps` the ranges that did not arrive live, each
pending (being fetched from the source's spool), recovered, or lost (appliance.store.recovery).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 2

MINUTE_MS = 60_000
HOUR_MS = 3_600_000

# resolution name -> (table, bucket width in ms); "raw" is the samples table itself. Finest
# first, each width a multiple of the one before: the saver folds each from the one before.
RESOLUTIONS: dict[str, tuple[str, int]] = {"1m": ("rollup_1m", MINUTE_MS), "1h": ("rollup_1h", HOUR_MS)}

DDL = """
CREATE TABLE IF NOT EXISTS samples (ts INTEGER PRIMARY KEY);

CREATE TABLE IF NOT EXISTS channels (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,      -- mnemonic, or TOPIC.KEY for custom topics
    topic       TEXT NOT NULL,
    unit        TEXT NOT NULL DEFAULT '',
    first_ts    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS rollup_1m (
    channel_id  INTEGER NOT NULL,
    bucket      INTEGER NOT NULL,          -- start of the minute, epoch ms
    min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
    last REAL NOT NULL, last_ts INTEGER NOT NULL,
    PRIMARY KEY (channel_id, bucket)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rollup_1h (
    channel_id  INTEGER NOT NULL,
    bucket      INTEGER NOT NULL,          -- start of the hour, epoch ms
    min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
    last REAL NOT NULL, last_ts INTEGER NOT NULL,
    PRIMARY KEY (channel_id, bucket)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS events (       -- non-numeric payloads of custom topics
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    src         TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    data        TEXT NOT NULL              -- JSON
);
CREATE INDEX IF NOT EXISTS events_topic_ts ON events (topic, ts);

CREATE TABLE IF NOT EXISTS alerts (       -- alarm lifecycle events from the `alert` topic
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    src         TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    alert_id    TEXT,
    kind        TEXT,
    state       TEXT,
    priority    TEXT,
    data        TEXT NOT NULL              -- the whole event, JSON
);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts);
CREATE INDEX IF NOT EXISTS alerts_alert_id ON alerts (alert_id, ts);

CREATE TABLE IF NOT EXISTS audit (        -- security events from the `audit` topic: logins, changes
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    src         TEXT NOT NULL,             -- the program that saw it, e.g. rig-1.web
    event       TEXT,                      -- login_failed, login_locked, admin_action, ...
    user        TEXT,
    client      TEXT,                      -- the client's address, as the TLS front saw it
    data        TEXT NOT NULL              -- the whole event, JSON; never a password
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);

CREATE TABLE IF NOT EXISTS thresholds (   -- alarm limit settings from `control.thresholds`; a history
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    src         TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    channel     TEXT NOT NULL,
    hh REAL, h REAL, l REAL, ll REAL,      -- null: limit not set
    deadband    REAL,
    priority    TEXT,
    by          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS thresholds_channel ON thresholds (channel, id);

CREATE TABLE IF NOT EXISTS dead_letters ( -- everything rejected, with the reason
    id          INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    src         TEXT,
    seq         INTEGER,
    reason      TEXT NOT NULL,
    size        INTEGER NOT NULL,          -- bytes received
    payload     BLOB NOT NULL              -- the message, or its first bytes
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_ms);

CREATE TABLE IF NOT EXISTS streams (      -- last committed message per source run and topic
    src         TEXT NOT NULL,
    boot        TEXT NOT NULL,
    topic       TEXT NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    messages    INTEGER NOT NULL,          -- distinct messages committed
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (src, boot, topic)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS gaps (         -- sequence ranges that did not arrive live
    id          INTEGER PRIMARY KEY,
    src         TEXT NOT NULL,
    boot        TEXT NOT NULL,
    topic       TEXT NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    detected_ms INTEGER NOT NULL,
    state       TEXT NOT NULL DEFAULT 'lost', -- pending (being fetched), recovered, lost
    resolved_ms INTEGER                    -- when it was recovered or given up
);
"""

# columns added since version 1, for databases made by an older saver
MIGRATIONS = (
    ("gaps", "state", "ALTER TABLE gaps ADD COLUMN state TEXT NOT NULL DEFAULT 'lost'"),
    ("gaps", "resolved_ms", "ALTER TABLE gaps ADD COLUMN resolved_ms INTEGER"),
)


def connect_writer(path: str | Path) -> sqlite3.Connection:
    """The one writing connection: creates the database and schema when needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
    if new:
        # must precede the first table; lets maintenance give pages back without a full VACUUM
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA foreign_keys = ON")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"{path} has schema version {version}, newer than this program's "
                           f"{SCHEMA_VERSION}: upgrade the appliance before using this database")
    db.executescript(DDL)
    for table, column, sql in MIGRATIONS:
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(sql)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return db


def connect_reader(path: str | Path) -> sqlite3.Connection:
    """A read-only connection for queries, exports and the dashboard."""
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                         check_same_thread=True)
    db.execute("PRAGMA busy_timeout = 10000")
    return db
