"""The threshold editor in a real browser (Debian's Chromium via Playwright) against the real
programs: the page's PUT goes through the web program onto the bus, the saver stores it, and
the page shows it in force only once it reads it back from storage."""

from __future__ import annotations

import pytest

from appliance.store import read
from appliance.store.schema import connect_reader
from tests.browser import CHROMIUM, CHROMIUM_ARGS, missing_browser, screenshot, start_stack, watch

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or "")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("thresholds"))
    yield s
    assert s.stop() == {"simulator": 0, "web": 0, "saver": 0, "broker": 0}, s.web.output[-3000:]


def test_an_operator_edits_a_threshold_and_sees_it_in_force(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = stack.new_context(browser, viewport={"width": 1600, "height": 1100})  # an admin
            page = context.new_page()
            page.set_default_timeout(30_000)
            watched = watch(page, stack.url)
            page.goto(stack.url + "/alerts")
            page.wait_for_selector('#th-channel option[value="TVA"]', state="attached")
            page.select_option("#th-channel", "TVA")
            assert "plausible range 0..10000 bbl" in page.text_content("#th-range")

            # the page refuses limits out of order before sending anything
            page.fill("#th-h", "900")
            page.fill("#th-hh", "850")
            page.click("#th-save")
            page.wait_for_selector("#th-status.error")
            assert "H (900) must be below HH (850)" in page.text_content("#th-status")

            # the server refuses what only it can check (the plausible range) with its reason
            page.fill("#th-hh", "20000")
            page.click("#th-save")
            page.wait_for_function("() => document.getElementById('th-status').textContent.includes('plausible')")
            assert page.text_content("#th-status").startswith("Not saved: HH 20000 bbl is outside")

            page.fill("#th-hh", "950")
            page.fill("#th-deadband", "3")
            page.select_option("#th-priority", "high")
            page.click("#th-save")
            page.wait_for_selector('#th-status[data-saved="TVA"]', timeout=60_000)
            assert "In force for TVA: H 900 bbl, HH 950 bbl" in page.text_content("#th-status")
            row = page.locator('#thresholds-table tr[data-channel="TVA"] td')
            assert row.all_text_contents()[:8] == ["TVA", "bbl", "—", "—", "900", "950", "3", "high"]
            screenshot(page, "alerts-thresholds")

            # what the page says is in force is what is stored
            db = connect_reader(stack.db)
            try:
                stored = read.current_thresholds(db)["TVA"]
            finally:
                db.close()
            assert (stored["h"], stored["hh"], stored["deadband"], stored["priority"]) == (900.0, 950.0, 3.0, "high")

            # Edit from the table brings the setting back into the form; switching off clears it
            page.select_option("#th-channel", "SPPA")
            page.click('#thresholds-table button.edit[data-channel="TVA"]')
            assert page.input_value("#th-h") == "900" and page.input_value("#th-hh") == "950"
            page.evaluate("() => { delete document.getElementById('th-status').dataset.saved; }")
            page.click("#th-clear")
            page.wait_for_selector('#th-status[data-saved="TVA"]', timeout=60_000)
            assert "all limits off" in page.text_content("#th-status")

            csp = page.evaluate("window.__csp || []")
            # Chromium logs the deliberately refused PUT above; nothing else may go wrong
            errors = [e for e in watched.errors if "status of 400" not in e]
            assert sum("status of 400" in e for e in watched.errors) == 1
            assert watched.outside() == [] and errors == [] and csp == [], (watched.errors, csp)
            context.close()
        finally:
            browser.close()
