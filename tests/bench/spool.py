"""Spool benchmark: what zero loss costs a publisher, and how fast a saver catches up.

- publish(): microseconds per message of a `Publisher(spool=True)` against a plain one,
  both sending to the real broker, measured back to back in each repetition, with 1 and
  100 20-channel frames per message; and with `spool_fsync_s=0` (an fdatasync per
  message, the most durable setting) at 1 frame per message.
- Catch-up: a saver started after N messages were published fetches them from the spool
  and stores them; messages/s from its start to the last one stored, against the same N
  messages ingested live (from the first publish to the last stored).
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.bus import Publisher
from tests.bench.storage import frame_values
from tests.conftest import start_broker, start_program

NAME = "spool"
DESCRIPTION = "publish() cost with the durable spool, and a saver's catch-up from it"
T0 = 1_700_000_000_000


def stats(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def publish_us(cfg, tmp: Path, frames: list[tuple[int, dict]], per_message: int, spool: bool, name: str) -> float:
    """Microseconds per publish() call of `frames` in messages of `per_message` frames."""
    with Publisher(name, settings=cfg, spool=spool) as pub:
        chunks = [frames[i:i + per_message] for i in range(0, len(frames), per_message)]
        started = time.perf_counter()
        for chunk in chunks:
            if per_message == 1:
                pub.publish("drilling", chunk[0][1], ts=chunk[0][0])
            else:
                pub.publish_batch("drilling", chunk)
        seconds = time.perf_counter() - started
    return seconds / len(chunks) * 1e6


def stored(db: Path, src: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        try:
            return c.execute("SELECT coalesce(sum(messages), 0) FROM streams WHERE src = ? AND topic = 'drilling'",
                             (src,)).fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def wait_stored(db: Path, src: str, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while stored(db, src) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {stored(db, src)} of {n} messages stored after {timeout} s")
        time.sleep(0.01)


def catch_up(tmp: Path, frames: list[tuple[int, dict]], live: bool) -> float:
    """Messages/s into the database: published before the saver starts (fetched from the
    spool), or with the saver running (live)."""
    broker = start_broker(tmp)
    db = tmp / "catchup.db"
    cfg = broker.settings(data_dir=str(tmp), bus_heartbeat_s="0.5")
    saver_args = ["saver", *broker.port_args(), "--set", f"database_path={db}", "--set", f"data_dir={tmp}",
                  "--set", "log_level=WARNING", "--set", "bus_heartbeat_s=0.5"]
    saver = None
    try:
        with Publisher(f"catchup-{'live' if live else 'spool'}", settings=cfg, spool=True) as pub:
            if live:
                saver = start_program(saver_args, tmp)
                while stored(db, pub.src) == 0:  # readiness: one message stored
                    pub.publish("drilling", {"DMEA": 1.0}, ts=T0 - 1000 - pub._seq.get("drilling", 0))
                    time.sleep(0.02)
                first = pub._seq["drilling"]
                started = time.perf_counter()
            for ts, data in frames:
                pub.publish("drilling", data, ts=ts)
            if not live:
                first = 0
                started = time.perf_counter()
                saver = start_program(saver_args, tmp)
            wait_stored(db, pub.src, first + len(frames))
            seconds = time.perf_counter() - started
    finally:
        if saver is not None:
            saver.stop()
        broker.program.stop()
    return len(frames) / seconds


def run(opts) -> dict[str, Any]:
    say = opts.say
    rng = random.Random(3)
    n = 20_000 if opts.quick else 50_000
    frames = [(T0 + i * 100, frame_values(rng)) for i in range(n)]
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rigtel-bench-spool-") as tmp_name:
        tmp = Path(tmp_name)
        broker = start_broker(tmp)
        try:
            for per_message, fsync_s, label in ((1, "1", "1 frame/message"), (100, "1", "100 frames/message"),
                                                (1, "0", "1 frame/message, fsync every message")):
                count = n if fsync_s != "0" else min(n, 5_000)
                cfg = broker.settings(data_dir=str(tmp / f"d{per_message}-{fsync_s}"), spool_fsync_s=fsync_s)
                spooled, plain = [], []
                for r in range(opts.runs):
                    plain.append(publish_us(cfg, tmp, frames[:count], per_message, False, f"plain{r}"))
                    spooled.append(publish_us(cfg, tmp, frames[:count], per_message, True, f"spool{r}"))
                    say(f"  publish, {label}, run {r + 1}: spool {spooled[-1]:.1f} us, plain {plain[-1]:.1f} us")
                rows.append({"metric": f"publish() with spool, {label}", "unit": "us/message",
                             "appliance": stats(spooled), "baseline": stats(plain),
                             "target": {"on": "ratio", "op": "<=", "limit": 1.5} if fsync_s != "0" else None,
                             "note": "baseline: the same publisher without spool, same broker, same run"})
                raw[f"publish_{per_message}_{fsync_s}"] = {"spool": spooled, "plain": plain}
        finally:
            broker.program.stop()
        m = 10_000 if opts.quick else 30_000
        spool_rates, live_rates = [], []
        for r in range(opts.runs):
            run_dir = tmp / f"catchup{r}"
            (run_dir / "live").mkdir(parents=True)
            (run_dir / "spool").mkdir(parents=True)
            live_rates.append(catch_up(run_dir / "live", frames[:m], live=True))
            spool_rates.append(catch_up(run_dir / "spool", frames[:m], live=False))
            say(f"  catch-up of {m} messages, run {r + 1}: from the spool {spool_rates[-1]:,.0f} msg/s, "
                f"live {live_rates[-1]:,.0f} msg/s")
        rows.append({"metric": f"saver catch-up from the spool ({m} messages, 1 frame each)", "unit": "messages/s",
                     "appliance": stats(spool_rates), "baseline": stats(live_rates),
                     "target": {"on": "ratio", "op": ">=", "limit": 0.5},
                     "note": "from the saver's start to the last stored; baseline: the same messages ingested live"})
        raw["catch_up"] = {"spool": spool_rates, "live": live_rates}
    return {"rows": rows, "raw": raw}
