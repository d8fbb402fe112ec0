"""The single writer: turns accepted bus messages into rows, one transaction per batch.

Everything a batch produces (samples, roll-ups, events, alerts, dead letters, stream
positions and gaps) is written in one `BEGIN IMMEDIATE` transaction, so after a crash
the database and the recorded sequence numbers always agree: whatever is committed is
complete, and whatever was lost is exactly the messages after each stream's `last_seq`.
This module holds every INSERT and UPDATE of the appliance's data.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections import defaultdict
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import orjson

from appliance.bus.envelope import Envelope, Frame
from appliance.bus.sequence import Gap
from appliance.bus.subscriber import Reject
from appliance.channels import BY_MNEMONIC, check_value
from appliance.store import thresholds
from appliance.store import rollups
from appliance.store.recovery import PENDING, GapRecord
from appliance.store.schema import connect_writer

# Topics whose frames are channel values by mnemonic (catalogue-checked); any other
# topic's numeric keys are stored as channels named TOPIC.KEY.
CHANNEL_TOPICS = ("drilling", "derived")
ALERT_TOPIC = "alert"
AUDIT_TOPIC = "audit"
# Sources publish input they could not use (a garbled WITS0 line, a bad row of a replayed
# file) on this topic, one frame {"reason", "input"} per item; each becomes a dead letter
# under the source's id, so bad input at the edge is kept like bad messages on the bus.
REJECT_TOPIC = "reject"
THRESHOLD_TOPIC = thresholds.TOPIC
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/%-]{0,127}$")
# SQLite allows 2,000 columns in a table; values of channels beyond this are dead-lettered
MAX_CHANNELS = 1900
KEEP_PAYLOAD_BYTES = 4096


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Batch:
    """What the saver collected since its last commit."""

    envelopes: list[Envelope] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    gaps: list[Gap | GapRecord] = field(default_factory=list)  # Gap: lost; GapRecord: its state
    # (received_ms, topic, src, seq, reason, size, payload) for messages refused after
    # decoding, such as duplicates
    refused: list[tuple] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.envelopes) + len(self.rejects) + len(self.gaps) + len(self.refused)


@dataclass(frozen=True)
class Plan:
    names: tuple[str, ...]  # channel names, in the frames' key order
    columns: tuple[str, ...]  # their columns in `samples` (empty when a name is invalid)
    valid: bool
    low: tuple[float, ...]  # plausible range per channel; +-inf for channels outside the catalogue
    high: tuple[float, ...]


@dataclass
class CommitStats:
    messages: int = 0
    frames: int = 0
    values: int = 0
    events: int = 0
    alerts: int = 0
    thresholds: int = 0
    dead_letters: int = 0
    gaps: int = 0
    new_channels: int = 0


def is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


class Writer:
    """Owns the writing connection. Not thread-safe: one thread, one Writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db: sqlite3.Connection = connect_writer(self.path)
        self.columns: dict[str, str] = {}  # channel name -> column in `samples`
        self.channel_ids: dict[str, int] = {}
        for cid, name in self.db.execute("SELECT id, name FROM channels"):
            self.columns[name] = f"c{cid}"
            self.channel_ids[name] = cid
        self._upserts: dict[tuple[str, ...], str] = {}
        self._plans: dict[tuple[str, tuple[str, ...]], Plan] = {}
        self.column_max: dict[str, int] = {}  # column -> newest ts stored in it (from the roll-ups)
        self.totals = CommitStats()

    def close(self) -> None:
        self.db.close()

    # -- reading back what was committed, for restarts ------------------------------------

    def stream_positions(self) -> list[tuple[str, str, str, int, int]]:
        """(src, boot, topic, last_seq, updated_ms) of every stream, oldest update first."""
        return self.db.execute(
            "SELECT src, boot, topic, last_seq, updated_ms FROM streams ORDER BY updated_ms").fetchall()

    # -- writing --------------------------------------------------------------------------

    def _channel(self, name: str, topic: str, ts: int) -> str:
        column = self.columns.get(name)
        if column is None:
            unit = BY_MNEMONIC[name].unit if name in BY_MNEMONIC else ""
            cid = self.db.execute("INSERT INTO channels (name, topic, unit, first_ts) VALUES (?, ?, ?, ?)",
                                  (name, topic, unit, ts)).lastrowid
            column = f"c{cid}"
            self.db.execute(f"ALTER TABLE samples ADD COLUMN {column} REAL")
            self.columns[name] = column
            self.channel_ids[name] = cid
            self._stats.new_channels += 1
        return column

    def _upsert_sql(self, columns: tuple[str, ...]) -> str:
        sql = self._upserts.get(columns)
        if sql is None:
            names = ", ".join(columns)
            marks = ", ".join("?" * (len(columns) + 1))
            sets = ", ".join(f"{c} = excluded.{c}" for c in columns)
            sql = (f"INSERT INTO samples (ts, {names}) VALUES ({marks}) "
                   f"ON CONFLICT (ts) DO UPDATE SET {sets}")
            self._upserts[columns] = sql
        return sql

    def _plan(self, topic: str, keys: tuple[str, ...], ts: int) -> Plan:
        """How frames of `topic` with exactly these keys are stored (cached per key set)."""
        plan = self._plans.get((topic, keys))
        if plan is None:
            channel_topic = topic in CHANNEL_TOPICS
            names = tuple(k if channel_topic else f"{topic}.{k}" for k in keys)
            new = sum(n not in self.columns for n in names)
            valid = all(CHANNEL_NAME.match(n) for n in names) and len(self.columns) + new <= MAX_CHANNELS
            columns = tuple(self._channel(n, topic, ts) for n in names) if valid else ()
            bounds = [(BY_MNEMONIC[n].low, BY_MNEMONIC[n].high) if n in BY_MNEMONIC else (-math.inf, math.inf)
                      for n in names]
            plan = Plan(names, columns, valid, tuple(float(b[0]) for b in bounds), tuple(float(b[1]) for b in bounds))
            self._plans[(topic, keys)] = plan
        return plan

    def commit(self, batch: Batch) -> CommitStats:
        """Write one batch in one transaction; returns what it wrote."""
        self._stats = stats = CommitStats()
        received = now_ms()
        dead: list[tuple] = [(r.received_ms, r.topic.decode("utf-8", "replace"), None, None,
                              r.reason, r.size, r.payload) for r in batch.rejects]
        dead.extend(batch.refused)
        rows_by_columns: dict[tuple[str, ...], list[tuple]] = defaultdict(list)
        # channel name -> chunks of timestamps and of values, for the roll-ups
        series: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        # frames of channel values, grouped by topic and key set so each group is checked
        # and written a channel at a time (C loops over lists) instead of value by value
        groups: dict[tuple[str, tuple[str, ...]], list[tuple[Envelope, Frame]]] = defaultdict(list)
        events: list[tuple] = []
        alerts: list[tuple] = []
        audits: list[tuple] = []
        limits: list[tuple] = []
        streams: dict[tuple[str, str, str], list[int]] = {}

        self.db.execute("BEGIN IMMEDIATE")
        try:
            for env in batch.envelopes:
                stats.messages += 1
                key = (env.src, env.boot, env.topic)
                span = streams.get(key)
                if span is None:
                    streams[key] = [env.seq, env.seq, 1]
                else:
                    span[0] = min(span[0], env.seq)
                    span[1] = max(span[1], env.seq)
                    span[2] += 1
                topic = env.topic
                stats.frames += len(env.frames)
                for frame in env.frames:
                    data = frame.data
                    if topic == REJECT_TOPIC:
                        dead.append(_source_reject(frame.ts, env, data))
                    elif topic == ALERT_TOPIC:
                        alerts.append((frame.ts, env.src, env.seq, _text(data.get("id")),
                                       _text(data.get("kind")), _text(data.get("state")),
                                       _text(data.get("priority")), orjson.dumps(data).decode()))
                    elif topic == AUDIT_TOPIC:
                        audits.append((frame.ts, env.src, _text(data.get("event")), _text(data.get("user")),
                                       _text(data.get("client")), orjson.dumps(data).decode()))
                    elif topic == THRESHOLD_TOPIC:
                        self._threshold(env, frame, received, limits, dead)
                    elif topic not in CHANNEL_TOPICS and not all(is_number(v) for v in data.values()):
                        events.append((frame.ts, topic, env.src, env.seq, orjson.dumps(data).decode()))
                    elif data:
                        groups[(topic, tuple(data))].append((env, frame))
                    else:
                        dead.append((received, topic, env.src, env.seq, "empty frame: no values", 0, b"{}"))

            for (topic, keys), items in groups.items():
                plan = self._plan(topic, keys, items[0][1].ts)
                values = [tuple(f.data.values()) for _, f in items]
                checked = self._checked(plan, values)
                if checked is None:  # something in this group is bad: sort it out value by value
                    for env, frame in items:
                        self._frame_slowly(env, frame, received, dead, rows_by_columns, series)
                    continue
                ts = [f.ts for _, f in items]
                # the checked floats, not the publisher's objects (an int may exceed 64 bits)
                rows_by_columns[plan.columns].extend(zip(ts, *checked))
                for name, column in zip(plan.names, checked):
                    ts_chunks, value_chunks = series[name]
                    ts_chunks.append(ts)
                    value_chunks.append(column)
                stats.values += len(ts) * len(checked)

            newest = self._newest_if_no_collision(rows_by_columns)
            if newest is None:
                # a channel met at a timestamp it already has: keep the first value, refuse the rest
                newest = self._newest(rows_by_columns)
                rows_by_columns, series = self._without_collisions(rows_by_columns, received, dead)
            for columns, rows in rows_by_columns.items():
                self.db.executemany(self._upsert_sql(columns), rows)
            self._write_rollups(series)
            if events:
                self.db.executemany("INSERT INTO events (ts, topic, src, seq, data) VALUES (?, ?, ?, ?, ?)", events)
            if alerts:
                self.db.executemany("INSERT INTO alerts (ts, src, seq, alert_id, kind, state, priority, data) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", alerts)
            if audits:
                self.db.executemany("INSERT INTO audit (ts, src, event, user, client, data) "
                                    "VALUES (?, ?, ?, ?, ?, ?)", audits)
            if limits:
                self.db.executemany("INSERT INTO thresholds (ts, src, seq, channel, hh, h, l, ll, deadband, "
                                    "priority, by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", limits)
            if dead:
                self.db.executemany("INSERT INTO dead_letters (received_ms, topic, src, seq, reason, size, payload) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?)", dead)
            new_ids = self._write_gaps(batch.gaps, received)
            self.db.executemany(
                "INSERT INTO streams (src, boot, topic, first_seq, last_seq, messages, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (src, boot, topic) DO UPDATE SET "
                "first_seq = min(streams.first_seq, excluded.first_seq), "
                "last_seq = max(streams.last_seq, excluded.last_seq), "
                "messages = streams.messages + excluded.messages, updated_ms = excluded.updated_ms",
                [(s, b, t, lo, hi, n, received) for (s, b, t), (lo, hi, n) in streams.items()])
            self.db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back by itself (a full disk, I/O errors): a ROLLBACK
            # then would fail and hide the real, retryable error
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._plans.clear()
            self.column_max.clear()
            # a rolled-back ALTER TABLE takes its column with it
            self.columns = {n: c for n, c in self.columns.items() if n in self.channel_ids and
                            self._column_exists(c)}
            self.channel_ids = {n: i for n, i in self.channel_ids.items() if n in self.columns}
            raise
        for record, row_id in new_ids:
            record.id = row_id
        for column, ts in newest.items():  # recovered, older frames must not lower it
            if ts > self.column_max.get(column, -1):
                self.column_max[column] = ts
        stats.events, stats.alerts, stats.thresholds = len(events), len(alerts), len(limits)
        stats.dead_letters, stats.gaps = len(dead), len(batch.gaps)
        for name in vars(stats):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(stats, name))
        return stats

    def _write_rollups(self, series: dict[str, tuple[list, list]]) -> None:
        """Fold each channel's (timestamps, values) chunks into the roll-up tables. Channels
        whose timestamps are the same chunks (the frames of one group) share their buckets."""
        merged: dict[str, list[tuple]] = {table: [] for table, _ in rollups.RESOLUTIONS.values()}
        finest_ms = next(iter(rollups.RESOLUTIONS.values()))[1]
        shared: dict[tuple[int, ...], rollups.Buckets] = {}
        for name, (ts_chunks, value_chunks) in series.items():
            key = tuple(map(id, ts_chunks))  # the chunks live until the commit ends
            where = shared.get(key)
            if where is None:
                ts = ts_chunks[0] if len(ts_chunks) == 1 else list(chain.from_iterable(ts_chunks))
                where = shared[key] = rollups.buckets(ts, finest_ms)
            values = value_chunks[0] if len(value_chunks) == 1 else list(chain.from_iterable(value_chunks))
            for table, aggregates in rollups.by_table(self.channel_ids[name], where, values):
                merged[table].extend(map(rollups.as_row, aggregates))
        for table, rows in merged.items():
            self.db.executemany(rollups.merge_sql(table), rows)

    def _write_gaps(self, gaps: list, received: int) -> list[tuple[GapRecord, int]]:
        """Insert, update or delete the gap rows; returns the new records' row ids, which
        the caller sets once the transaction has committed."""
        new_ids = []
        for g in gaps:
            if isinstance(g, Gap):  # a plain gap, recorded lost
                self.db.execute("INSERT INTO gaps (src, boot, topic, first_seq, last_seq, detected_ms, state, "
                                "resolved_ms) VALUES (?, ?, ?, ?, ?, ?, 'lost', ?)",
                                (g.src, g.boot, g.topic, g.first_missing, g.last_missing, received, received))
            elif g.id is None:
                if not g.empty:
                    new_ids.append((g, self.db.execute(
                        "INSERT INTO gaps (src, boot, topic, first_seq, last_seq, detected_ms, state, resolved_ms) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (g.src, g.boot, g.topic, g.first_seq, g.last_seq,
                                                            g.detected_ms, g.state, g.resolved_ms)).lastrowid))
            elif g.empty:  # a pending gap whose every message was fetched or given up
                self.db.execute("DELETE FROM gaps WHERE id = ?", (g.id,))
            else:
                self.db.execute("UPDATE gaps SET first_seq = ?, last_seq = ?, state = ?, resolved_ms = ? "
                                "WHERE id = ?", (g.first_seq, g.last_seq, g.state, g.resolved_ms, g.id))
        return new_ids

    def pending_gaps(self) -> list[GapRecord]:
        """The gaps whose messages were still being fetched when the saver last stopped."""
        return [GapRecord(src, boot, topic, first, last, detected, PENDING, id=row_id)
                for row_id, src, boot, topic, first, last, detected in self.db.execute(
                    "SELECT id, src, boot, topic, first_seq, last_seq, detected_ms FROM gaps "
                    "WHERE state = 'pending' ORDER BY id")]

    @staticmethod
    def _checked(plan: Plan, values: list[tuple]) -> list[Sequence[float]] | None:
        """The group's values as floats, one sequence per channel (the frames' order), or None
        if any value must be refused."""
        if not plan.valid:
            return None
        types = set(map(type, chain.from_iterable(values)))
        if types == {float}:
            columns: list = list(zip(*values))
        elif types <= {float, int}:
            try:
                columns = [list(map(float, column)) for column in zip(*values)]
            except OverflowError:  # an integer too large for a float
                return None
        else:
            return None  # strings, booleans, lists... among the values
        for column, low, high in zip(columns, plan.low, plan.high):
            # a sum is finite only if every term is (NaN and inf spread); min and max alone
            # would let a NaN through
            if not math.isfinite(sum(column)) and not all(map(math.isfinite, column)):
                return None
            if min(column) < low or max(column) > high:
                return None
        return columns

    def _threshold(self, env: Envelope, frame: Frame, received: int, limits: list, dead: list) -> None:
        """A threshold setting, checked again here: a bad one is dead-lettered, never stored."""
        derived = frozenset(n for n in self.columns if n not in BY_MNEMONIC)
        try:
            t = thresholds.check(frame.data, extra_channels=derived)
        except thresholds.ThresholdError as e:
            dead.append((received, env.topic, env.src, env.seq, f"threshold refused: {e}", 0,
                         orjson.dumps(frame.data, default=str)[:KEEP_PAYLOAD_BYTES]))
            return
        limits.append((frame.ts, env.src, env.seq, t.channel, t.hh, t.h, t.l, t.ll, t.deadband, t.priority, t.by))

    def _frame_slowly(self, env: Envelope, frame: Frame, received: int, dead: list,
                      rows_by_columns: dict, series: dict) -> None:
        """Store one frame value by value, dead-lettering each value that cannot be kept."""
        channel_topic = env.topic in CHANNEL_TOPICS
        columns: list[str] = []
        values: list[float] = []
        for k, v in frame.data.items():
            name = k if channel_topic else f"{env.topic}.{k}"
            reason = None if CHANNEL_NAME.match(name) else "bad channel name"
            reason = reason or check_value(name, v)
            if reason is None and name not in self.columns and len(self.columns) >= MAX_CHANNELS:
                reason = f"{name}: channel limit of {MAX_CHANNELS} reached; not stored"
            if reason is not None:
                dead.append((received, env.topic, env.src, env.seq, reason, 0,
                             orjson.dumps({"ts": frame.ts, k[:200]: v}, default=str)[:KEEP_PAYLOAD_BYTES]))
                continue
            columns.append(self._channel(name, env.topic, frame.ts))
            values.append(float(v))
            ts_chunks, value_chunks = series[name]
            ts_chunks.append([frame.ts])
            value_chunks.append([float(v)])
        if columns:
            self._stats.values += len(columns)
            rows_by_columns[tuple(columns)].append((frame.ts, *values))

    def _column_max(self, column: str) -> int:
        newest = self.column_max.get(column)
        if newest is None:
            (newest,) = self.db.execute("SELECT coalesce(max(last_ts), -1) FROM rollup_1h WHERE channel_id = ?",
                                        (int(column[1:]),)).fetchone()
            self.column_max[column] = newest
        return newest

    @staticmethod
    def _newest(rows_by_columns: dict) -> dict[str, int]:
        newest: dict[str, int] = {}
        for columns, rows in rows_by_columns.items():
            top = max(row[0] for row in rows)
            for c in columns:
                newest[c] = max(newest.get(c, -1), top)
        return newest

    def _newest_if_no_collision(self, rows_by_columns: dict) -> dict[str, int] | None:
        """Each column's newest ts in this batch, or None if a value may collide with one
        stored or with another in the batch. The usual case, a source moving forward in
        time, is settled per group of same-shaped frames without touching the database."""
        stamps_of: dict[str, list[int]] = defaultdict(list)  # column -> indices into groups
        groups = []
        for columns, rows in rows_by_columns.items():
            stamps = [row[0] for row in rows]
            groups.append((stamps, len(set(stamps)) == len(stamps), min(stamps), max(stamps)))
            for c in columns:
                stamps_of[c].append(len(groups) - 1)
        newest: dict[str, int] = {}
        for column, indices in stamps_of.items():
            if len(indices) == 1:
                stamps, unique, low, high = groups[indices[0]]
            else:  # the channel is in frames of several shapes: check them together
                stamps = [t for i in indices for t in groups[i][0]]
                unique, low, high = len(set(stamps)) == len(stamps), min(stamps), max(stamps)
            if not unique or low <= self._column_max(column):
                return None
            newest[column] = high
        return newest

    def _without_collisions(self, rows_by_columns: dict, received: int, dead: list) -> tuple[dict, dict]:
        """The rows minus every value whose channel already has one at that timestamp (stored,
        or earlier in this batch), which goes to the dead letters; and the roll-up series of
        what remains. Two sources sending one channel in the same millisecond, or a repeat
        under a new boot, must not silently replace what is stored."""
        names = {column: name for name, column in self.columns.items()}
        involved = sorted({c for columns in rows_by_columns for c in columns})
        stamps = sorted({row[0] for rows in rows_by_columns.values() for row in rows})
        taken: set[tuple[int, str]] = set()
        for i in range(0, len(stamps), 500):
            chunk = stamps[i:i + 500]
            for row in self.db.execute(f"SELECT ts, {', '.join(involved)} FROM samples "
                                       f"WHERE ts IN ({', '.join('?' * len(chunk))})", chunk):
                taken.update((row[0], c) for c, v in zip(involved, row[1:]) if v is not None)
        kept: dict[tuple[str, ...], list[tuple]] = defaultdict(list)
        series: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for columns, rows in rows_by_columns.items():
            for row in rows:
                ts, keep_columns, keep_values = row[0], [], []
                for column, value in zip(columns, row[1:]):
                    if (ts, column) in taken:
                        dead.append((received, "", None, None,
                                     f"{names[column]}: a value at ts {ts} is already stored; this one "
                                     f"({value:g}) was not", 0, b""))
                        self._stats.values -= 1
                        continue
                    taken.add((ts, column))
                    keep_columns.append(column)
                    keep_values.append(value)
                    ts_chunks, value_chunks = series[names[column]]
                    ts_chunks.append([ts])
                    value_chunks.append([value])
                if keep_columns:
                    kept[tuple(keep_columns)].append((ts, *keep_values))
        return kept, series

    def _column_exists(self, column: str) -> bool:
        return any(row[1] == column for row in self.db.execute("PRAGMA table_info(samples)"))


def _text(v: Any) -> str | None:
    return None if v is None else str(v)[:200]


def _source_reject(ts: int, env: Envelope, data: dict) -> tuple:
    """A dead-letter row for input a source refused: its reason, and the input itself."""
    raw = data.get("input", "")
    text = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
    try:
        payload = text.encode("latin-1")  # sources carry raw bytes as latin-1 text: the bytes come back
    except UnicodeEncodeError:
        payload = text.encode("utf-8")
    reason = _text(data.get("reason")) or "refused by the source (no reason given)"
    return (ts, REJECT_TOPIC, env.src, env.seq, reason, len(payload), payload[:KEEP_PAYLOAD_BYTES])
