"""`rigtel export`: stored channels over a time range as CSV, LAS 2.0 or WITSML 1.4.1.1.

    rigtel export --from 2026-11-28T00:00 --to 2026-11-29T00:00 --channels DMEA,HKLA,SPPA \\
                  --format las -o day.las

Rows are read from the database an hour at a time on a read-only connection and written
as they come (appliance.sources.writers), so a month of data takes the same memory as an
hour, and ingest goes on meanwhile. With `-o` the file appears complete or not at all (it
is written beside, then renamed); without it the log goes to stdout. On a terminal a
progress bar runs on stderr.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence, TextIO

from appliance.sources.events import parse_duration
from appliance.sources.files import parse_time
from appliance.sources.writers import EXTENSIONS, FORMATS, write_log
from appliance.store import read
from appliance.store.schema import connect_reader

CHUNK_MS = 3_600_000
BAR_WIDTH = 30


def parse_when(text: str, now: int) -> int:
    """UTC epoch ms from ISO 8601 (UTC unless a zone is given), epoch ms or s, 'now', or
    '-DURATION' before now ('-24h', '-7d', '-90m')."""
    t = text.strip()
    if t.lower() == "now":
        return now
    if t.startswith("-"):
        spec = t[1:].lower()
        days = 0.0
        if spec.endswith("d") and spec[:-1].replace(".", "", 1).isdigit():
            days, spec = float(spec[:-1]), "0"
        return now - int(round((days * 86400 + parse_duration(spec)) * 1000))
    return parse_time(t)


class Progress:
    """A one-line progress bar on a terminal; silent elsewhere."""

    def __init__(self, stream: TextIO, start_ms: int, end_ms: int) -> None:
        self.stream = stream
        self.on = stream.isatty()
        self.start_ms, self.end_ms = start_ms, end_ms
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, rows: int, ts: int) -> None:
        now = time.monotonic()
        if not self.on or now - self.last < 0.2:
            return
        self.last = now
        frac = min(1.0, max(0.0, (ts - self.start_ms) / max(1, self.end_ms - self.start_ms)))
        rate = rows / max(now - self.t0, 1e-9)
        filled = int(frac * BAR_WIDTH)
        eta = (now - self.t0) * (1 - frac) / frac if frac > 0.001 else 0
        self.stream.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {frac:4.0%}  {rows:,} rows  "
                          f"{rate:,.0f} rows/s  ETA {eta:,.0f} s ")
        self.stream.flush()

    def done(self) -> None:
        if self.on:
            self.stream.write("\r" + " " * (BAR_WIDTH + 60) + "\r")
            self.stream.flush()


def default_channels(db) -> list[str]:
    return [c.name for c in read.channels(db) if c.topic in ("drilling", "derived")]


def export(database: str, out: TextIO, fmt: str, names: list[str] | None, start_ms: int, end_ms: int,
           well: str = "", progress=None) -> tuple[int, list[str]]:
    """Write the rows of `names` (default: every drilling/derived channel) in [start, end) to `out`.

    Returns (rows, channel names). Raises read.QueryError for an unknown channel.
    """
    db = connect_reader(database)
    try:
        names = names or default_channels(db)
        if not names:
            raise read.QueryError("the database holds no channels yet")
        units = {c.name: c.unit for c in read.channels(db)}
        unknown = [n for n in names if n not in units]
        if unknown:
            raise read.QueryError(f"unknown channel(s): {', '.join(unknown)}; stored are "
                                  f"{', '.join(sorted(units)) or 'none'}")
        rows = read.iter_rows(db, names, start_ms, end_ms, CHUNK_MS)
        n = write_log(fmt, out, [(name, units[name]) for name in names], rows, progress=progress,
                      start_ms=start_ms, end_ms=end_ms, well=well)
        return n, names
    finally:
        db.close()


def _join_relative_times(argv: Sequence[str]) -> list[str]:
    """`--from -24h` as `--from=-24h`: argparse would take -24h for an option."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        a = items[i]
        if a in ("--from", "--to") and i + 1 < len(items) and items[i + 1][:1] == "-" and items[i + 1][1:2].isdigit():
            out.append(f"{a}={items[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: Sequence[str]) -> int:
    from appliance.cli import load_settings, settings_parser

    parser = settings_parser("export", "Export stored channels over a time range as CSV, LAS 2.0 or "
                                       "WITSML 1.4.1.1, streamed in constant memory.")
    parser.add_argument("--from", dest="start", required=True, metavar="TIME",
                        help="start (inclusive): ISO 8601 (UTC unless a zone is given, e.g. "
                             "2026-11-28T06:00), epoch ms, or -DURATION before now (-24h, -7d)")
    parser.add_argument("--to", dest="end", default="now", metavar="TIME", help="end (exclusive); default now")
    parser.add_argument("--channels", default="", metavar="A,B,...",
                        help="comma-separated channels (default: every drilling and derived channel stored)")
    parser.add_argument("--format", choices=FORMATS, default="csv", help="output format (default csv)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    args = parser.parse_args(_join_relative_times(argv))
    cfg = load_settings(args)
    now = time.time_ns() // 1_000_000
    try:
        start, end = parse_when(args.start, now), parse_when(args.end, now)
    except ValueError as e:
        parser.error(f"{e}; write times like 2026-11-28T06:00, 1764307200000, now or -24h")
    if end <= start:
        parser.error("--to must be after --from")
    if not os.path.exists(cfg.database_path):
        print(f"rigtel export: no database at {cfg.database_path}: is this the right configuration "
              "(--config), and has the saver run?", file=sys.stderr)
        return 1
    names = [n.strip() for n in args.channels.split(",") if n.strip()] or None
    progress = Progress(sys.stderr, start, end)
    t0 = time.monotonic()
    target = args.output
    partial = f"{target}.partial" if target else None
    try:
        if target:
            with open(partial, "w", encoding="utf-8", newline="") as out:  # type: ignore[arg-type]
                n, names = export(cfg.database_path, out, args.format, names, start, end, cfg.rig_id, progress)
            os.replace(partial, target)  # type: ignore[arg-type]
        else:
            n, names = export(cfg.database_path, sys.stdout, args.format, names, start, end, cfg.rig_id, progress)
            sys.stdout.flush()
    except read.QueryError as e:
        progress.done()
        print(f"rigtel export: {e}", file=sys.stderr)
        if partial and os.path.exists(partial):
            os.unlink(partial)
        return 2
    except OSError as e:
        progress.done()
        print(f"rigtel export: cannot write {target or 'stdout'}: {e.strerror or e}", file=sys.stderr)
        if partial and os.path.exists(partial):
            os.unlink(partial)
        return 1
    progress.done()
    seconds = time.monotonic() - t0
    where = target or "stdout"
    print(f"exported {n:,} rows of {len(names)} channels ({', '.join(names)}) to {where} as "
          f"{args.format} in {seconds:.1f} s ({n / max(seconds, 1e-9):,.0f} rows/s)"
          + (f"; name it *.{EXTENSIONS[args.format]} for other tools" if target and
             not target.endswith("." + EXTENSIONS[args.format]) else ""), file=sys.stderr)
    return 0
