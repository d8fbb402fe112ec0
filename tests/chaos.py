"""`make chaos`: the appliance installed by the offline installer (prefix mode), fed at 100 Hz,
its programs killed -9 at random for CHAOS_MINUTES (default 10), then everything killed at
once; afterwards every message the source published must be in the database exactly once.

    .venv/bin/python tests/chaos.py --minutes 2      # or CHAOS_MINUTES=2 make chaos

Steps:

0. build the bundle (installer/bundle.py; wheels cached in var/bundle-wheels) and install it
   with `install.sh --prefix var/chaos/root`, every port a free one, the simulator at 100 Hz;
1. every 2-5 s, kill -9 one RUNNING program at random (supervisord restarts it);
2. kill -9 supervisord and every program at the same instant (a stand-in for a power cut
   that keeps the page cache: the harshest crash the box survives without losing its disk
   caches), then start supervisord again as the installer does;
3. stop the source cleanly and wait for the saver to catch up;
4. check: every (boot, seq) the source's spool says it published is stored once, with
   every frame in the raw rows and the roll-ups; no gap lost anywhere; every program
   RUNNING; `PRAGMA integrity_check` ok; no alarm flood (alarms other than the
   program-down ones the kills cause). Print the figures; exit 1 on any failed check.
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
import tarfile
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Callable

import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from appliance.bus.spool import HEADER, scan  # noqa: E402
from appliance.config import SETTINGS  # noqa: E402

SOURCE = "source"  # the program; it runs the simulator, whose source id is <rig_id>.simulator
TOPIC = "drilling"
ALARM_FLOOD_PER_10_MIN = 10  # EEMUA 191: more than ~1 alarm a minute is beyond an operator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def verdict(failures: list[str], passed: str) -> int:
    """Every failure said, and the exit status of the run."""
    for f in failures:
        say(f"FAILED: {f}")
    if not failures:
        say(passed)
    return 1 if failures else 0


def build_bundle() -> Path:
    """The extracted bundle folder, built from this checkout (wheels cached in var/)."""
    out = subprocess.run([sys.executable, str(REPO / "installer/bundle.py"), "--cache",
                          str(REPO / "var/bundle-wheels"), "--out", str(REPO / "var/bundle-dist")],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"building the bundle failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


class Appliance:
    """The appliance installed under a prefix by install.sh, and supervisord running it."""

    def __init__(self, prefix: Path, rate_hz: int, rig_id: str = "chaos",
                 port: Callable[[], int] = free_port) -> None:
        """`port` picks each listening port (the soak keeps its ports apart from the chaos run's)."""
        if prefix.exists():
            ctl = prefix / "root/opt/rigtel/current/venv/bin/supervisorctl"
            if ctl.exists():  # a previous run's, if it is still up
                subprocess.run([str(ctl), "-c", str(prefix / "root/etc/rigtel/supervisord.conf"), "shutdown"],
                               capture_output=True)
            shutil.rmtree(prefix)
        prefix.mkdir(parents=True)
        self.root = prefix.resolve() / "root"
        self.conf = self.root / "etc/rigtel/supervisord.conf"
        self.lib = self.root / "var/lib/rigtel"
        self.db = self.lib / "rigtel.db"
        self.bin = self.root / "opt/rigtel/current/venv/bin"
        tarball = build_bundle()
        with tarfile.open(tarball) as tar:
            tar.extractall(prefix, filter="tar")
        bundle = next(p for p in prefix.iterdir() if p.name.startswith("rigtel-"))
        self.admin = ("admin", f"{rig_id}-monkey-password")
        password = prefix / "admin-password"
        password.write_text(self.admin[1] + "\n")
        password.chmod(0o600)
        sets = {"rig_id": rig_id, "simulator_rate_hz": str(rate_hz), "simulator_speed": "1",
                "maintenance_check_s": "10", "disk_min_free_mb": "0",
                # the installed default points inside site-packages, where the map is not
                # (reported to the integrator); the release folder has it
                "wits0_out_map": str(self.root / "opt/rigtel/current/etc/wits0-out-map.txt"),
                **{s.name: str(port()) for s in SETTINGS if s.name.endswith("_port")}}
        self.settings = sets
        say(f"installing {tarball.name} under {self.root}")
        run = subprocess.run([str(bundle / "install.sh"), "--prefix", str(self.root), "--admin-password-file",
                              str(password), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]],
                             capture_output=True, text=True, timeout=900,
                             env={k: v for k, v in os.environ.items() if not k.startswith("RIGTEL_")})
        if run.returncode != 0:
            raise SystemExit(f"install.sh failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        self.programs = subprocess.run([str(self.bin / "python"), "-m", "appliance.ops.setup", "programs",
                                        "--conf", str(self.conf)], capture_output=True, text=True,
                                       check=True).stdout.split()

    def start(self) -> None:
        """supervisord in the background, as install.sh starts it where there is no systemd."""
        (self.root / "run/rigtel/supervisor.sock").unlink(missing_ok=True)
        subprocess.Popen([str(self.bin / "supervisord"), "-c", str(self.conf)], cwd=self.lib,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})

    def supervisord_pid(self) -> int:
        return int((self.root / "run/rigtel/supervisord.pid").read_text())

    def ctl(self, *args: str) -> str:
        return subprocess.run([str(self.bin / "supervisorctl"), "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=60).stdout

    def states(self) -> dict[str, tuple[str, int]]:
        """program -> (state, pid)"""
        out = {}
        for line in self.ctl("status").splitlines():
            m = re.match(r"^(\S+)\s+(\S+)(?:\s+pid (\d+))?", line)
            if m and m[1] in self.programs:
                out[m[1]] = (m[2], int(m[3] or 0))
        return out

    def wait_running(self, timeout: float = 180) -> dict[str, tuple[str, int]]:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if len(states) == len(self.programs) and all(s == "RUNNING" for s, _ in states.values()):
                return states
            if time.monotonic() > deadline:
                raise SystemExit(f"programs not all RUNNING after {timeout:.0f} s: {states}")
            time.sleep(0.5)

    def kill_everything(self) -> None:
        """SIGKILL supervisord and every program (and the event listener) in the same instant."""
        out = subprocess.run(["pgrep", "-f", str(self.root)], capture_output=True, text=True).stdout
        pids = [self.supervisord_pid(), *[int(p) for p in out.split() if int(p) != os.getpid()]]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            while True:  # wait until each is gone, so the restart cannot meet a survivor
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def shutdown(self) -> None:
        self.ctl("shutdown")
        say(f"the installed appliance stays in {self.root} for a look (logs in var/log/rigtel)")


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
    parser.add_argument("--prefix", default=str(REPO / "var/chaos"), help="where to install the appliance")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    app = Appliance(Path(args.prefix), args.rate)
    failures: list[str] = []
    say(f"chaos: {args.minutes:g} min of kill -9 at random (seed {args.seed}), source at {args.rate} Hz, "
        f"installed under {app.root}")
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

        def recovered() -> int:
            return query(app.db, "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM gaps "
                                 "WHERE state = 'recovered'")[0][0]

        say("killing supervisord and every program at once, then starting again")
        before_kill_all = recovered()
        app.kill_everything()
        killed_at = time.monotonic()
        app.start()
        app.wait_running()
        back_s = time.monotonic() - killed_at
        time.sleep(10)  # a few announcements: the saver fetches the tails of the killed runs

        say("stopping the source; waiting for the saver to catch up")
        app.ctl("stop", SOURCE)
        spool_dir = app.lib / "spool" / "chaos.simulator"
        source = "chaos.simulator"
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
        after_kill_all = recovered() - before_kill_all
        # a message stored twice counts in `messages` without widening the stream's range
        twice = {boot: max(0, n - (last - first + 1)) for boot, (first, last, n) in got.items()}
        duplicates = sum(twice.values())
        not_stored = sum(max(0, n - (got[boot][2] - twice[boot] if boot in got else 0))
                         for boot, (_, _, n) in want.items())
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
        others = query(app.db, "SELECT src, topic, state, sum(last_seq - first_seq + 1) FROM gaps "
                               "WHERE src != ? AND state != 'recovered' GROUP BY src, topic, state", source)
        dead = query(app.db, "SELECT reason, count(*) FROM dead_letters GROUP BY reason")
        if dead:
            failures.append(f"dead letters: {dead}")
        states = app.states()
        not_running = {n: s for n, (s, _) in states.items() if s != "RUNNING" and n != SOURCE}
        if not_running:
            failures.append(f"programs not RUNNING: {not_running}")
        integrity = query(app.db, "PRAGMA integrity_check")
        if integrity != [("ok",)]:
            failures.append(f"integrity_check: {integrity[:5]}")
        minutes = (time.monotonic() - started) / 60
        alarms = query(app.db, "SELECT kind, count(*) FROM alerts GROUP BY kind")
        # each kill raises and clears its program's program-down alert: expected, two events
        # per kill; anything else beyond an operator's rate is a flood
        expected_kinds = {"program_down"}
        unexpected = sum(n for kind, n in alarms if kind not in expected_kinds)
        if unexpected > ALARM_FLOOD_PER_10_MIN * max(1.0, minutes / 10):
            failures.append(f"alarm flood: {alarms} in {minutes:.1f} min")
        if any(kind == "data_gap" for kind, _ in alarms):
            failures.append(f"data-gap alarms: {alarms}")

        say(f"source: {len(sent)} run(s), {messages} messages, {frames} frames published")
        say(f"stored: {sum(n for _, _, n in got.values())} messages; {raw} raw frames; roll-ups {rollup}")
        say(f"duplicates: {duplicates}; missing: {not_stored}; restarts: {sum(kills.values())} kills, then the kill-all")
        say(f"kill-all (power-loss stand-in): all RUNNING again {back_s:.1f} s after; "
            f"{after_kill_all} message(s) fetched from the spools since (all sources)")
        say(f"gaps: recovered {gaps.get('recovered', 0)} message(s) from the spool, lost {gaps.get('lost', 0)}, "
            f"pending {gaps.get('pending', 0)}; caught up {catch_up_s:.1f} s after the source stopped")
        say(f"programs: {', '.join(f'{n} {s}' for n, (s, _) in sorted(states.items()))}")
        say(f"integrity_check: {integrity[0][0]}; alarms: {alarms or 'none'}; dead letters: {dead or 'none'}")
        say(f"other sources' gaps not recovered (they keep no spool, or lost): {others or 'none'}")
    finally:
        app.shutdown()
    return verdict(failures, "chaos: every published message stored exactly once")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
