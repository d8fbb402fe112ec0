"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

One appliance per module (broker, saver, web, simulator at 5 Hz × 10, all real programs on
ephemeral ports); every page is watched for requests leaving the server, console errors,
uncaught exceptions and CSP violations. Screenshots of each view go to tests/artifacts/.
Waits are on conditions in the page (wait_for_function / wait_for_selector), never sleeps.
The stale test stops the simulator, so it runs last.
"""

from __future__ import annotations

import csv
import json
import time
from datetime import datetime, timezone

import pytest

from appliance.bus import Publisher
from appliance.store import read
from appliance.store.schema import connect_reader
from tests.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, missing_browser, screenshot, start_stack, watch
from tests.conftest import Collector, wait_subscribed

# Conditions are arrow functions: a bare expression would be eval'ed in the page, which its CSP refuses.
pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or "")

TRACE = """name => {
  const gd = document.getElementById('live-tracks');
  const t = gd && gd.data ? gd.data.find(t => t.meta === name) : null;
  return t ? t.x.length : 0;
}"""
LAST_X = """name => {
  const gd = document.getElementById('live-tracks');
  const t = gd && gd.data ? gd.data.find(t => t.meta === name) : null;
  return t && t.x.length ? t.x[t.x.length - 1] : 0;
}"""
STATS = """() => Object.assign({}, rigtel.live.stats, {frames: rigtel.link.framesReceived, now: performance.now(),
  traces: document.getElementById('live-tracks').data.length})"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("browser"))
    yield s
    codes = s.stop()
    assert codes == {"simulator": 0, "web": 0, "saver": 0, "broker": 0}, s.web.output[-3000:]


@pytest.fixture(scope="module")
def browser(stack):  # after the stack, so it closes before the programs stop
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, stack):
    context = stack.new_context(browser, viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.watched = watch(pg, stack.url)
    yield pg
    csp = pg.evaluate("window.__csp || []")
    context.close()
    assert pg.watched.outside() == [], "the page loaded something from outside the server"
    assert pg.watched.errors == [] and csp == [], (pg.watched.errors, csp)


def wait_live(page) -> None:
    page.wait_for_selector('#link-state[data-state="live"]')


def test_live_tracks_draw_points_from_the_real_simulator(stack, page):
    started = time.monotonic()
    page.goto(stack.url + "/live")
    page.wait_for_function(f"() => ({TRACE})('HKLA') > 0")
    first_data_s = time.monotonic() - started
    n = page.evaluate(TRACE, "HKLA")
    page.wait_for_function(f"() => ({TRACE})('HKLA') > {n + 20}")  # new frames, from the stream, drawn
    wait_live(page)

    # tiles: the number and its unit; the rig state says the predictor is not there yet
    page.wait_for_function("() => document.querySelector('#tile-HKLA .num').textContent !== '—'")
    assert page.text_content("#tile-HKLA .tile-unit") == "klbf"
    assert page.text_content("#tile-DMEA .tile-unit") == "ft"
    assert page.text_content("#rig-state") == "rig state: not available (predictor not running)"
    assert page.is_hidden("#stale-banner")

    # how fast: frames in, redraws, points appended to the traces per second
    a = page.evaluate(STATS)
    page.wait_for_function(f"() => rigtel.live.stats.draws >= {a['draws'] + 4}")
    b = page.evaluate(STATS)
    seconds = (b["now"] - a["now"]) / 1000
    metrics = {
        "first_data_s": round(first_data_s, 2),
        "page_first_data_ms": round(b["firstDataMs"]),
        "history_ms": round(b["historyMs"] or 0),
        "redraws_per_s": round((b["draws"] - a["draws"]) / seconds, 2),
        "frames_per_s": round((b["frames"] - a["frames"]) / seconds, 1),
        "points_per_s": round((b["frames"] - a["frames"]) / seconds * b["traces"]),
        "points_on_screen": b["pointsDrawn"],
        "mean_draw_ms": round(b["drawMsTotal"] / b["draws"]),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "browser-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    assert metrics["redraws_per_s"] >= 0.8, metrics  # at least about once a second
    screenshot(page, "live")


def test_zoom_and_pan_survive_updates(stack, page):
    page.goto(stack.url + "/live")
    page.wait_for_function(f"() => ({TRACE})('HKLA') > 50")
    zoomed = page.evaluate("""() => {
      const gd = document.getElementById('live-tracks');
      const x = gd.data[0].x;
      return Plotly.relayout(gd, {'xaxis.range': [x[Math.floor(x.length / 4)], x[Math.floor(x.length / 2)]]})
        .then(() => gd.layout.xaxis.range.slice());
    }""")
    assert page.get_attribute("#follow", "aria-pressed") == "false"  # zooming pauses following
    last = page.evaluate(LAST_X, "HKLA")
    draws = page.evaluate("rigtel.live.stats.draws")
    page.wait_for_function(f"() => ({LAST_X})('HKLA') > {last} && rigtel.live.stats.draws > {draws + 1}")
    assert page.evaluate("document.getElementById('live-tracks').layout.xaxis.range") == zoomed

    page.click("#follow")  # back to live: the window follows the newest data again
    page.wait_for_function(f"""() => {{
      const r = document.getElementById('live-tracks').layout.xaxis.range;
      return r[1] !== {json.dumps(zoomed[1])};
    }}""")
    assert page.get_attribute("#follow", "aria-pressed") == "true"

    # the same with the mouse: a box zoom dragged across the top track
    box = page.locator('#live-tracks .nsewdrag[data-subplot="xy"]').bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y + 2, steps=5)
    page.mouse.up()
    page.wait_for_selector('#follow[aria-pressed="false"]')
    dragged = page.evaluate("document.getElementById('live-tracks').layout.xaxis.range")
    last = page.evaluate(LAST_X, "HKLA")
    draws = page.evaluate("rigtel.live.stats.draws")
    page.wait_for_function(f"() => ({LAST_X})('HKLA') > {last} && rigtel.live.stats.draws > {draws + 1}")
    assert page.evaluate("document.getElementById('live-tracks').layout.xaxis.range") == dragged


def test_alarm_appears_at_once_and_is_acknowledged_on_alerts(stack, page):
    page.goto(stack.url + "/live")
    wait_live(page)
    settings = stack.broker.settings()
    publisher = Publisher("test", settings=settings)
    try:
        with Collector(["probe"], settings) as probe:
            wait_subscribed(publisher, probe)
        publisher.publish("alert", {"id": "kick-test", "kind": "kick", "state": "active_unack", "priority": "high",
                                    "message": "pit gain 6 bbl in 4 min"})
    finally:
        publisher.close()
    page.wait_for_selector('#alarm-strip:not([hidden]) .alarm-item[data-id="kick-test"]')
    assert page.get_attribute("#alarm-strip", "data-level") == "unack"
    assert "pit gain 6 bbl in 4 min" in page.text_content("#alarm-strip")
    assert page.evaluate("getComputedStyle(document.getElementById('alarm-strip')).animationName") == "alarm-pulse"
    page.emulate_media(reduced_motion="reduce")
    assert page.evaluate("getComputedStyle(document.getElementById('alarm-strip')).animationName") == "none"
    screenshot(page, "live-alarm")

    # to Alerts by keyboard, as the nav must allow
    page.focus("#nav-alerts")
    page.keyboard.press("Enter")
    page.wait_for_url("**/alerts")
    page.wait_for_selector('#alerts-history tr[data-id="kick-test"]')  # the saver has stored it
    page.click("#ack-kick-test")
    page.wait_for_selector('#alerts-active tr[data-id="kick-test"][data-state="active_ack"]')
    # the acknowledgement went over the bus and the saver stored it: history comes from the database
    page.wait_for_selector('#alerts-history tr[data-id="kick-test"][data-state="active_ack"]')
    stored = {a["id"]: a["state"] for a in page.request.get(stack.url + "/api/alerts?state=active").json()}
    assert stored["kick-test"] == "active_ack"
    page.wait_for_selector('#alarm-strip[data-level="ack"]')
    screenshot(page, "alerts")


def test_history_loads_and_export_downloads_the_rows_stored(stack, page):
    page.goto(stack.url + "/analytics")
    page.wait_for_selector("#history-chart[data-loaded]")
    assert page.evaluate("document.getElementById('history-chart').data.find(t => t.meta === 'HKLA').x.length") > 0
    page.wait_for_selector("#corr-table")
    page.wait_for_selector("#performance[data-loaded]")  # KPIs over the same range, said to be estimates
    assert "predictor not running" in page.text_content("#kpi-source")
    assert page.evaluate("document.getElementById('kpi-activity-chart').data[0].y.length") == 7
    screenshot(page, "analytics")

    conn = connect_reader(str(stack.db))
    try:
        (newest,) = conn.execute("SELECT max(ts) FROM samples").fetchone()
        end = newest // 1000 * 1000
        start = end - 20_000
        expected = list(read.iter_rows(conn, ["DMEA", "HKLA"], start, end))
    finally:
        conn.close()
    assert len(expected) > 50
    for box in page.query_selector_all("#channel-checks input:checked"):
        box.uncheck()
    page.check("#ch-HKLA")
    page.check("#ch-DMEA")
    utc = lambda ms: datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")  # noqa: E731
    page.fill("#range-from", utc(start))
    page.fill("#range-to", utc(end))
    loaded = page.get_attribute("#history-chart", "data-loaded")
    page.click("#load")
    page.wait_for_function(f"() => document.getElementById('history-chart').dataset.loaded !== '{loaded}'")
    assert "raw samples" in page.text_content("#history-resolution")
    page.wait_for_selector("#corr-table")
    screenshot(page, "analytics-range")

    with page.expect_download() as download:
        page.click("#export")
    with open(download.value.path(), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time_utc", "ts_ms", "DMEA [ft]", "HKLA [klbf]"]
    assert [int(r[1]) for r in rows[1:]] == [ts for ts, _ in expected]
    assert [[float(v) if v else None for v in r[2:]] for r in rows[1:]] == [values for _, values in expected]

    from appliance.sources.files import open_log  # the same rows as LAS, chosen in the page
    page.select_option("#export-format", "las")
    with page.expect_download() as download:
        page.click("#export")
    assert download.value.suggested_filename.endswith(".las")
    back = list(open_log(download.value.path(), "las").rows())
    assert back == [(ts, {n: v for n, v in zip(["DMEA", "HKLA"], values) if v is not None})
                    for ts, values in expected]


def test_system_view_shows_programs_storage_and_disk(stack, page):
    page.goto(stack.url + "/system")
    page.wait_for_selector("body[data-system-loaded]")
    assert "no supervisord control socket" in page.text_content("#programs-error")
    stored = len(page.request.get(stack.url + "/api/channels").json())
    assert f"channels stored{stored}" in page.text_content("#db-facts")
    assert "free disk" in page.text_content("#disk-facts")
    loaded = page.get_attribute("body", "data-system-loaded")
    page.wait_for_function(f"() => document.body.dataset.systemLoaded !== '{loaded}'")  # it refreshes by itself
    assert "/s" in page.text_content("#bus-facts")  # rates, from two refreshes
    screenshot(page, "system")


def test_no_page_loads_anything_from_outside_or_breaks_the_csp(stack, page):
    ready = {"live": f"() => ({TRACE})('HKLA') > 0",
             "analytics": "() => !!document.querySelector('#history-chart[data-loaded]')",
             "alerts": "() => document.getElementById('history-status').textContent.includes('event')",
             "system": "() => !!document.body.dataset.systemLoaded"}
    for name, condition in ready.items():
        page.goto(f"{stack.url}/{name}")
        page.wait_for_function(condition)
        assert page.evaluate("window.__csp") == [], name
    assert page.watched.outside() == []
    assert page.watched.errors == []
    assert any(u.endswith("/static/vendor/plotly-cartesian.min.js") for u in page.watched.requests)


def test_login_over_https_and_log_out(stack, browser):
    """Without Playwright answering the login box: credentials enter the browser's own cache
    the way a login does, the pages work, and the Log out request (what common.js sends)
    makes the browser forget them."""
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(ignore_https_errors=True)
    try:
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        pg.goto(stack.url + "/healthz")
        xhr = """([path, name, password]) => new Promise(resolve => {
          const xhr = new XMLHttpRequest();
          xhr.open('GET', path, true, name, password);
          xhr.onloadend = () => resolve(xhr.status);
          xhr.send();
        })"""
        assert pg.evaluate(xhr, ["/api/me", *stack.login.auth("viewer")]) == 200
        assert pg.goto(stack.url + "/live").status == 200  # the browser keeps the login for the pages
        pg.wait_for_function("() => document.getElementById('who').textContent === 'viewer (viewer)'")
        assert pg.get_attribute("#logout", "href") == "/logout"
        # rigtel.logout(): the placeholder user, accepted on /logout only, replaces the password
        assert pg.evaluate(xhr, ["/logout", "logged-out", "x1"]) == 200
        # the next page is asked to log in (headless Chromium has no login box to show)
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            pg.goto(stack.url + "/live")
    finally:
        context.close()


def test_stale_state_shows_when_the_simulator_stops(stack, page):
    page.goto(stack.url + "/live")
    wait_live(page)
    assert stack.simulator.stop() == 0
    page.wait_for_selector('#link-state[data-state="stale"]')
    assert page.text_content("#stale-banner").startswith("DATA STALE")
    assert page.is_visible("#stale-banner")
    screenshot(page, "live-stale")
