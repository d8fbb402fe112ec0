"""Reading history: channel lists and time series at a resolution fit for a chart.

`series()` picks the finest resolution whose point count for the window stays within
the budget (about 2,000 points per channel by default): raw samples, then 1-minute, then
1-hour roll-ups. A month of one channel is 720 hourly rows, never millions of raw ones.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from appliance.store.schema import HOUR_MS, MINUTE_MS, RESOLUTIONS

DEFAULT_MAX_POINTS = 2000
MAX_POINTS_LIMIT = 100_000


class QueryError(ValueError):
    """A request that cannot be answered as asked; the message says what to change."""


@dataclass(frozen=True)
class ChannelInfo:
    id: int
    name: str
    topic: str
    unit: str
    first_ts: int


def channels(db: sqlite3.Connection) -> list[ChannelInfo]:
    return [ChannelInfo(*row) for row in db.execute(
        "SELECT id, name, topic, unit, first_ts FROM channels ORDER BY name")]


def _resolve(db: sqlite3.Connection, names: list[str]) -> dict[str, int]:
    found = dict(db.execute(
        f"SELECT name, id FROM channels WHERE name IN ({', '.join('?' * len(names))})", names).fetchall())
    unknown = [n for n in names if n not in found]
    if unknown:
        raise QueryError(f"unknown channel(s): {', '.join(unknown)}; /api/channels lists the stored ones")
    return found


# CROSS JOIN keeps channels the outer loop: left to the planner, it scanned the roll-ups
# (2.2 s for 200 channels over a week of minutes, against 0.85 ms)
LATEST_SQL = ("SELECT c.name, r.last_ts, r.last FROM channels c CROSS JOIN rollup_1m r ON r.channel_id = c.id "
              "AND r.bucket = (SELECT max(bucket) FROM rollup_1m WHERE channel_id = c.id)")


def latest(db: sqlite3.Connection, names: list[str] | None = None) -> dict[str, tuple[int, float]]:
    """The newest stored value of each channel (of `names`, else of all): {name: (ts, value)}.

    From the 1-minute roll-ups' `last`, one index seek per channel, never a scan of `samples`
    (where a sparse custom channel's newest value can sit under millions of rows). Roll-ups
    are never pruned, so a channel that stopped long ago still has its value. Unknown names
    are left out."""
    where = ""
    if names is not None:
        if not names:
            return {}
        where = f" WHERE c.name IN ({', '.join('?' * len(names))})"
    rows = db.execute(LATEST_SQL + where, names or ()).fetchall()
    return {name: (ts, value) for name, ts, value in rows}


def raw_count(db: sqlite3.Connection, channel_id: int, start_ms: int, end_ms: int) -> int:
    """How many raw samples a channel has in [start, end), from the roll-ups (cheap)."""
    hour_lo = -(-start_ms // HOUR_MS) * HOUR_MS  # whole hours inside the window
    hour_hi = end_ms // HOUR_MS * HOUR_MS
    if hour_lo >= hour_hi:
        (n,) = db.execute("SELECT coalesce(sum(count), 0) FROM rollup_1m WHERE channel_id = ? "
                          "AND bucket >= ? AND bucket < ?",
                          (channel_id, start_ms // MINUTE_MS * MINUTE_MS, end_ms)).fetchone()
        return n
    (mid,) = db.execute("SELECT coalesce(sum(count), 0) FROM rollup_1h WHERE channel_id = ? "
                        "AND bucket >= ? AND bucket < ?", (channel_id, hour_lo, hour_hi)).fetchone()
    (edges,) = db.execute("SELECT coalesce(sum(count), 0) FROM rollup_1m WHERE channel_id = ? AND "
                          "((bucket >= ? AND bucket < ?) OR (bucket >= ? AND bucket < ?))",
                          (channel_id, start_ms // MINUTE_MS * MINUTE_MS, hour_lo, hour_hi, end_ms)).fetchone()
    return mid + edges


def choose_resolution(db: sqlite3.Connection, ids: list[int], start_ms: int, end_ms: int,
                      max_points: int) -> str:
    if max(raw_count(db, cid, start_ms, end_ms) for cid in ids) <= max_points:
        return "raw"
    for name, (_, width) in RESOLUTIONS.items():
        if (end_ms - start_ms) / width <= max_points:
            return name
    return list(RESOLUTIONS)[-1]


def series(db: sqlite3.Connection, names: list[str], start_ms: int, end_ms: int,
           max_points: int = DEFAULT_MAX_POINTS, resolution: str | None = None) -> dict[str, Any]:
    """Values of `names` in [start_ms, end_ms).

    Returns {"resolution": "raw" | "1m" | "1h", "start_ms", "end_ms", "channels": {name: ...}}
    where a raw channel is {"ts": [...], "value": [...]} and a rolled-up one is
    {"ts": bucket starts, "min", "max", "avg", "last", "count": [...]}.
    """
    chosen, ids = _plan(db, names, start_ms, end_ms, max_points, resolution)
    return {"resolution": chosen, "start_ms": start_ms, "end_ms": end_ms,
            "channels": {name: _channel(db, name, cid, chosen, start_ms, end_ms) for name, cid in ids.items()}}


def series_json(db: sqlite3.Connection, names: list[str], start_ms: int, end_ms: int,
                max_points: int = DEFAULT_MAX_POINTS, resolution: str | None = None) -> list[bytes]:
    """`orjson.dumps(series(...))`, the same bytes, in pieces of one channel each.

    Only one channel's values are Python objects at a time: the live page asks for up to
    20,000 points of each of ~27 channels, over a million ints and floats at once, and the
    memory they took stayed with the web program afterwards (+33 MiB after three such
    requests, with malloc_threshold_kb; +69 MiB without). Errors are raised before any piece."""
    chosen, ids = _plan(db, names, start_ms, end_ms, max_points, resolution)
    parts = [b'{"resolution":' + orjson.dumps(chosen) + b',"start_ms":' + orjson.dumps(start_ms)
             + b',"end_ms":' + orjson.dumps(end_ms) + b',"channels":{']
    for i, (name, cid) in enumerate(ids.items()):
        parts.append((b"," if i else b"") + orjson.dumps(name) + b":"
                     + orjson.dumps(_channel(db, name, cid, chosen, start_ms, end_ms)))
    parts.append(b"}}")
    return parts


def _plan(db: sqlite3.Connection, names: list[str], start_ms: int, end_ms: int, max_points: int,
          resolution: str | None) -> tuple[str, dict[str, int]]:
    """The resolution to answer at and the channels' ids; QueryError for a request that
    cannot be answered as asked."""
    if not names:
        raise QueryError("name at least one channel")
    if end_ms <= start_ms:
        raise QueryError(f"the range is empty or inverted: from {start_ms} to {end_ms}")
    if not 1 <= max_points <= MAX_POINTS_LIMIT:
        raise QueryError(f"max_points must be 1..{MAX_POINTS_LIMIT}, not {max_points}")
    if resolution not in (None, "raw", *RESOLUTIONS):
        raise QueryError(f"resolution must be raw, {', '.join(RESOLUTIONS)} or left out")
    ids = _resolve(db, list(dict.fromkeys(names)))
    return resolution or choose_resolution(db, list(ids.values()), start_ms, end_ms, max_points), ids


def _channel(db: sqlite3.Connection, name: str, cid: int, chosen: str, start_ms: int,
             end_ms: int) -> dict[str, list]:
    if chosen == "raw":
        rows = db.execute(f"SELECT ts, c{cid} FROM samples WHERE ts >= ? AND ts < ? AND c{cid} IS NOT NULL "
                          f"ORDER BY ts LIMIT ?", (start_ms, end_ms, MAX_POINTS_LIMIT + 1)).fetchall()
        if len(rows) > MAX_POINTS_LIMIT:
            raise QueryError(f"{name} has more than {MAX_POINTS_LIMIT} raw samples in that range; "
                             "ask for a coarser resolution or a shorter range")
        return {"ts": [r[0] for r in rows], "value": [r[1] for r in rows]}
    table, width = RESOLUTIONS[chosen]
    rows = db.execute(f"SELECT bucket, min, max, sum / count, last, count FROM {table} "
                      "WHERE channel_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
                      (cid, start_ms // width * width, end_ms)).fetchall()
    cols = list(zip(*rows)) if rows else [[], [], [], [], [], []]
    return dict(zip(("ts", "min", "max", "avg", "last", "count"), map(list, cols)))


def iter_rows(db: sqlite3.Connection, names: list[str], start_ms: int, end_ms: int,
              chunk_ms: int = 3_600_000, known_only: bool = False):
    """(ts, [value or None per name]) for every raw row in [start, end) with any of `names`.

    Read in time chunks, so a month streams in constant memory. Unknown names raise
    QueryError, or are left out with known_only.
    """
    if known_only:
        present = {n for (n,) in db.execute(
            f"SELECT name FROM channels WHERE name IN ({', '.join('?' * len(names))})", names)}
        names = [n for n in names if n in present]
        if not names:
            return
    ids = _resolve(db, names)
    cols = [f"c{ids[n]}" for n in names]
    select = (f"SELECT ts, {', '.join(cols)} FROM samples WHERE ts >= ? AND ts < ? AND "
              f"({' OR '.join(c + ' IS NOT NULL' for c in cols)}) ORDER BY ts")
    t = start_ms
    while t < end_ms:
        # jump over empty stretches instead of stepping through them hour by hour
        (first,) = db.execute("SELECT min(ts) FROM samples WHERE ts >= ? AND ts < ?", (t, end_ms)).fetchone()
        if first is None:
            return
        t = first
        upper = min(end_ms, t + chunk_ms)
        for row in db.execute(select, (t, upper)):
            yield row[0], list(row[1:])
        t = upper


ACTIVE_STATES = ("active_unack", "active_ack", "cleared_unack")


def _alert_rows(rows) -> list[dict[str, Any]]:
    out = []
    for ts, src, state, data in rows:
        event = orjson.loads(data)
        event.update(ts=ts, src=src, state=state)
        out.append(event)
    return out


def active_alerts(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """The latest event of every alert that is active or still unacknowledged, newest first."""
    return _alert_rows(db.execute(
        "SELECT a.ts, a.src, a.state, a.data FROM alerts a JOIN "
        "(SELECT alert_id, max(id) AS id FROM alerts WHERE alert_id IS NOT NULL GROUP BY alert_id) m "
        f"ON a.id = m.id WHERE a.state IN ({', '.join('?' * len(ACTIVE_STATES))}) ORDER BY a.ts DESC",
        ACTIVE_STATES))


def alert_history(db: sqlite3.Connection, start_ms: int, end_ms: int, limit: int,
                  kind: str | None = None) -> list[dict[str, Any]]:
    """Alert lifecycle events in [start, end), newest first, optionally of one kind."""
    if end_ms <= start_ms:
        raise QueryError(f"the range is empty or inverted: from {start_ms} to {end_ms}")
    sql = "SELECT ts, src, state, data FROM alerts WHERE ts >= ? AND ts < ?"
    args: list[Any] = [start_ms, end_ms]
    if kind:
        sql += " AND kind = ?"
        args.append(kind)
    return _alert_rows(db.execute(sql + " ORDER BY ts DESC, id DESC LIMIT ?", (*args, limit)))


def alert_state(db: sqlite3.Connection, alert_id: str) -> dict[str, Any] | None:
    rows = _alert_rows(db.execute("SELECT ts, src, state, data FROM alerts WHERE alert_id = ? "
                                  "ORDER BY id DESC LIMIT 1", (alert_id,)))
    return rows[0] if rows else None


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


THRESHOLD_COLUMNS = ("channel", "hh", "h", "l", "ll", "deadband", "priority", "by", "ts", "src")


def current_thresholds(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """The alarm limits in force: the newest setting of every channel that ever had one,
    {channel: {"channel", "hh", "h", "l", "ll", "deadband", "priority", "by", "ts", "src"}}.
    A channel whose newest setting has every limit null was cleared and is still listed,
    so a reader knows the operator switched its limits off."""
    if not _has_table(db, "thresholds"):  # a database older than the table, before the saver upgraded it
        return {}
    rows = db.execute(
        f"SELECT {', '.join('t.' + c for c in THRESHOLD_COLUMNS)} FROM thresholds t JOIN "
        "(SELECT channel, max(id) AS id FROM thresholds GROUP BY channel) m ON t.id = m.id ORDER BY t.channel")
    return {row[0]: dict(zip(THRESHOLD_COLUMNS, row)) for row in rows}


def threshold_history(db: sqlite3.Connection, channel: str, limit: int = 50) -> list[dict[str, Any]]:
    """A channel's threshold changes, newest first."""
    if not _has_table(db, "thresholds"):
        return []
    return [dict(zip(THRESHOLD_COLUMNS, row)) for row in db.execute(
        f"SELECT {', '.join(THRESHOLD_COLUMNS)} FROM thresholds WHERE channel = ? ORDER BY id DESC LIMIT ?",
        (channel, limit))]


def latest_alerts_of(db: sqlite3.Connection, src: str) -> list[dict[str, Any]]:
    """The latest event of every alert whose newest event came from `src` (a program's own
    alarms, for it to take over after a restart); acks and shelves by others count too."""
    return _alert_rows(db.execute(
        "SELECT a.ts, a.src, a.state, a.data FROM alerts a JOIN "
        "(SELECT alert_id, max(id) AS id FROM alerts WHERE alert_id IN "
        " (SELECT DISTINCT alert_id FROM alerts WHERE src = ?) GROUP BY alert_id) m ON a.id = m.id",
        (src,)))


def storage_stats(db: sqlite3.Connection) -> dict[str, Any]:
    """Counts for the System view: channels, time span, dead letters, gaps."""
    first, last = db.execute("SELECT min(ts), max(ts) FROM samples").fetchone()
    return {
        "channels": db.execute("SELECT count(*) FROM channels").fetchone()[0],
        "first_ts": first, "last_ts": last,
        "dead_letters": db.execute("SELECT count(*) FROM dead_letters").fetchone()[0],
        "gaps": db.execute("SELECT count(*), coalesce(sum(last_seq - first_seq + 1), 0) FROM gaps "
                           "WHERE state = 'lost'").fetchone(),
    }


def audit_events(db: sqlite3.Connection, start_ms: int, end_ms: int, limit: int,
                 event: str | None = None) -> list[dict[str, Any]]:
    """Audit events (logins refused, changes, refused bus keys) in [start, end), newest first."""
    if end_ms <= start_ms:
        raise QueryError(f"the range is empty or inverted: from {start_ms} to {end_ms}")
    sql = "SELECT ts, src, data FROM audit WHERE ts >= ? AND ts < ?"
    args: list[Any] = [start_ms, end_ms]
    if event:
        sql += " AND event = ?"
        args.append(event)
    try:
        rows = db.execute(sql + " ORDER BY ts DESC, id DESC LIMIT ?", (*args, limit)).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []  # a database the saver has not opened since the audit table came
        raise
    return [{"ts": ts, "src": src, **orjson.loads(data)} for ts, src, data in rows]
