"""`make soak`: the installed appliance fed at 100 Hz for SOAK_MINUTES (default 60) with the
dashboard streaming; every program's memory, open files and threads must stay flat.

    .venv/bin/python tests/soak.py --minutes 5      # or SOAK_MINUTES=5 make soak

Steps:

0. build the bundle and install it under var/soak/root exactly as `make chaos` does
   (tests/chaos.py `Appliance`), the simulator at 100 Hz; its listening ports are picked
   below the kernel's ephemeral range, so a chaos run (whose ports are ephemeral ones) or a
   program's own ephemeral sockets can never take them;
1. two dashboard clients for the whole run: an authenticated HTTPS client reading the live
   SSE feed (`/api/stream`) and counting its events, and headless Chromium
   (/usr/bin/chromium, driven by Playwright) on the live page, drawing every track;
2. every `--interval` seconds (10) sample each program (and supervisord): RSS
   (`VmRSS`), open file descriptors (`/proc/PID/fd`) and threads (`Threads`), written to
   var/soak/samples.csv;
3. at the end stop the source and check every message it published is stored once.

Verdicts, per program. The first `--warmup` part of the run (10 %, at least a minute) is
start-up (caches filling, the page's buffers reaching their size) and not judged. Of the
samples after it, the median of the first 10 % is compared with the median of the last
10 %: RSS may grow at most 10 %; the file-descriptor and thread counts must not grow at
all (medians, so a request that holds a socket for one sample is no growth). A program
restarted during the soak fails it (its figures would start over). Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import base64
import csv
import os
import random
import socket
import ssl
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.chaos import TOPIC, Appliance, published, query, say, verdict  # noqa: E402

SOURCE = "source"
RSS_GROWTH_LIMIT = 0.10


def port_below_ephemeral() -> int:
    """A free port below the kernel's ephemeral range: nothing binding port 0 can get it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    while True:
        port = random.randint(20000, low - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def proc_sample(pid: int) -> tuple[int, int, int] | None:
    """(RSS kB, open fds, threads) of a process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), fds, int(fields["Threads"])


@dataclass
class StreamClient:
    """An authenticated client on the live SSE feed, reconnecting like a browser would."""

    url: str
    user: str
    password: str
    events: Counter = field(default_factory=Counter)
    connects: int = 0
    errors: list[str] = field(default_factory=list)
    last_event: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False  # the installer's self-signed certificate, on loopback
        context.verify_mode = ssl.CERT_NONE
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        while not self.stop.is_set():
            request = urllib.request.Request(self.url + "/api/stream",
                                             headers={"Authorization": f"Basic {token}",
                                                      "Accept": "text/event-stream"})
            try:
                with urllib.request.urlopen(request, timeout=30, context=context) as response:
                    self.connects += 1
                    for line in response:
                        if line.startswith(b"event: "):
                            self.events[line[7:].strip().decode()] += 1
                            self.last_event = time.monotonic()
                        if self.stop.is_set():
                            return
            except Exception as e:  # noqa: BLE001 -- counted and reported; a soak client reconnects
                self.errors.append(f"{time.strftime('%H:%M:%S')} {type(e).__name__}: {e}")
                self.stop.wait(2)


class Page:
    """Headless Chromium on the live page, logged in as the administrator."""

    def __init__(self, url: str, user: str, password: str) -> None:
        from playwright.sync_api import sync_playwright

        from tests.browser import CHROMIUM, CHROMIUM_ARGS, watch

        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.context = self.browser.new_context(http_credentials={"username": user, "password": password},
                                                ignore_https_errors=True, viewport={"width": 1600, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.watched = watch(self.page, url)
        self.page.goto(url + "/live")
        self.page.wait_for_selector('#link-state[data-state="live"]')

    def frames(self) -> int:
        return int(self.page.evaluate("rigtel.link.framesReceived"))

    def state(self) -> str:
        return self.page.get_attribute("#link-state", "data-state") or "?"

    def wait(self, seconds: float) -> None:
        """Sleep while Playwright keeps serving the page's events."""
        self.page.wait_for_timeout(seconds * 1000)

    def close(self) -> None:
        self.context.close()
        self.browser.close()
        self.playwright.stop()


def window_median(values: list[float], first: bool) -> float:
    n = max(1, len(values) // 10)
    return statistics.median(values[:n] if first else values[-n:])


def verdicts(series: dict[str, list[tuple[float, int, int, int]]], warmup_s: float,
             restarted: set[str]) -> tuple[list[str], list[str]]:
    """Report lines and failures: per program RSS, fds and threads, first vs last window."""
    lines, failures = [], []
    lines.append(f"{'program':<16} {'RSS MiB first→last':>19} {'growth':>7} {'max':>6}  "
                 f"{'fds first→last (max)':>21}  {'threads first→last (max)':>25}  verdict")
    for name, samples in sorted(series.items()):
        judged = [s for s in samples if s[0] >= warmup_s]
        if len(judged) < 2:
            failures.append(f"{name}: too few samples after the warm-up ({len(judged)})")
            continue
        rss, fds, threads = ([s[i] for s in judged] for i in (1, 2, 3))
        r0, r1 = window_median(rss, True), window_median(rss, False)
        f0, f1 = window_median(fds, True), window_median(fds, False)
        t0, t1 = window_median(threads, True), window_median(threads, False)
        growth = (r1 - r0) / r0
        bad = []
        if growth > RSS_GROWTH_LIMIT:
            bad.append(f"RSS +{growth:.1%}")
        if f1 > f0:
            bad.append(f"fds {f0:g}→{f1:g}")
        if t1 > t0:
            bad.append(f"threads {t0:g}→{t1:g}")
        if name in restarted:
            bad.append("restarted")
        lines.append(f"{name:<16} {r0 / 1024:8.1f} → {r1 / 1024:6.1f}  {growth:+7.1%} {max(rss) / 1024:6.1f}  "
                     f"{f0:6g} → {f1:<4g} ({max(fds):>3})  {t0:11g} → {t1:<4g} ({max(threads):>3})  "
                     f"{'FAIL: ' + ', '.join(bad) if bad else 'ok'}")
        failures += [f"{name}: {b}" for b in bad]
    return lines, failures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tests/soak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 60)),
                        help="minutes of soak (default $SOAK_MINUTES, else 60)")
    parser.add_argument("--rate", type=int, default=100, help="simulator frames per second (default 100)")
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples (default 10)")
    parser.add_argument("--warmup", type=float, default=0.10,
                        help="part of the run not judged, a fraction (default 0.10, at least 60 s)")
    parser.add_argument("--no-browser", action="store_true", help="no Chromium on the live page")
    parser.add_argument("--prefix", default=str(REPO / "var/soak"), help="where to install the appliance")
    args = parser.parse_args(argv)
    app = Appliance(Path(args.prefix), args.rate, rig_id="soak", port=port_below_ephemeral)
    url = f"https://127.0.0.1:{app.settings['web_port']}"
    failures: list[str] = []
    say(f"soak: {args.minutes:g} min, source at {args.rate} Hz, dashboard {url}, installed under {app.root}")
    page = None
    client = StreamClient(url, *app.admin)
    client_thread = threading.Thread(target=client.run, name="sse-client", daemon=True)
    csv_path = Path(args.prefix) / "samples.csv"
    try:
        states = app.wait_running()
        pids = {name: pid for name, (_, pid) in states.items()}
        pids["supervisord"] = app.supervisord_pid()
        client_thread.start()
        if not args.no_browser:
            page = Page(url, *app.admin)
            say(f"Chromium on {url}/live: {page.state()}")
        series: dict[str, list[tuple[float, int, int, int]]] = {name: [] for name in pids}
        restarted: set[str] = set()
        started = time.monotonic()
        duration = args.minutes * 60
        warmup_s = max(60.0, args.warmup * duration)
        page_frames = []  # (t, frames the page has received)
        with csv_path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["t_s", "program", "pid", "rss_kb", "fds", "threads"])
            next_report = started + 300
            while (now := time.monotonic()) - started < duration:
                t = now - started
                for name, (state, pid) in app.states().items():
                    if pid and pid != pids.get(name):
                        restarted.add(name)
                        say(f"{name} restarted: pid {pids.get(name)} → {pid} ({state})")
                        pids[name] = pid
                for name, pid in pids.items():
                    sample = proc_sample(pid)
                    if sample is None:
                        continue
                    series[name].append((t, *sample))
                    writer.writerow([f"{t:.1f}", name, pid, *sample])
                out.flush()
                if page is not None:
                    page_frames.append((t, page.frames()))
                if time.monotonic() >= next_report:
                    next_report += 300
                    rss = ", ".join(f"{n} {s[-1][1] / 1024:.0f}" for n, s in sorted(series.items()) if s)
                    say(f"{t / 60:.0f} min: RSS MiB {rss}; SSE events {dict(client.events)}"
                        + (f"; page frames {page_frames[-1][1]} ({page.state()})" if page else ""))
                pause = args.interval - (time.monotonic() - now)
                if pause > 0:
                    page.wait(pause) if page is not None else time.sleep(pause)
        soaked_min = (time.monotonic() - started) / 60

        # -- the dashboard kept streaming ------------------------------------------------
        client_stale = time.monotonic() - client.last_event
        if client_stale > 30:
            failures.append(f"the SSE client's last event was {client_stale:.0f} s ago")
        if client.connects != 1:
            failures.append(f"the SSE client connected {client.connects} times: {client.errors[-5:]}")
        page_state = page.state() if page is not None else ""  # before the source stops
        if page is not None:
            tail = [f for t, f in page_frames if t >= duration - 120]
            if len(tail) < 2 or tail[-1] <= tail[0]:
                failures.append(f"the live page received no frames in its last 2 minutes: {page_frames[-3:]}")
            csp = page.page.evaluate("window.__csp || []")
            if page.watched.errors or csp:
                failures.append(f"the live page had errors: {page.watched.errors[:5]} {csp[:5]}")
            if page.watched.outside():
                failures.append(f"the live page loaded from outside: {page.watched.outside()[:5]}")

        # -- nothing lost ----------------------------------------------------------------
        app.ctl("stop", SOURCE)
        source = "soak.simulator"
        sent = published(app.lib / "spool" / source)
        want = {boot: (first, last, last - first + 1) for boot, (first, last, _) in sent.items()}

        def stored() -> dict[str, tuple[int, int, int]]:
            return {boot: (first, last, n) for boot, first, last, n in query(
                app.db, "SELECT boot, first_seq, last_seq, messages FROM streams WHERE src = ? AND topic = ?",
                source, TOPIC)}

        deadline = time.monotonic() + 180
        while stored() != want and time.monotonic() < deadline:
            time.sleep(1)
        got = stored()
        if got != want:
            failures.append(f"stored streams differ from what the source published: want {want}, got {got}")
        lost = query(app.db, "SELECT count(*), coalesce(sum(last_seq - first_seq + 1), 0) FROM gaps "
                             "WHERE state != 'recovered'")[0]
        dead = query(app.db, "SELECT reason, count(*) FROM dead_letters GROUP BY reason")
        alarms = query(app.db, "SELECT kind, count(*) FROM alerts GROUP BY kind")
        integrity = query(app.db, "PRAGMA integrity_check")[0][0]
        if integrity != "ok":
            failures.append(f"integrity_check: {integrity}")

        lines, failed = verdicts(series, warmup_s, restarted)
        failures += failed
        say(f"soaked {soaked_min:.1f} min, {sum(len(s) for s in series.values())} samples every "
            f"{args.interval:g} s in {csv_path}")
        say(f"method: the first {warmup_s / 60:.1f} min are warm-up; of the samples after it, the median of "
            f"the first 10 % against the median of the last 10 % (RSS limit +{RSS_GROWTH_LIMIT:.0%}, "
            "fds and threads +0)")
        for line in lines:
            print("    " + line, flush=True)
        say(f"SSE client: {client.connects} connection(s), events {dict(client.events)}, "
            f"{len(client.errors)} error(s)")
        if page is not None:
            say(f"live page: {page_frames[-1][1]} frames received, state {page_state} at the end, "
                f"{len(page.watched.errors)} error(s)")
        say(f"source: {sum(w[2] for w in want.values())} messages published, "
            f"{sum(g[2] for g in got.values())} stored; gaps not recovered: {lost[0]} ({lost[1]} messages); "
            f"dead letters {dead or 'none'}; alarms {alarms or 'none'}; integrity_check {integrity}")
    finally:
        client.stop.set()
        if page is not None:
            page.close()
        app.shutdown()
    return verdict(failures, "soak: every program flat, every message stored")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
