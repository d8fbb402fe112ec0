"""Web benchmark: publish -> browser latency, the live page's main-thread cost, concurrent
live streams, history API, web RSS.

Real programs on ephemeral loopback ports: one `rigtel broker` and two `rigtel web` with the
same settings, both serving a database of 24 h x 20 channels at 1 Hz written by `Writer`:
"current" serves this tree's webroot; "before" serves the webroot of BASELINE_REV (the live
page before it received the stream in a Web Worker and drew one small figure per track),
taken with `git archive`, so the page before and after are measured in the same run.

- latency: the benchmark publishes 20-channel `drilling` frames with `Publisher`, each
  stamped ts = wall-clock ms at publish (one machine, one clock). Each page is measured on
  its own (the other closed, so they do not share the CPU), before and after alternately:
  - receipt: the current page records, per frame, when its feed (in a Web Worker) received
    it, when the page handled it, when the tiles showed it and when its track was redrawn
    with it (rigtel.perf). The page before had only the main thread: its receipt is what a
    second EventSource in that page sees (the probe below), as this benchmark measured it then.
  - probe: a second EventSource in the page's main thread, in both pages: how long an event
    waits there behind the page's own work.
  - main thread: busy share (Chrome's TaskDuration over the phase), long tasks, and the
    milliseconds one redraw takes (a whole figure before, one track now).
  Baseline rows: a `DataSubscriber` in this process (bus only) for the absolute figures.
- streams: 20 more SSE readers (threads with http.client) on the current web program while
  publishing at 10 Hz, with the current page open; each must keep receiving frames (no gap
  over STALL_S). A quiet page (a JSON document) and a plain http.client reader measure the
  same stream without the dashboard's script.
- history: GET /api/series for 1 h and 24 h x 20 channels over HTTP (median of several),
  next to `read.series` on the same file in this process.
- RSS: VmRSS of the current web program from its first /live phase (warm) to the end of the
  streams phase (minutes; the web-soak section watches it longer).
"""

from __future__ import annotations

import http.client
import ssl
import io
import json
import random
import socket
import sqlite3
import statistics
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from appliance.bus import Publisher
from appliance.bus.envelope import Envelope, Frame
from appliance.channels import CATALOGUE
from appliance.store import read
from appliance.store.writer import Batch, Writer
from tests.browser import CHROMIUM, CHROMIUM_ARGS, READY_WEB, missing_browser
from tests.conftest import Collector, make_web_login, start_broker, start_program, wait_subscribed

NAME = "web"
DESCRIPTION = "publish -> browser latency, /live before and after, 20 live streams, history API times, web RSS"
CHANNELS = [c for c in CATALOGUE][:20]
NAMES = [c.mnemonic for c in CHANNELS]
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
STREAMS = 20
STALL_S = 2.0
MB = 1_000_000
# The live page before this tree's: one Plotly figure redrawn with Plotly.react, stream on the main thread.
BASELINE_REV = "cae1516c7e7a6e1ac1c65fd84bde501e0c85760b"
REPO = Path(__file__).resolve().parents[2]

# In the page: a second EventSource next to live.js's own. Arrow functions: the page's CSP
# refuses eval, which is what a bare expression would need.
OPEN_PROBE = """() => {
  window.__lat = []; window.__events = 0;
  const es = new EventSource('/api/stream');
  window.__probe = es;
  window.__long = [];  // the page's own long tasks (its redraws): what delays the handler
  try {
    new PerformanceObserver(l => { for (const t of l.getEntries()) window.__long.push(t.duration); })
      .observe({type: 'longtask'});
  } catch (e) { /* no long-task timing in this browser */ }
  es.addEventListener('frames', e => {
    const now = Date.now();
    const d = JSON.parse(e.data);
    window.__events += 1;
    for (const f of d.frames) window.__lat.push(now - f[0]);
  });
  return true;
}"""
TAKE = "() => { const l = window.__lat; window.__lat = []; window.__events = 0; return l; }"
TAKE_LONG = "() => { const l = window.__long; window.__long = []; return l; }"
# The page's own redraw figures: the current page has rigtel.perf, the one before only its stats.
START_PAGE = "() => { if (rigtel.perf) rigtel.perf.start(); return Object.assign({}, rigtel.live.stats); }"
TAKE_PAGE = """() => ({perf: rigtel.perf ? rigtel.perf.take() : null, stats: Object.assign({}, rigtel.live.stats)})"""


def frame_values(rng: random.Random) -> dict[str, float]:
    return {c.mnemonic: round(rng.uniform(c.low, c.high) if c.high < 1e4 else rng.uniform(0, 9000), 3)
            for c in CHANNELS}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def stats(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"no VmRSS for {pid}")


def build_history(path: Path) -> None:
    """24 h x 20 channels at 1 Hz from T0, through the saver's writer."""
    rng = random.Random(7)
    w = Writer(path)
    for seq, start in enumerate(range(0, 86_400, 3_600), 1):
        frames = tuple(Frame(T0 + (start + s) * 1000, frame_values(rng)) for s in range(3_600))
        w.commit(Batch([Envelope("drilling", "s", "b", seq, T0, frames, 1)]))
    w.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    w.close()


class BusLatency(Collector):
    """The baseline: publish -> broker -> a DataSubscriber here, ms per frame."""

    def __init__(self, settings) -> None:
        super().__init__(["drilling", "probe"], settings)
        self.lat_ms: list[float] = []

    def on_envelope(self, envelope) -> None:
        if envelope.topic == "drilling":
            now = time.time_ns() / 1e6
            self.lat_ms.extend(now - f.ts for f in envelope.frames)
        super().on_envelope(envelope)

    def take(self) -> list[float]:
        lat, self.lat_ms = self.lat_ms, []
        with self.changed:
            self.envelopes.clear()
        return lat


class SseReader:
    """One plain live stream in a thread: frame counts and arrival times of `frames` events."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.times: list[float] = []  # time.monotonic() of each frames event
        self.lat_ms: list[float] = []  # wall clock at receipt - frame ts, per frame
        self.frames = 0
        self.status = 0
        self.error = ""
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=self.read, name=f"sse-{port}-{n}", daemon=True)

    def read(self) -> None:
        try:
            conn = connect(self.port)
            conn.request("GET", "/api/stream", headers={"Accept": "text/event-stream", **auth_header()})
            self.sock = conn.sock
            resp = conn.getresponse()
            self.status = resp.status
            if resp.status != 200:
                self.error = f"HTTP {resp.status}: {resp.read(200)!r}"
                return
            event = b""
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.startswith(b"event: "):
                    event = line[7:].strip()
                elif line.startswith(b"data: ") and event == b"frames":
                    now = time.time_ns() / 1e6
                    self.times.append(time.monotonic())
                    frames = json.loads(line[6:])["frames"]
                    self.lat_ms.extend(now - f[0] for f in frames)
                    self.frames += len(frames)
        except OSError as e:
            if self.sock is not None and not getattr(self, "closing", False):
                self.error = f"{type(e).__name__}: {e}"

    def take(self) -> list[float]:
        lat, self.lat_ms = self.lat_ms, []
        return lat

    def close(self) -> None:
        self.closing = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.thread.ident is not None:
            self.thread.join(5)

    def max_gap(self, start: float, end: float) -> float:
        """The longest time without a frames event within [start, end], in s."""
        marks = [start] + [t for t in self.times if start <= t <= end] + [end]
        return max(b - a for a, b in zip(marks, marks[1:]))


def publish_for(pub: Publisher, rate_hz: float, seconds: float, rng: random.Random) -> int:
    """20-channel frames on an absolute schedule, each stamped with the wall clock at publish."""
    period = 1.0 / rate_hz
    n = max(1, round(seconds * rate_hz))
    first = time.monotonic() + period
    for i in range(n):
        wait = first + i * period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        pub.publish("drilling", frame_values(rng), ts=now_ms())
    time.sleep(0.5)  # the last frames reach every reader
    return n


# The dashboard is HTTPS with logins: every page and reader here logs in as a viewer.
LOGIN: dict[str, Any] = {}


def auth_header() -> dict[str, str]:
    return {"Authorization": LOGIN["login"].header("viewer")}


def connect(port: int) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                       context=ssl.create_default_context(cafile=str(LOGIN["login"].cert_file)))


class LoggedInBrowser:
    """new_page() in a context of its own that logs in and trusts the test certificate."""

    def __init__(self, browser) -> None:
        self.browser = browser

    def new_page(self, **options):
        return self.browser.new_context(ignore_https_errors=True, http_credentials=dict(
            zip(("username", "password"), LOGIN["login"].auth("viewer"))), **options).new_page()


def get_ms(conn: http.client.HTTPConnection, path: str) -> tuple[float, dict]:
    started = time.perf_counter()
    conn.request("GET", path, headers=auth_header())
    resp = conn.getresponse()
    body = resp.read()
    ms = (time.perf_counter() - started) * 1000
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {resp.status} {body[:300]!r}")
    return ms, json.loads(body)


def baseline_webroot(dest: Path) -> Path | None:
    """The webroot of BASELINE_REV under dest, or None when git cannot give it (no history)."""
    try:
        tar = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE_REV, "webroot"],
                             capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
    return dest / "webroot"


def task_seconds(cdp) -> float:
    """Chrome's TaskDuration: seconds the page's main thread has spent in tasks so far."""
    return next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration")


class LivePage:
    """One /live page of one web program, measured over a publishing phase."""

    def __init__(self, browser, port: int) -> None:
        self.page = browser.new_page(viewport={"width": 1600, "height": 1000})
        self.page.set_default_timeout(30_000)
        self.page.goto(f"https://127.0.0.1:{port}/live")
        self.page.evaluate(OPEN_PROBE)
        self.cdp = self.page.context.new_cdp_session(self.page)
        self.cdp.send("Performance.enable")

    def ready(self) -> bool:
        return bool(self.page.evaluate("() => window.__lat.length && rigtel.live.stats.draws > 0"))

    def start(self) -> None:
        self.page.evaluate(TAKE)
        self.page.evaluate(TAKE_LONG)
        self.before = self.page.evaluate(START_PAGE)
        self.task0, self.t0 = task_seconds(self.cdp), time.monotonic()

    def take(self) -> dict[str, Any]:
        busy = (task_seconds(self.cdp) - self.task0) / (time.monotonic() - self.t0)
        own = self.page.evaluate(TAKE_PAGE)
        a, b = self.before, own["stats"]
        draws = b["draws"] - a["draws"]
        return {"probe": self.page.evaluate(TAKE), "long": self.page.evaluate(TAKE_LONG), "busy": busy,
                "perf": own["perf"], "draws": draws,
                "draw_ms_mean": (b["drawMsTotal"] - a["drawMsTotal"]) / draws if draws else None}

    def close(self) -> None:
        self.page.close()


def latency_rows(label: str, cur: dict[str, Any], old: dict[str, Any] | None, bus: list[float],
                 raw: dict[str, Any], sent: int) -> list[dict[str, Any]]:
    """Rows for one publishing rate: the current page against the page before (or the bus)."""
    raw[label] = {"sent": sent, "bus_ms": bus, "current": cur, "before": old}
    rows: list[dict[str, Any]] = []
    perf = cur["perf"] or {}
    receipt = perf.get("receipt", [])
    before_receipt = old["probe"] if old else []
    long_note = lambda p: (f"long tasks {len(p['long'])}, longest {max(p['long']):.0f} ms"  # noqa: E731
                           if p["long"] else "no long tasks")
    for q, name in ((0.5, "p50"), (0.95, "p95")):
        row = {"metric": f"{label}: /live receipt, {name}", "unit": "ms",
               "appliance": stats([percentile(receipt, q)]) if receipt else None,
               "baseline": stats([percentile(before_receipt, q)]) if before_receipt else None,
               "error": len(receipt) < sent * 0.95}
        if name == "p95":
            row["target"] = {"on": "value", "op": "<=", "limit": 100}
            row["note"] = (f"current: in the page's feed (Web Worker), {len(receipt)}/{sent} frames, "
                           f"max {max(receipt, default=0):.0f} ms; baseline: the page before ({BASELINE_REV[:7]}), "
                           f"an EventSource on its main thread, {len(before_receipt)} frames"
                           + (f", max {max(before_receipt):.0f} ms" if before_receipt else " (not measured)")
                           + f"; bus alone p95 {percentile(bus, .95):.1f} ms")
        rows.append(row)
    for key, what in (("handled", "handled by the page script"), ("shown", "shown in the tiles"),
                      ("drawn", "drawn on its track")):
        values = perf.get(key, [])
        if not values:
            rows.append({"metric": f"{label}: /live {what}, p95", "unit": "ms", "appliance": None,
                         "baseline": None, "error": True, "note": "not measured"})
            continue
        rows.append({"metric": f"{label}: /live {what}, p95", "unit": "ms",
                     "appliance": stats([percentile(values, .95)]), "baseline": stats([percentile(bus, .95)]),
                     "note": f"p50 {percentile(values, .5):.0f} ms, max {max(values):.0f} ms, {len(values)} "
                             f"{'frame-tracks' if key == 'drawn' else 'frames'}; baseline: bus alone"})
    rows.append({"metric": f"{label}: main-thread probe, p95", "unit": "ms",
                 "appliance": stats([percentile(cur["probe"], .95)]) if cur["probe"] else None,
                 "baseline": stats([percentile(old["probe"], .95)]) if old and old["probe"] else None,
                 "note": "a second EventSource on the page's main thread: how long an event waits behind the "
                         f"page's work; current {long_note(cur)}"
                         + (f"; before {long_note(old)}" if old else "")})
    rows.append({"metric": f"{label}: main thread busy", "unit": "%",
                 "appliance": stats([100 * cur["busy"]]), "baseline": stats([100 * old["busy"]]) if old else None,
                 "note": "Chrome's TaskDuration over the phase / its length; baseline: the page before"})
    rows.append({"metric": f"{label}: main-thread ms per redraw", "unit": "ms",
                 "appliance": stats([cur["draw_ms_mean"]]) if cur["draw_ms_mean"] is not None else None,
                 "baseline": stats([old["draw_ms_mean"]]) if old and old["draw_ms_mean"] is not None else None,
                 "note": f"mean; current: one track's figure, {cur['draws']} redraws"
                         + (f"; before: the whole figure (Plotly.react), {old['draws']} redraws" if old else "")})
    return rows


def run(opts) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    why = missing_browser()
    if why:
        raise RuntimeError(why)
    say = opts.say
    phase_s = 6.0 if opts.quick else 20.0
    streams_s = 6.0 if opts.quick else 15.0
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="rigtel-bench-") as d:
        tmp = Path(d)
        db = tmp / "history.db"
        started = time.perf_counter()
        build_history(db)
        say(f"  history: 24 h x 20 channels at 1 Hz written in {time.perf_counter() - started:.1f} s, "
            f"{db.stat().st_size / MB:.0f} MB")
        old_root = baseline_webroot(tmp / "before")
        if old_root is None:
            say(f"  the page before ({BASELINE_REV[:7]}) is not in this tree's git history: measuring the current one only")
        programs = []
        readers: list[SseReader] = []
        LOGIN["login"] = make_web_login(tmp)
        broker = start_broker(tmp)
        programs.append(broker.program)
        try:
            webs: dict[str, Any] = {}
            for name, root in (("current", None), ("before", old_root)):
                if name == "before" and root is None:
                    continue
                web = start_program(["web", *broker.port_args(), *LOGIN["login"].args(),
                                     "--set", f"database_path={db}", "--set", f"data_dir={tmp}",
                                     "--set", "web_port=0", "--set", "web_http_port=-1",
                                     "--set", f"supervisor_socket={tmp / 'supervisor.sock'}",
                                     *(["--set", f"web_root={root}"] if root else [])], tmp)
                programs.append(web)
                m = web.wait_for(READY_WEB)
                webs[name] = {"program": web, "port": int(m.group(1))}
            current = webs["current"]
            with sync_playwright() as p, Publisher("bench", settings=broker.settings()) as pub, \
                    BusLatency(broker.settings()) as bus:
                browser = LoggedInBrowser(p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS))
                try:
                    quiet = browser.new_page()  # a JSON document: no script of the dashboard's runs
                    quiet.goto(f"https://127.0.0.1:{current['port']}/api/channels")
                    quiet.evaluate(OPEN_PROBE)
                    plain = SseReader(current["port"], 99)  # the web path without a browser
                    readers.append(plain)
                    plain.thread.start()
                    wait_subscribed(pub, bus)
                    rss_start = None  # taken once the program is warm: after its first /live phase

                    def open_page(name: str) -> LivePage:
                        page = LivePage(browser, webs[name]["port"])
                        deadline = time.monotonic() + 30
                        while not page.ready():  # the hub's subscription is up and the page draws
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"the {name} page never received and drew a frame")
                            pub.publish("drilling", frame_values(rng), ts=now_ms())
                            time.sleep(0.1)
                        time.sleep(1.0)  # let the first full draws pass
                        return page

                    for i, rate in enumerate((1, 10)):
                        results: dict[str, Any] = {}
                        order = [n for n in ("current", "before") if n in webs]
                        if i % 2:
                            order.reverse()
                        for name in order:
                            say(f"  latency: /live {name}, publishing at {rate} Hz for {phase_s:.0f} s ...")
                            page = open_page(name)
                            quiet.evaluate(TAKE)
                            plain.take()
                            bus.take()
                            page.start()
                            sent = publish_for(pub, rate, phase_s, rng)
                            results[name] = page.take()
                            page.close()
                            base = bus.take()
                            if name == "current":
                                results["quiet"], results["plain"], results["bus"] = quiet.evaluate(TAKE), plain.take(), base
                                if rss_start is None:
                                    rss_start = rss_mb(current["program"].proc.pid)
                            r = results[name]
                            receipt = (r["perf"] or {}).get("receipt") or r["probe"]
                            say(f"    receipt p95 {percentile(receipt, .95):.0f} ms ({len(receipt)}/{sent}), "
                                f"main-thread probe p95 {percentile(r['probe'], .95):.0f} ms, busy {100 * r['busy']:.0f} %, "
                                f"{r['draws']} redraws of {r['draw_ms_mean'] or 0:.0f} ms; bus p95 {percentile(base, .95):.1f} ms")
                        label = f"{rate} Hz x 20 ch"
                        rows += latency_rows(label, results["current"], results.get("before"), results["bus"], raw, sent)
                        for what, values, note in (
                                ("quiet page", results["quiet"], "the same probe in a page showing /api/channels (no dashboard script)"),
                                ("plain SSE client", results["plain"], "the same stream read by http.client in this process, no browser")):
                            if values:
                                rows.append({"metric": f"{label}: receipt p95, {what}", "unit": "ms",
                                             "appliance": stats([percentile(values, .95)]),
                                             "baseline": stats([percentile(results['bus'], .95)]),
                                             "note": f"{note}; p50 {percentile(values, .5):.0f} ms, max {max(values):.0f} ms"})

                    say(f"  streams: {STREAMS} more readers on the current web program, 10 Hz for {streams_s:.0f} s ...")
                    page = open_page("current")
                    # the closed pages' streams end when the server next writes to them: wait
                    # until only this page's two, the quiet page's and the plain reader's are left
                    conn = connect(current["port"])
                    deadline = time.monotonic() + 30
                    while get_ms(conn, "/api/system")[1]["bus"]["streams"] > 4:
                        if time.monotonic() > deadline:
                            raise RuntimeError("the closed pages' live streams were never released")
                        pub.publish("drilling", frame_values(rng), ts=now_ms())
                        time.sleep(0.2)
                    conn.close()
                    streamers = [SseReader(current["port"], i) for i in range(STREAMS)]
                    readers += streamers
                    for r in streamers:
                        r.thread.start()
                    deadline = time.monotonic() + 10
                    while not all(r.status for r in streamers) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    bus.take()
                    page.start()
                    t_start = time.monotonic()
                    sent = publish_for(pub, 10, streams_s, rng)
                    t_end = time.monotonic() - 0.5
                    loaded = page.take()
                    page.close()
                    base = bus.take()
                    rss_end = rss_mb(current["program"].proc.pid)
                    for r in streamers:
                        r.close()
                    rows += latency_rows(f"10 Hz x 20 ch, {STREAMS} more streams open", loaded, None, base, raw, sent)
                    counts = [r.frames for r in streamers]
                    gaps = [r.max_gap(t_start, t_end) for r in streamers]
                    errors = [r.error for r in streamers if r.error]
                    raw["streams"] = {"frames": counts, "max_gap_s": gaps, "errors": errors, "sent": sent}
                    say(f"    frames per stream min {min(counts)} median {statistics.median(counts):.0f} of {sent}; "
                        f"max gap {max(gaps):.2f} s" + (f"; errors: {errors[:3]}" if errors else ""))
                    rows.append({"metric": f"{STREAMS} streams: frames per stream (min)",
                                 "unit": "frames", "appliance": stats([min(counts)]), "baseline": None,
                                 "target": {"on": "value", "op": ">=", "limit": round(sent * 0.95)},
                                 "note": f"median {statistics.median(counts):.0f}, {sent} published at 10 Hz "
                                         f"over {streams_s:.0f} s; {STREAMS} readers + the /live page's 2 streams, "
                                         f"the quiet page's and the plain reader's: 24 open, the default "
                                         f"web_max_streams (web_threads 32)" + (f"; errors: {errors[:3]}" if errors else ""),
                                 "error": bool(errors)})
                    rows.append({"metric": f"{STREAMS} streams: longest gap, any stream",
                                 "unit": "s", "appliance": stats([max(gaps)]), "baseline": None,
                                 "target": {"on": "value", "op": "<=", "limit": STALL_S},
                                 "note": "longest time without a frames event on one stream while publishing"})
                finally:
                    browser.browser.close()

            say("  history: /api/series over HTTP vs read.series in this process ...")
            n = max(opts.runs, 5)
            conn = connect(current["port"])
            try:
                for label, hours in (("1 h", 1), ("24 h", 24)):
                    start, end = T0 + (24 - hours) * 3_600_000, T0 + 86_400_000
                    path = f"/api/series?channels={','.join(NAMES)}&from={start}&to={end}"
                    get_ms(conn, path)  # warm the page cache, like the reads after it
                    http_ms, local_ms, body = [], [], {}
                    for _ in range(n):
                        ms, body = get_ms(conn, path)
                        http_ms.append(ms)
                        ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                        t = time.perf_counter()
                        read.series(ro, NAMES, start, end)
                        local_ms.append((time.perf_counter() - t) * 1000)
                        ro.close()
                    points = max(len(c["ts"]) for c in body["channels"].values())
                    rows.append({"metric": f"GET /api/series, {label} x 20 channels", "unit": "ms",
                                 "appliance": stats(http_ms), "baseline": stats(local_ms),
                                 "target": {"on": "value", "op": "<=", "limit": 100} if hours == 24 else None,
                                 "note": f"{n} requests, keep-alive; resolution {body['resolution']}, {points} "
                                         f"points per channel; baseline: read.series on the same file here"})
                    if rows[-1]["target"] is None:
                        del rows[-1]["target"]
            finally:
                conn.close()

            raw["rss_web_mb"] = {"start": rss_start, "end": rss_end}
            rows.append({"metric": "RSS web, growth over the streaming phases", "unit": "MB",
                         "appliance": stats([rss_end - rss_start]), "baseline": None,
                         "note": f"VmRSS {rss_start:.1f} -> {rss_end:.1f} MB from the end of the current page's "
                                 f"first phase (warm) to the end of the streams phase; minutes, not the hour: "
                                 f"see web-soak"})
        finally:  # every step on its own: one failing must not leave programs running
            for r in readers:
                try:
                    r.close()
                except Exception:
                    pass
            codes = {}
            for prog in reversed(programs):
                try:
                    codes[prog.args[0] + str(len(codes))] = prog.stop()
                except AssertionError as e:
                    codes[prog.args[0] + str(len(codes))] = str(e)[:200]
            raw["exit_codes"] = codes
    return {"rows": rows, "raw": raw}
