"""`make chaos`: the whole appliance under supervisord, fed at 100 Hz, its programs killed -9 at
random for CHAOS_MINUTES (default 10), then everything killed at once; afterwards every
message the source published must be in the database exactly once.

    .venv/bin/python tests/chaos.py --minutes 2      # or CHAOS_MINUTES=2 make chaos

It runs the programs the way `make run` does (appliance.ops.dev: a prefix under var/chaos,
supervisord.conf rendered from etc/supervisord.conf.in) with free ports, until the offline
installer's prefix mode can lay the tree down instead. Steps:

1. every 2-5 s, kill -9 one RUNNING program at random (supervisord restarts it);
2. kill -9 supervisord and every program at the same instant (a stand-in for a power cut
   that keeps the page cache: the harshest crash the box survives without losing its disk
   caches), then start supervisord again;
3. stop the source cleanly and wait for the saver to catch up;
4. check: every (boot, seq) the source's spool says it published is stored once, with
   every frame in the raw rows and the roll-ups; no gap recorded lost; every program
   RUNNING; `PRAGMA integrity_check` ok; no alarm flood. Print the figures; exit 1 on any
   failed check.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from appliance.bus.spool import HEADER, SEQ_TOPIC, scan  # noqa: E402
from appliance.ops.layout import Layout, render_supervisord_conf  # noqa: E402
from tests.conftest import make_web_login  # noqa: E402

PROGRAMS = ["broker", "saver", "source", "logger", "maintenance", "web"]
SOURCE = "simulator"  # the publisher's name: its source id and spool folder
SOURCE_PROGRAM = "source"  # the supervisord program that runs it (data_source = simulator)
TOPIC = "drilling"
ALARM_FLOOD_PER_10_MIN = 10  # EEMUA 191: more than ~1 alarm a minute is beyond an operator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class Appliance:
    """A prefix with its settings and a supervisord running the programs."""

    def __init__(self, prefix: Path, rate_hz: int) -> None:
        if prefix.exists():
            shutil.rmtree(prefix)
        self.layout = Layout(prefix.resolve())
        self.layout.make_dirs()
        lib, run = self.layout.lib_dir, self.layout.run_dir
        self.db = lib / "rigtel.db"
        self.layout.config_file.write_text(
            "[appliance]\nrig_id = chaos\n"
            f"data_dir = {lib}\ndatabase_path = {self.db}\nsupervisor_socket = {run}/supervisor.sock\n"
            f"broker_frontend_port = {free_port()}\nbroker_backend_port = {free_port()}\n"
            f"web_port = {free_port()}\nweb_http_port = -1\nsimulator_rate_hz = {rate_hz}\nsimulator_speed = 1\n"
            + "".join(f"{k} = {v}\n" for k, v in make_web_login(prefix).overrides().items())
            +
            "maintenance_check_s = 10\ndisk_min_free_mb = 0\n")
        template = (REPO / "etc/supervisord.conf.in").read_text()
        self.layout.supervisord_conf.write_text(render_supervisord_conf(template, self.layout, sys.executable))
        self.bin = Path(sys.executable).parent
        self.supervisord: subprocess.Popen | None = None

    def start(self) -> None:
        self.supervisord = subprocess.Popen([str(self.bin / "supervisord"), "-c", str(self.layout.supervisord_conf)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ctl(self, *args: str) -> str:
        return subprocess.run([str(self.bin / "supervisorctl"), "-c", str(self.layout.supervisord_conf), *args],
                              capture_output=True, text=True, timeout=60).stdout

    def states(self) -> dict[str, tuple[str, int]]:
        """program -> (state, pid)"""
        out = {}
        for line in self.ctl("status").splitlines():
            m = re.match(r"^(\S+)\s+(\S+)(?:\s+pid (\d+))?", line)
            if m and m[1] in PROGRAMS:
                out[m[1]] = (m[2], int(m[3] or 0))
        return out

    def wait_running(self, timeout: float = 120) -> dict[str, tuple[str, int]]:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if len(states) == len(PROGRAMS) and all(s == "RUNNING" for s, _ in states.values()):
                return states
            if time.monotonic() > deadline:
                raise SystemExit(f"programs not all RUNNING after {timeout:.0f} s: {states}")
            time.sleep(0.5)

    def kill_everything(self) -> None:
        """SIGKILL supervisord and every program in the same instant."""
        pids = [pid for _, pid in self.states().values() if pid]
        assert self.supervisord is not None
        for pid in [self.supervisord.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.supervisord.wait(30)
        for pid in pids:
            while True:  # wait until each is gone, so the restart cannot meet a survivor
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        (self.layout.run_dir / "supervisor.sock").unlink(missing_ok=True)

    def shutdown(self) -> None:
        if self.supervisord is not None and self.supervisord.poll() is None:
            self.ctl("shutdown")
            try:
                self.supervisord.wait(60)
            except subprocess.TimeoutExpired:
                self.supervisord.kill()


def query(db: Path, sql: str, *args) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn.execute(sql, args).fetchall()


def published(spool_dir: Path) -> dict[str, tuple[int, int, int]]:
    """boot -> (first seq, last seq, frames) of the source's topic, read from its spool files."""
    by_boot: dict[str, list] = {}
    for seg in sorted(spool_dir.glob("*.seg")):
        boot = seg.name.split("-")[1]
        topics, _ = scan(seg)
        if TOPIC not in topics:
            continue
        first, offsets = topics[TOPIC]
        data = seg.read_bytes()
        frames = 0
        for offset in offsets:
            length, _, _, topic_len = HEADER.unpack_from(data, offset)
            payload = data[offset + HEADER.size + topic_len:offset + 8 + length]
            env = orjson.loads(payload)
            frames += len(env["batch"]) if "batch" in env else 1
        entry = by_boot.setdefault(boot, [first, first + len(offsets) - 1, 0])
        entry[0], entry[1] = min(entry[0], first), max(entry[1], first + len(offsets) - 1)
        entry[2] += frames
    return {boot: tuple(v) for boot, v in by_boot.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tests/chaos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("CHAOS_MINUTES", 10)),
                        help="minutes of random kills (default $CHAOS_MINUTES, else 10)")
    parser.add_argument("--rate", type=int, default=100, help="simulator frames per second (default 100)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed of the kills")
    parser.add_argument("--prefix", default=str(REPO / "var/chaos"), help="where to lay the appliance out")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    app = Appliance(Path(args.prefix), args.rate)
    failures: list[str] = []
    say(f"chaos: {args.minutes:g} min of kill -9 at random (seed {args.seed}), source at {args.rate} Hz, "
        f"prefix {app.layout.root}")
    app.start()
    try:
        app.wait_running()
        started = time.monotonic()
        kills: Counter[str] = Counter()
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(rng.uniform(2, 5))
            running = {name: pid for name, (state, pid) in app.states().items() if state == "RUNNING" and pid}
            if not running:
                continue
            name = rng.choice(sorted(running))
            try:
                os.kill(running[name], signal.SIGKILL)
                kills[name] += 1
            except ProcessLookupError:
                pass
        say(f"random kills done: {sum(kills.values())} ({', '.join(f'{k} {v}' for k, v in sorted(kills.items()))})")
        app.wait_running()
        time.sleep(5)

        say("killing supervisord and every program at once, then starting again")
        app.kill_everything()
        app.start()
        app.wait_running()
        time.sleep(10)  # a few announcements: the saver fetches the tails of the killed runs

        say("stopping the source; waiting for the saver to catch up")
        app.ctl("stop", SOURCE_PROGRAM)
        spool_dir = app.layout.lib_dir / "spool" / f"chaos.{SOURCE}"
        source = f"chaos.{SOURCE}"
        sent = published(spool_dir)
        stop_at = time.monotonic()

        def stored() -> dict[str, tuple[int, int, int]]:
            return {boot: (first, last, n) for boot, first, last, n in query(
                app.db, "SELECT boot, first_seq, last_seq, messages FROM streams WHERE src = ? AND topic = ?",
                source, TOPIC)}

        want = {boot: (first, last, last - first + 1) for boot, (first, last, _) in sent.items()}
        while stored() != want or query(app.db, "SELECT count(*) FROM gaps WHERE state = 'pending'")[0][0]:
            if time.monotonic() - stop_at > 180:
                break
            time.sleep(1)
        catch_up_s = time.monotonic() - stop_at
        got = stored()
        messages = sum(last - first + 1 for first, last, _ in sent.values())
        frames = sum(f for _, _, f in sent.values())

        # -- checks -------------------------------------------------------------------------
        if got != want:
            missing = {b: (want.get(b), got.get(b)) for b in set(want) | set(got) if want.get(b) != got.get(b)}
            failures.append(f"stored streams differ from what the source published: {missing}")
        if any(first != 1 for first, _, _ in sent.values()):
            failures.append("the spool no longer holds the start of a run (raise spool_max_mb for the check)")
        rollup = query(app.db, "SELECT coalesce(sum(r.count), 0) FROM rollup_1m r JOIN channels c "
                               "ON c.id = r.channel_id WHERE c.name = 'DMEA'")[0][0]
        if rollup != frames:
            failures.append(f"roll-ups count {rollup} DMEA values, the source sent {frames} frames")
        raw = query(app.db, "SELECT count(DMEA_col) FROM samples".replace(
            "DMEA_col", "c" + str(query(app.db, "SELECT id FROM channels WHERE name = 'DMEA'")[0][0])))[0][0]
        if raw != frames:
            failures.append(f"{raw} raw DMEA values stored, the source sent {frames} frames")
        gaps = dict(query(app.db, "SELECT state, coalesce(sum(last_seq - first_seq + 1), 0) FROM gaps "
                                  "WHERE src = ? GROUP BY state", source))
        if gaps.get("lost") or gaps.get("pending"):
            failures.append(f"gaps not recovered: {gaps}")
        dead = query(app.db, "SELECT reason, count(*) FROM dead_letters GROUP BY reason")
        if dead:
            failures.append(f"dead letters: {dead}")
        states = app.states()
        not_running = {n: s for n, (s, _) in states.items() if s != "RUNNING" and n != SOURCE_PROGRAM}
        if not_running:
            failures.append(f"programs not RUNNING: {not_running}")
        integrity = query(app.db, "PRAGMA integrity_check")
        if integrity != [("ok",)]:
            failures.append(f"integrity_check: {integrity[:5]}")
        minutes = (time.monotonic() - started) / 60
        alarms = query(app.db, "SELECT kind, count(*) FROM alerts GROUP BY kind")
        total_alarms = sum(n for _, n in alarms)
        if total_alarms > ALARM_FLOOD_PER_10_MIN * max(1.0, minutes / 10):
            failures.append(f"alarm flood: {alarms} in {minutes:.1f} min")

        say(f"source: {len(sent)} run(s), {messages} messages, {frames} frames published")
        say(f"stored: {sum(n for _, _, n in got.values())} messages; {raw} raw frames; roll-ups {rollup}")
        say(f"gaps: recovered {gaps.get('recovered', 0)} message(s) from the spool, lost {gaps.get('lost', 0)}, "
            f"pending {gaps.get('pending', 0)}; caught up {catch_up_s:.1f} s after the source stopped")
        say(f"programs: {', '.join(f'{n} {s}' for n, (s, _) in sorted(states.items()))}")
        say(f"integrity_check: {integrity[0][0]}; alarms: {alarms or 'none'}; dead letters: {dead or 'none'}")
    finally:
        app.shutdown()
    if failures:
        for f in failures:
            say(f"FAILED: {f}")
        return 1
    say("chaos: every published message stored exactly once")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
