"""Storage benchmark: the saver end to end, storage density, history queries, backups.

- Ingest: frames/s from a publisher through the real broker into the real saver, until
  every frame is committed (zero loss checked), with 1 and 100 frames per message, next to
  a raw `executemany` of the same rows into the same schema, measured in the same run.
- Bytes per stored value, after a checkpoint (target <= 11).
- History through the read API: 24 h x 20 channels at 1 Hz, and 30 days of one channel
  (targets <= 100 ms each).
- A backup while a writer commits every 100 ms: its duration and the writer's worst
  commit, next to the worst commit with no backup running.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from appliance.bus import Publisher
from appliance.bus.envelope import Envelope, Frame
from appliance.channels import CATALOGUE
from appliance.store import read
from appliance.store.backup import take_backup
from appliance.store.writer import Batch, Writer
from tests.conftest import start_broker, start_program

NAME = "storage"
DESCRIPTION = "saver ingest vs raw executemany, bytes per value, history queries, backup stall"
CHANNELS = [c for c in CATALOGUE][:20]
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000


def frame_values(rng: random.Random) -> dict[str, float]:
    return {c.mnemonic: round(rng.uniform(c.low, c.high) if c.high < 1e4 else rng.uniform(0, 9000), 3)
            for c in CHANNELS}


def stats(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def raw_executemany(path: Path, frames: list[tuple[int, dict]]) -> float:
    """Frames/s of a bare executemany of the same rows into the saver's schema."""
    w = Writer(path)  # creates the schema and the channel columns
    w.commit(Batch([Envelope("drilling", "s", "b", 1, frames[0][0], (Frame(*frames[0]),), 1)]))
    columns = [w.columns[c.mnemonic] for c in CHANNELS]
    sql = (f"INSERT INTO samples (ts, {', '.join(columns)}) VALUES ({', '.join('?' * (len(columns) + 1))}) "
           f"ON CONFLICT (ts) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)}")
    rows = [(ts, *d.values()) for ts, d in frames]
    started = time.perf_counter()
    for i in range(0, len(rows), 2000):  # batches like the saver's under load
        w.db.execute("BEGIN IMMEDIATE")
        w.db.executemany(sql, rows[i:i + 2000])
        w.db.execute("COMMIT")
    seconds = time.perf_counter() - started
    w.close()
    return len(rows) / seconds


def saver_ingest(tmp: Path, frames: list[tuple[int, dict]], per_message: int) -> tuple[float, int]:
    """Frames/s publisher -> broker -> saver until all are committed; and frames stored."""
    broker = start_broker(tmp)
    db = tmp / "saver.db"
    saver = start_program(["saver", *broker.port_args(), "--set", f"database_path={db}",
                           "--set", "log_level=WARNING"], tmp)
    try:
        cfg = broker.settings()
        with Publisher("bench", settings=cfg) as pub:
            # readiness: a probe committed by the saver
            deadline = time.monotonic() + 30
            while True:
                seq = pub.publish("probe", {"n": 1})
                if db.exists():
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                        try:
                            got = c.execute("SELECT max(last_seq) FROM streams WHERE topic = 'probe'").fetchone()[0]
                        except sqlite3.OperationalError:
                            got = None
                    if got and got >= 1 and seq - got < 50:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the saver never stored a probe")
                time.sleep(0.02)
            started = time.perf_counter()
            messages = 0
            for i in range(0, len(frames), per_message):
                chunk = frames[i:i + per_message]
                if per_message == 1:
                    pub.publish("drilling", chunk[0][1], ts=chunk[0][0])
                else:
                    pub.publish_batch("drilling", chunk)
                messages += 1
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                while True:
                    row = c.execute("SELECT last_seq, messages FROM streams WHERE topic = 'drilling'").fetchone()
                    if row and row[0] >= messages:
                        break
                    if time.perf_counter() - started > 300:
                        raise RuntimeError(f"the saver stalled at {row}")
                    time.sleep(0.01)
            seconds = time.perf_counter() - started
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                stored = c.execute("SELECT count(*) FROM samples WHERE ts >= ? AND ts < ?",
                                   (frames[0][0], frames[-1][0] + 1)).fetchone()[0]
    finally:
        saver.stop()
        broker.program.stop()
    return len(frames) / seconds, stored


def build_history(path: Path) -> int:
    """24 h x 20 channels at 1 Hz, then 30 days of one extra channel at 1 Hz.

    Returns the file size after the first part: the density of 20-channel frames.
    """
    rng = random.Random(7)
    w = Writer(path)
    seq = 0
    for start in range(0, 86_400, 3_600):
        seq += 1
        frames = tuple(Frame(T0 + (start + s) * 1000, frame_values(rng)) for s in range(3_600))
        w.commit(Batch([Envelope("drilling", "s", "b", seq, T0, frames, 1)]))
    w.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    for day in range(30):
        for hour in range(24):
            seq += 1
            base = T0 + (day * 86_400 + hour * 3_600) * 1000
            frames = tuple(Frame(base + s * 1000, {"GASLONG": rng.uniform(0, 5)}) for s in range(3_600))
            w.commit(Batch([Envelope("derived", "s", "b", seq, base, frames, 1)]))
    w.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    w.close()
    return size


def timed_query(path: Path, names: list[str], start: int, end: int, runs: int) -> tuple[list[float], str, int]:
    times, resolution, points = [], "", 0
    for _ in range(runs):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        started = time.perf_counter()
        result = read.series(db, names, start, end)
        times.append((time.perf_counter() - started) * 1000)
        db.close()
        resolution = result["resolution"]
        points = max(len(c["ts"]) for c in result["channels"].values())
    return times, resolution, points


def backup_stall(path: Path, tmp: Path) -> tuple[float, float, float]:
    """(backup seconds, worst writer commit ms during it, worst commit ms without it)."""
    w_path = path
    stop = threading.Event()
    worst: list[float] = [0.0]
    rng = random.Random(3)

    def writer() -> None:
        w = Writer(w_path)
        seq, ts = 10_000_000, T0 + 40 * 86_400_000
        while not stop.is_set():
            seq += 1
            frames = tuple(Frame(ts + i, frame_values(rng)) for i in range(10))
            ts += 10
            started = time.perf_counter()
            w.commit(Batch([Envelope("drilling", "s", "b2", seq, ts, frames, 1)]))
            worst[0] = max(worst[0], (time.perf_counter() - started) * 1000)
            stop.wait(0.1)
        w.close()

    t = threading.Thread(target=writer, name="bench-writer")
    t.start()
    time.sleep(3)  # a quiet window of commits, to compare against
    quiet = worst[0]
    worst[0] = 0.0
    started = time.perf_counter()
    take_backup(path, tmp / "backups")
    seconds = time.perf_counter() - started
    during = worst[0]
    stop.set()
    t.join()
    return seconds, during, quiet


def run(opts) -> dict[str, Any]:
    say = opts.say
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    n = 20_000 if opts.quick else 100_000
    rng = random.Random(1)
    frames = [(T0 + i * 10, frame_values(rng)) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="rigtel-bench-") as d:
        tmp = Path(d)
        for per_message in (1, 100):
            saver_runs, raw_runs, losses = [], [], []
            for r in range(opts.runs):
                run_dir = tmp / f"ingest-{per_message}-{r}"
                run_dir.mkdir()
                fps, stored = saver_ingest(run_dir, frames, per_message)
                saver_runs.append(fps)
                losses.append(n - stored)
                raw_runs.append(raw_executemany(run_dir / "raw.db", frames))
                say(f"  ingest, {per_message} frame(s)/message, run {r + 1}: saver {fps:,.0f} frames/s, "
                    f"raw {raw_runs[-1]:,.0f} frames/s, lost {n - stored}")
            rows.append({"metric": f"ingest, {per_message} frame(s)/message, zero loss", "unit": "frames/s",
                         "appliance": stats(saver_runs), "baseline": stats(raw_runs),
                         "target": {"on": "ratio", "op": ">=", "limit": 0.5},
                         "note": f"{n} 20-channel frames per run, publisher -> broker -> saver until committed; "
                                 f"baseline: executemany of the same rows into the same schema; "
                                 f"frames lost: {max(losses)}",
                         "error": max(losses) > 0})

        history = tmp / "history.db"
        say("  building 24 h x 20 channels and 30 days x 1 channel at 1 Hz ...")
        dense = build_history(history)
        values = 86_400 * 20
        size = history.stat().st_size
        rows.append({"metric": "bytes per stored value, 20-channel frames", "unit": "B",
                     "appliance": stats([dense / values]), "baseline": None,
                     "target": {"on": "value", "op": "<=", "limit": 11},
                     "note": f"{dense / 1e6:.1f} MB for 24 h x 20 channels at 1 Hz, roll-ups included; "
                             f"a channel alone in its rows costs more: the 30-day single-channel series "
                             f"added {(size - dense) / (30 * 86_400):.0f} B per value"})
        runs = max(opts.runs, 3)
        t, res, pts = timed_query(history, [c.mnemonic for c in CHANNELS], T0, T0 + 86_400_000, runs)
        rows.append({"metric": "history query, 24 h x 20 channels", "unit": "ms", "appliance": stats(t),
                     "baseline": None, "target": {"on": "value", "op": "<=", "limit": 100},
                     "note": f"resolution {res}, {pts} points per channel"})
        t, res, pts = timed_query(history, ["GASLONG"], T0, T0 + 30 * 86_400_000, runs)
        rows.append({"metric": "history query, 30 days x 1 channel", "unit": "ms", "appliance": stats(t),
                     "baseline": None, "target": {"on": "value", "op": "<=", "limit": 100},
                     "note": f"resolution {res}, {pts} points"})
        seconds, during, quiet = backup_stall(history, tmp)
        rows.append({"metric": "backup (VACUUM INTO), duration", "unit": "s", "appliance": stats([seconds]),
                     "baseline": None, "note": f"database {size / 1e6:.0f} MB"})
        rows.append({"metric": "worst writer commit during the backup", "unit": "ms",
                     "appliance": stats([during]), "baseline": stats([quiet]),
                     "note": "baseline: worst commit in 3 s of the same writer with no backup running"})
        raw["history_bytes"] = size
    return {"rows": rows, "raw": raw}
