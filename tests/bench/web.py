"""Web benchmark: publish -> browser latency, concurrent live streams, history API, web RSS.

Real programs on ephemeral loopback ports: one `rigtel broker` and two `rigtel web` (the
default `web_stream_hz=4`, and `web_stream_hz=50` so that coalescing does not dominate),
both serving a database of 24 h x 20 channels at 1 Hz written by `Writer`.

- Every web path is HTTPS with a login, as deployed: the TLS front in the web program,
  basic auth of a viewer. A plain SSE client straight to waitress's loopback port behind the
  front (the same app) gives what TLS adds.
- latency: the benchmark publishes 20-channel `drilling` frames with `Publisher`, each
  stamped ts = wall-clock ms at publish; a headless Chromium page on /live of each web
  program opens its own EventSource on /api/stream and records Date.now() - ts for every
  frame it receives (one machine, one clock); the same probe runs in a quiet page (a JSON
  document of the same origin) and in a plain http.client reader, to tell the browser's share
  from the server's. Baseline, the same frames in the same run:
  a `DataSubscriber` in this process (bus only), so the ratio is what the web path adds.
- streams: 20 more SSE readers (threads with http.client) on each web program while
  publishing at 10 Hz; each must keep receiving frames (no gap over STALL_S). The pages
  keep measuring, so this also gives the latency under that load.
- history: GET /api/series for 1 h and 24 h x 20 channels over HTTP (median of several),
  next to `read.series` on the same file in this process.
- RSS: VmRSS of each web program before and after the streaming phases (the benchmark's
  minutes, not the hour of the issue).
"""

from __future__ import annotations

import http.client
import ssl
import json
import random
import socket
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
from appliance.store.writer import Batch, Writer
from tests.browser import CHROMIUM, CHROMIUM_ARGS, READY_WEB, missing_browser
from tests.conftest import Collector, make_web_login, start_broker, start_program, wait_subscribed

NAME = "web"
DESCRIPTION = "publish -> browser latency, 20 live streams, history API times, web RSS"
CHANNELS = [c for c in CATALOGUE][:20]
NAMES = [c.mnemonic for c in CHANNELS]
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
STREAMS = 20
STALL_S = 2.0
MB = 1_000_000

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
    """One plain live stream in a thread: frame counts and arrival times of `frames` events.
    Over HTTPS through the TLS front, or with tls=False straight from waitress's loopback
    port behind it (the same app, to measure what TLS adds)."""

    def __init__(self, port: int, n: int, login=None, tls: bool = True) -> None:
        self.port = port
        self.login = login
        self.tls = tls
        self.times: list[float] = []  # time.monotonic() of each frames event
        self.lat_ms: list[float] = []  # wall clock at receipt - frame ts, per frame
        self.frames = 0
        self.status = 0
        self.error = ""
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=self.read, name=f"sse-{port}-{n}", daemon=True)

    def read(self) -> None:
        try:
            conn = connect(self.port, self.login, self.tls)
            conn.request("GET", "/api/stream", headers={"Accept": "text/event-stream",
                                                         "Authorization": self.login.header("viewer")})
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


def connect(port: int, login, tls: bool = True) -> http.client.HTTPConnection:
    if not tls:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                       context=ssl.create_default_context(cafile=str(login.cert_file)))


def get_ms(conn: http.client.HTTPConnection, path: str, login) -> tuple[float, dict]:
    started = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": login.header("viewer")})
    resp = conn.getresponse()
    body = resp.read()
    ms = (time.perf_counter() - started) * 1000
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {resp.status} {body[:300]!r}")
    return ms, json.loads(body)


def latency_rows(label: str, plain: dict[str, list[float]], quiet: dict[str, list[float]],
                 long: dict[str, list[float]], lat: dict[str, list[float]], bus: list[float],
                 raw: dict[str, Any], sent: int, note: str) -> list[dict[str, Any]]:
    """Rows for one publishing phase; every latency in ms, per frame."""
    rows = []
    raw[label] = {"sent": sent, "bus_ms": bus, **{f"page_{k}_ms": v for k, v in lat.items()},
                  **{f"plain_sse_{k}_ms": v for k, v in plain.items()},
                  **{f"quiet_page_{k}_ms": v for k, v in quiet.items()},
                  **{f"live_page_long_tasks_{k}_ms": v for k, v in long.items()}}
    for hz, values in lat.items():
        if not values:
            rows.append({"metric": f"latency {label}, web {hz} Hz", "unit": "ms", "appliance": None,
                         "baseline": None, "error": True, "note": "the page received no frames"})
            continue
        for q, name in ((0.5, "p50"), (0.95, "p95")):
            row = {"metric": f"latency {label}, web {hz} Hz, {name}", "unit": "ms",
                   "appliance": stats([percentile(values, q)]), "baseline": stats([percentile(bus, q)])}
            if name == "p95":
                row["target"] = {"on": "value", "op": "<=", "limit": 100}
                row["note"] = (f"{len(values)}/{sent} frames in the page, max {max(values):.0f} ms; "
                               f"baseline: bus only (DataSubscriber here), {len(bus)} frames. {note} "
                               + (f"/live's long tasks (redraws): {len(long[hz])}, longest {max(long[hz]):.0f} ms, "
                                  f"{sum(long[hz]) / 1000:.1f} s in all." if long.get(hz) else "No long tasks seen."))
                row["error"] = len(values) < sent * 0.95
            rows.append(row)
        if quiet.get(hz):
            rows.append({"metric": f"latency {label}, web {hz} Hz, p95, quiet page", "unit": "ms",
                         "appliance": stats([percentile(quiet[hz], 0.95)]), "baseline": stats([percentile(bus, 0.95)]),
                         "note": f"the same probe in a page showing /api/channels (no dashboard script); "
                                 f"p50 {percentile(quiet[hz], 0.5):.0f} ms, max {max(quiet[hz]):.0f} ms"})
        if plain.get(hz):
            rows.append({"metric": f"latency {label}, web {hz} Hz, p95, plain SSE client", "unit": "ms",
                         "appliance": stats([percentile(plain[hz], 0.95)]), "baseline": stats([percentile(bus, 0.95)]),
                         "note": f"the same stream read by http.client in this process, no browser; "
                                 f"p50 {percentile(plain[hz], 0.5):.0f} ms, max {max(plain[hz]):.0f} ms"})
    return rows


def run(opts) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    why = missing_browser()
    if why:
        raise RuntimeError(why)
    say = opts.say
    phase_s = 6.0 if opts.quick else 25.0
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
        programs = []
        readers: list[SseReader] = []
        login = make_web_login(tmp)
        broker = start_broker(tmp)
        programs.append(broker.program)
        try:
            webs: dict[str, Any] = {}
            for hz in ("4", "50"):
                extra = [] if hz == "4" else ["--set", f"web_stream_hz={hz}"]
                web = start_program(["web", *broker.port_args(), *login.args(), "--set", f"database_path={db}",
                                     "--set", f"data_dir={tmp}", "--set", "web_port=0", "--set", "web_http_port=-1",
                                     "--set", "web_max_streams=25",  # one more: the no-TLS reader
                                     "--set", f"supervisor_socket={tmp / 'supervisor.sock'}",
                                     *extra], tmp)
                programs.append(web)
                m = web.wait_for(READY_WEB)
                webs[hz] = {"program": web, "port": int(m.group(1)), "app_port": int(m.group(3))}
            with sync_playwright() as p, Publisher("bench", settings=broker.settings()) as pub, \
                    BusLatency(broker.settings()) as bus:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context(ignore_https_errors=True, http_credentials=dict(
                    zip(("username", "password"), login.auth("viewer"))))
                try:
                    pages, quiet_pages = {}, {}
                    for hz, w in webs.items():
                        page = context.new_page()
                        page.set_default_timeout(20_000)
                        page.goto(f"https://127.0.0.1:{w['port']}/live")
                        page.evaluate(OPEN_PROBE)
                        pages[hz] = page
                        quiet = context.new_page()  # a JSON document: no script of the dashboard's runs
                        quiet.goto(f"https://127.0.0.1:{w['port']}/api/channels")
                        quiet.evaluate(OPEN_PROBE)
                        quiet_pages[hz] = quiet
                    for hz, w in webs.items():  # the web path without a browser
                        w["plain"] = SseReader(w["port"], 99, login)
                        w["direct"] = SseReader(w["app_port"], 98, login, tls=False)
                        readers += [w["plain"], w["direct"]]
                        w["plain"].thread.start()
                        w["direct"].thread.start()
                    wait_subscribed(pub, bus)
                    # readiness: frames reach every page (the hubs' subscriptions have propagated)
                    deadline = time.monotonic() + 20
                    while not all(pg.evaluate("() => window.__lat.length") for pg in pages.values()):
                        if time.monotonic() > deadline:
                            raise RuntimeError("the pages never received a frame")
                        pub.publish("drilling", frame_values(rng), ts=now_ms())
                        time.sleep(0.1)
                    time.sleep(0.5)
                    for pg in (*pages.values(), *quiet_pages.values()):
                        pg.evaluate(TAKE)
                        pg.evaluate(TAKE_LONG)
                    for w in webs.values():
                        w["plain"].take()
                        w["direct"].take()
                    bus.take()
                    rss_start = {hz: rss_mb(w["program"].proc.pid) for hz, w in webs.items()}

                    for rate in (1, 10):
                        say(f"  latency: publishing at {rate} Hz for {phase_s:.0f} s ...")
                        sent = publish_for(pub, rate, phase_s, rng)
                        lat = {hz: pg.evaluate(TAKE) for hz, pg in pages.items()}
                        plain = {hz: w["plain"].take() for hz, w in webs.items()}
                        quiet = {hz: pg.evaluate(TAKE) for hz, pg in quiet_pages.items()}
                        long = {hz: pg.evaluate(TAKE_LONG) for hz, pg in pages.items()}
                        base = bus.take()
                        say("    " + ", ".join(f"web {hz} Hz p95 page {percentile(v, .95):.0f} ms ({len(v)}/{sent}), "
                                               f"plain SSE {percentile(plain[hz], .95):.0f} ms"
                                               for hz, v in lat.items() if v and plain[hz])
                            + f"; bus p95 {percentile(base, .95):.1f} ms")
                        rows += latency_rows(f"{rate} Hz x 20 ch", plain, quiet, long, lat, base, raw, sent,
                                             "The live page's own stream is open too.")
                        for hz, w in webs.items():  # what TLS adds: the same app, without the front
                            direct = w["direct"].take()
                            if plain[hz] and direct:
                                rows.append({"metric": f"latency {rate} Hz x 20 ch, web {hz} Hz, p95, through TLS "
                                                       f"vs plain HTTP to waitress", "unit": "ms",
                                             "appliance": stats([percentile(plain[hz], 0.95)]),
                                             "baseline": stats([percentile(direct, 0.95)]),
                                             "note": f"two plain SSE clients here: one through the TLS front, one "
                                                     f"straight to waitress's loopback port; p50 "
                                                     f"{percentile(plain[hz], 0.5):.1f} vs {percentile(direct, 0.5):.1f} ms"})

                    for w in webs.values():  # its stream slot goes to the readers below
                        w["direct"].close()
                    say(f"  streams: {STREAMS} more readers on each web program, 10 Hz for {streams_s:.0f} s ...")
                    for hz, w in webs.items():
                        w["readers"] = [SseReader(w["port"], i, login) for i in range(STREAMS)]
                        readers += w["readers"]
                    for w in webs.values():
                        for r in w["readers"]:
                            r.thread.start()
                    deadline = time.monotonic() + 10
                    while not all(r.status for r in readers) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    t_start = time.monotonic()
                    sent = publish_for(pub, 10, streams_s, rng)
                    t_end = time.monotonic() - 0.5
                    lat = {hz: pg.evaluate(TAKE) for hz, pg in pages.items()}
                    plain = {hz: w["plain"].take() for hz, w in webs.items()}
                    quiet = {hz: pg.evaluate(TAKE) for hz, pg in quiet_pages.items()}
                    long = {hz: pg.evaluate(TAKE_LONG) for hz, pg in pages.items()}
                    base = bus.take()
                    rss_end = {hz: rss_mb(w["program"].proc.pid) for hz, w in webs.items()}
                    for r in readers:
                        r.close()
                    readers.clear()
                    rows += latency_rows(f"10 Hz x 20 ch, {STREAMS} more streams open", plain, quiet, long, lat,
                                         base, raw, sent,
                                         f"{STREAMS} SSE readers in threads here on each web program.")
                    for hz, w in webs.items():
                        rs = w["readers"]
                        counts = [r.frames for r in rs]
                        gaps = [r.max_gap(t_start, t_end) for r in rs]
                        errors = [r.error for r in rs if r.error]
                        raw[f"streams_web_{hz}hz"] = {"frames": counts, "max_gap_s": gaps, "errors": errors,
                                                      "sent": sent}
                        say(f"    web {hz} Hz: frames per stream min {min(counts)} median "
                            f"{statistics.median(counts):.0f} of {sent}; max gap {max(gaps):.2f} s"
                            + (f"; errors: {errors[:3]}" if errors else ""))
                        rows.append({"metric": f"{STREAMS} streams, web {hz} Hz: frames per stream (min)",
                                     "unit": "frames", "appliance": stats([min(counts)]), "baseline": None,
                                     "target": {"on": "value", "op": ">=", "limit": round(sent * 0.95)},
                                     "note": f"median {statistics.median(counts):.0f}, {sent} published at 10 Hz "
                                             f"over {streams_s:.0f} s; {STREAMS} readers + the /live page's 2 streams, "
                                             f"the quiet page's and the plain reader's: 24 open, the default "
                                             f"web_max_streams (web_threads 32)"
                                             + (f"; errors: {errors[:3]}" if errors else ""),
                                     "error": bool(errors)})
                        rows.append({"metric": f"{STREAMS} streams, web {hz} Hz: longest gap, any stream",
                                     "unit": "s", "appliance": stats([max(gaps)]), "baseline": None,
                                     "target": {"on": "value", "op": "<=", "limit": STALL_S},
                                     "note": "longest time without a frames event on one stream while publishing"})
                finally:
                    browser.close()

            say("  history: /api/series over HTTP vs read.series in this process ...")
            n = max(opts.runs, 5)
            conn = connect(webs["4"]["port"], login)
            try:
                for label, hours in (("1 h", 1), ("24 h", 24)):
                    start, end = T0 + (24 - hours) * 3_600_000, T0 + 86_400_000
                    path = f"/api/series?channels={','.join(NAMES)}&from={start}&to={end}"
                    get_ms(conn, path, login)  # warm the page cache, like the reads after it
                    http_ms, local_ms, body = [], [], {}
                    for _ in range(n):
                        ms, body = get_ms(conn, path, login)
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

            for hz, w in webs.items():
                growth = rss_end[hz] - rss_start[hz]
                raw[f"rss_web_{hz}hz_mb"] = {"start": rss_start[hz], "end": rss_end[hz]}
                rows.append({"metric": f"RSS web {hz} Hz, growth over the streaming phases", "unit": "MB",
                             "appliance": stats([growth]), "baseline": None,
                             "note": f"VmRSS {rss_start[hz]:.1f} -> {rss_end[hz]:.1f} MB over "
                                     f"{2 * phase_s + streams_s:.0f} s of streaming (1 and 10 Hz, then "
                                     f"{STREAMS} extra streams); the benchmark's span, not an hour"})
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
