"""Web soak: the web program's memory over minutes of live streaming.

One `rigtel broker` and one `rigtel web` on ephemeral loopback ports (database: an empty
one, the live path does not need history). This process publishes 20-channel `drilling`
frames at 10 Hz; a headless Chromium keeps /live open (its feed and its redraws), and
STREAMS plain SSE readers stay connected. VmRSS of the web program is sampled every
SAMPLE_S; the result is its growth from the end of the first minute (warm: caches, thread
stacks, the hub's queues filled) to the end, and the least-squares slope over that span in
MB per hour. `--quick` soaks 1.5 minutes, otherwise 5; the issue's hour is a matter of
running it longer (SOAK_MIN=60 in the environment), and `make soak`'s rate of SOAK_HZ=100.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.bus import Publisher
from tests.bench.web import LOGIN, LoggedInBrowser, SseReader, frame_values, now_ms, rss_mb, stats
from tests.browser import CHROMIUM, CHROMIUM_ARGS, READY_WEB, missing_browser
from tests.conftest import Collector, make_web_login, start_broker, start_program, wait_subscribed

NAME = "web-soak"
DESCRIPTION = "web program RSS over minutes of streaming to /live and 10 SSE readers at 10 Hz"
STREAMS = 10
SAMPLE_S = 10.0
RATE_HZ = 10
HEAP = "() => performance.memory ? performance.memory.usedJSHeapSize / 1e6 : 0"


def slope_mb_per_h(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    stt = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / stt * 3600 if stt else 0.0


def run(opts) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    why = missing_browser()
    if why:
        raise RuntimeError(why)
    minutes = float(os.environ.get("SOAK_MIN") or (1.5 if opts.quick else 5))
    rate_hz = float(os.environ.get("SOAK_HZ") or RATE_HZ)
    rng = random.Random(3)
    samples: list[tuple[float, float]] = []
    heap: list[tuple[float, float]] = []  # the /live page's JS heap, MB (Chrome's performance.memory)
    with tempfile.TemporaryDirectory(prefix="rigtel-soak-") as d:
        tmp = Path(d)
        LOGIN["login"] = make_web_login(tmp)  # HTTPS with logins, as tests/bench/web.py
        broker = start_broker(tmp)
        programs = [broker.program]
        readers: list[SseReader] = []
        try:
            web = start_program(["web", *broker.port_args(), *LOGIN["login"].args(),
                                 "--set", f"database_path={tmp / 'rigtel.db'}",
                                 "--set", f"data_dir={tmp}", "--set", "web_port=0", "--set", "web_http_port=-1",
                                 "--set", f"supervisor_socket={tmp / 'supervisor.sock'}"], tmp)
            programs.append(web)
            port = int(web.wait_for(READY_WEB).group(1))
            with sync_playwright() as p, Publisher("soak", settings=broker.settings()) as pub, \
                    Collector(["probe"], broker.settings()) as probe:
                wait_subscribed(pub, probe)
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = LoggedInBrowser(browser).new_page(viewport={"width": 1600, "height": 1000})
                    page.goto(f"https://127.0.0.1:{port}/live")
                    readers = [SseReader(port, i) for i in range(STREAMS)]
                    for r in readers:
                        r.thread.start()
                    opts.say(f"  soaking {minutes:g} min: /live and {STREAMS} SSE readers, {rate_hz:g} Hz x 20 channels ...")
                    start = time.monotonic()
                    next_sample = start
                    period = 1.0 / rate_hz
                    i = 0
                    while time.monotonic() - start < minutes * 60:
                        wait = start + i * period - time.monotonic()
                        if wait > 0:
                            time.sleep(wait)
                        pub.publish("drilling", frame_values(rng), ts=now_ms())
                        i += 1
                        if time.monotonic() >= next_sample:
                            samples.append((time.monotonic() - start, rss_mb(web.proc.pid)))
                            heap.append((time.monotonic() - start, page.evaluate(HEAP)))
                            next_sample += SAMPLE_S
                    samples.append((time.monotonic() - start, rss_mb(web.proc.pid)))
                    drawn = page.evaluate("rigtel.live.stats.draws")
                    heap.append((time.monotonic() - start, page.evaluate(HEAP)))
                finally:
                    browser.close()
            counts = [r.frames for r in readers]
            errors = [r.error for r in readers if r.error]
        finally:
            for r in readers:
                r.close()
            codes = {prog.args[0]: prog.stop() for prog in reversed(programs)}
    warm = [(t, v) for t, v in samples if t >= 60] or samples
    warm_heap = [(t, v) for t, v in heap if t >= 60] or heap
    growth = warm[-1][1] - warm[0][1]
    rows = [
        {"metric": f"RSS web, growth after the first minute ({minutes:g} min soak)", "unit": "MB",
         "appliance": stats([growth]), "baseline": None,
         "note": f"VmRSS {samples[0][1]:.1f} at start, {warm[0][1]:.1f} at {warm[0][0]:.0f} s, {warm[-1][1]:.1f} at "
                 f"{warm[-1][0]:.0f} s, peak {max(v for _, v in samples):.1f}; {i} frames published, readers got "
                 f"min {min(counts)}; /live made {drawn} track redraws"
                 + (f"; errors {errors[:2]}" if errors else ""),
         "error": bool(errors) or any(codes.values())},
        {"metric": "RSS web, trend after the first minute", "unit": "MB/h",
         "appliance": stats([slope_mb_per_h(warm)]), "baseline": None,
         "note": f"least squares over {len(warm)} samples every {SAMPLE_S:g} s"},
        {"metric": "/live page JS heap, growth after the first minute", "unit": "MB",
         "appliance": stats([warm_heap[-1][1] - warm_heap[0][1]]), "baseline": None,
         "note": f"usedJSHeapSize {heap[0][1]:.1f} at start, {warm_heap[0][1]:.1f} at {warm_heap[0][0]:.0f} s, "
                 f"{warm_heap[-1][1]:.1f} at the end (the page's buffers are trimmed to the window; "
                 f"Chrome quantizes this figure); trend {slope_mb_per_h(warm_heap):.1f} MB/h"},
    ]
    return {"rows": rows, "raw": {"samples": samples, "page_heap": heap, "frames_per_reader": counts,
                                  "exit_codes": codes}}
