"""Rig data benchmark: WITS0 parse rate, and export rows/s and memory.

- WITS0: lines per CPU-second through the real parser and the site mapping (framing, code lookup, unit
  conversion, plausibility check) on one core, fed in 64 KB reads as from a socket; the
  baseline is the least any parser must do in Python (split lines, float the value), in the
  same run. Target: >= 100k lines/s.
- Export: rows/s of `rigtel export`'s path (read-only SQLite in hourly chunks -> writer ->
  a file) for CSV, LAS and WITSML, 20 channels at 1 Hz; the baseline is one plain SELECT of
  the same rows written with csv.writer. And the export's peak Python memory for a quarter of
  the rows and for all of them: constant memory means the two are about equal.
"""

from __future__ import annotations

import csv
import os
import random
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from appliance.bus.envelope import Envelope, Frame
from appliance.channels import CATALOGUE
from appliance.sources.wits0 import Wits0Parser, decode_frame, load_site_map
from appliance.store import export
from appliance.store.schema import connect_reader
from appliance.store.writer import Batch, Writer

NAME = "data"
DESCRIPTION = "WITS0 parse rate (lines/s, one core) and export rows/s for CSV, LAS and WITSML"
REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
CHANNELS = list(CATALOGUE)[:20]


def stats(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def wits0_stream(frames: int) -> tuple[bytes, int]:
    """Record 01 frames as a recorder sends them: && / 22 items / !!, CR LF."""
    rng = random.Random(3)
    out = []
    lines = 0
    for _ in range(frames):
        out.append("&&\r\n")
        for ch in CATALOGUE:
            out.append(f"{ch.wits}{rng.uniform(ch.low, ch.high) if ch.high < 1e4 else rng.uniform(0, 9000):.2f}\r\n")
        out.append("!!\r\n")
        lines += len(CATALOGUE) + 2
    return "".join(out).encode("ascii"), lines


def parse_appliance(data: bytes, site) -> tuple[float, int]:
    """CPU seconds (this thread's) to parse and map `data`, and the values decoded."""
    p = Wits0Parser()
    values = 0
    t = time.thread_time()
    for i in range(0, len(data), 65536):
        frames, bad = p.feed(data[i:i + 65536])
        for f in frames:
            values += len(decode_frame(f, site).values)
    frames, _ = p.end()
    for f in frames:
        values += len(decode_frame(f, site).values)
    return time.thread_time() - t, values


def parse_baseline(data: bytes) -> float:
    t = time.thread_time()
    n = 0
    for line in data.split(b"\r\n"):
        if len(line) > 4 and line[:4].isdigit():
            float(line[4:])
            n += 1
    return time.thread_time() - t


def build_db(path: Path, rows: int) -> None:
    rng = random.Random(5)
    w = Writer(path)
    seq = 0
    for start in range(0, rows, 3600):
        seq += 1
        frames = tuple(Frame(T0 + (start + s) * 1000, {c.mnemonic: round(rng.uniform(0, 100), 3) for c in CHANNELS})
                       for s in range(min(3600, rows - start)))
        w.commit(Batch([Envelope("drilling", "bench", "b", seq, T0, frames, 1)]))
    w.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    w.close()


def export_once(db: Path, fmt: str, rows: int, target: Path) -> float:
    t = time.perf_counter()
    with open(target, "w", encoding="utf-8", newline="") as out:
        n, _ = export.export(str(db), out, fmt, [c.mnemonic for c in CHANNELS], T0, T0 + rows * 1000)
    assert n == rows, (n, rows)
    return time.perf_counter() - t


def export_baseline(db: Path, rows: int, target: Path) -> float:
    t = time.perf_counter()
    conn = connect_reader(db)
    ids = dict(conn.execute("SELECT name, id FROM channels").fetchall())
    cols = ", ".join(f"c{ids[c.mnemonic]}" for c in CHANNELS)
    with open(target, "w", encoding="utf-8", newline="") as out:
        w = csv.writer(out)
        for row in conn.execute(f"SELECT ts, {cols} FROM samples WHERE ts >= ? AND ts < ? ORDER BY ts",
                                (T0, T0 + rows * 1000)):
            w.writerow(row)
    conn.close()
    return time.perf_counter() - t


def export_peak_mb(db: Path, rows: int, target: Path) -> float:
    tracemalloc.start()
    try:
        with open(target, "w", encoding="utf-8", newline="") as out:
            export.export(str(db), out, "csv", [c.mnemonic for c in CHANNELS], T0, T0 + rows * 1000)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def run(opts) -> dict[str, Any]:
    say = opts.say
    rows: list[dict[str, Any]] = []
    site = load_site_map(str(REPO / "etc/wits0-map.txt"))
    data, lines = wits0_stream(5_000 if opts.quick else 25_000)
    app, base, wall = [], [], []
    for r in range(opts.runs):
        t0 = time.perf_counter()
        seconds, values = parse_appliance(data, site)
        wall.append(lines / (time.perf_counter() - t0))
        app.append(lines / seconds)
        base.append(lines / parse_baseline(data))
        say(f"  WITS0 run {r + 1}: {app[-1]:,.0f} lines per CPU-second (baseline {base[-1]:,.0f}; "
            f"wall clock {wall[-1]:,.0f}/s); {values:,} values")
    rows.append({"metric": "WITS0 parse + map, one core", "unit": "lines/s", "appliance": stats(app),
                 "baseline": stats(base), "target": {"on": "value", "op": ">=", "limit": 100_000},
                 "note": f"{lines:,} lines of record-01 frames (22 items) in 64 KB reads: framing, mapping, "
                         "unit conversion, range check; per second of this thread's CPU time (the machine "
                         f"is shared: wall-clock median {statistics.median(wall):,.0f}/s); baseline: split "
                         "lines and float the value, nothing else"})

    n = 20_000 if opts.quick else 200_000
    with tempfile.TemporaryDirectory(prefix="rigtel-bench-data-") as d:
        tmp = Path(d)
        db = tmp / "rigtel.db"
        say(f"  building {n:,} rows x 20 channels ...")
        build_db(db, n)
        base = [n / export_baseline(db, n, tmp / "base.csv") for _ in range(opts.runs)]
        for fmt in ("csv", "las", "witsml"):
            app = []
            for r in range(opts.runs):
                app.append(n / export_once(db, fmt, n, tmp / f"out.{fmt}"))
                say(f"  export {fmt} run {r + 1}: {app[-1]:,.0f} rows/s")
            size = os.path.getsize(tmp / f"out.{fmt}")
            rows.append({"metric": f"export {fmt}, 20 channels", "unit": "rows/s", "appliance": stats(app),
                         "baseline": stats(base),
                         "note": f"{n:,} rows, {size / 1e6:.0f} MB; baseline: one SELECT of the same rows "
                                 "through csv.writer"})
        quarter = export_peak_mb(db, n // 4, tmp / "q.csv")
        full = export_peak_mb(db, n, tmp / "f.csv")
        rows.append({"metric": "export peak Python memory, all rows vs a quarter", "unit": "MB",
                     "appliance": stats([full]), "baseline": stats([quarter]),
                     "target": {"on": "ratio", "op": "<=", "limit": 1.5},
                     "note": f"tracemalloc peak exporting {n:,} rows vs {n // 4:,}: constant memory keeps "
                             "the ratio near 1"})
    return {"rows": rows, "raw": {}}
