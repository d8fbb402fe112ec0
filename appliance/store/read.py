"""Reading history: channel lists and time series at a resolution fit for a chart.

`series()` picks the finest resolution whose point count for the window stays within
the budget (about 2,000 points per channel by default): raw samples, then 1-minute, then
1-hour roll-ups. A month of one channel is 720 hourly rows, never millions of raw ones.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from appliance.store.rollups import HOUR_MS, MINUTE_MS, RESOLUTIONS

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
    if not names:
        raise QueryError("name at least one channel")
    if end_ms <= start_ms:
        raise QueryError(f"the range is empty or inverted: from {start_ms} to {end_ms}")
    if not 1 <= max_points <= MAX_POINTS_LIMIT:
        raise QueryError(f"max_points must be 1..{MAX_POINTS_LIMIT}, not {max_points}")
    if resolution not in (None, "raw", *RESOLUTIONS):
        raise QueryError(f"resolution must be raw, {', '.join(RESOLUTIONS)} or left out")
    ids = _resolve(db, list(dict.fromkeys(names)))
    chosen = resolution or choose_resolution(db, list(ids.values()), start_ms, end_ms, max_points)
    out: dict[str, Any] = {}
    for name, cid in ids.items():
        if chosen == "raw":
            rows = db.execute(f"SELECT ts, c{cid} FROM samples WHERE ts >= ? AND ts < ? AND c{cid} IS NOT NULL "
                              f"ORDER BY ts LIMIT ?", (start_ms, end_ms, MAX_POINTS_LIMIT + 1)).fetchall()
            if len(rows) > MAX_POINTS_LIMIT:
                raise QueryError(f"{name} has more than {MAX_POINTS_LIMIT} raw samples in that range; "
                                 "ask for a coarser resolution or a shorter range")
            out[name] = {"ts": [r[0] for r in rows], "value": [r[1] for r in rows]}
        else:
            table, width = RESOLUTIONS[chosen]
            rows = db.execute(f"SELECT bucket, min, max, sum / count, last, count FROM {table} "
                              "WHERE channel_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
                              (cid, start_ms // width * width, end_ms)).fetchall()
            cols = list(zip(*rows)) if rows else [[], [], [], [], [], []]
            out[name] = dict(zip(("ts", "min", "max", "avg", "last", "count"), map(list, cols)))
    return {"resolution": chosen, "start_ms": start_ms, "end_ms": end_ms, "channels": out}
