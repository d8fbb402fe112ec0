"""Helpers for the browser tests: the whole appliance on ephemeral ports and a watched page.

`start_stack` starts a broker, the saver, the web program and the simulator as real
programs; `watch` records everything a page asks for and every console message, CSP
violation and uncaught error, so each test can check that nothing left the server and
nothing went wrong.

Chromium comes from Debian (`/usr/bin/chromium`, installed by `make browser-deps`); Playwright
only drives it and never downloads a browser of its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import BrokerProcess, Program, WebLogin, make_web_login, start_broker, start_program

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# The web program's readiness line: the HTTPS port, the redirecting HTTP port (if any) and
# the loopback port of waitress behind the TLS front.
READY_WEB = re.compile(r"ready: dashboard on https://\S+:(\d+)/ \((?:http://\S+:(\d+)/ redirects; )?"
                       r"app on 127\.0\.0\.1:(\d+)")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return (f"{CHROMIUM} is missing: run `make browser-deps` as root "
                "(apt-get install chromium) to run the browser tests")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: `make test` installs requirements-dev.lock"
    return None


@dataclass
class Stack:
    """The appliance's programs for one test module."""

    tmp: Path
    broker: BrokerProcess
    saver: Program
    web: Program
    simulator: Program
    db: Path
    url: str
    login: WebLogin

    def new_context(self, browser, role: str = "admin", **options):
        """A browser context logged in as `role` that trusts the test certificate."""
        return browser.new_context(http_credentials=dict(zip(("username", "password"), self.login.auth(role))),
                                   ignore_https_errors=True, **options)

    def common(self) -> list[str]:
        return [*self.broker.port_args(), "--set", f"database_path={self.db}", "--set", f"data_dir={self.tmp}"]

    def stop(self) -> dict[str, int]:
        codes = {}
        for name in ("simulator", "web", "saver"):
            codes[name] = getattr(self, name).stop()
        codes["broker"] = self.broker.program.stop()
        return codes


def start_stack(tmp: Path) -> Stack:
    broker = start_broker(tmp, 0, 0)
    db = tmp / "rigtel.db"
    common = [*broker.port_args(), "--set", f"database_path={db}", "--set", f"data_dir={tmp}"]
    saver = start_program(["saver", *common], tmp)
    saver.wait_for("ready:")
    login = make_web_login(tmp)
    web = start_program(["web", *common, "--set", "web_port=0", "--set", "web_http_port=-1", *login.args(),
                         "--set", f"supervisor_socket={tmp / 'supervisor.sock'}"], tmp)
    m = web.wait_for(READY_WEB)
    url = f"https://127.0.0.1:{m.group(1)}"
    simulator = start_program(["simulate", *common, "--rate", "5", "--speed", "10"], tmp)
    simulator.wait_for("ready:")
    return Stack(tmp, broker, saver, web, simulator, db, url, login)


# Runs in the page before its own scripts: CSP violations are events, not console messages.
RECORD_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' at ' + e.sourceFile + ':' + e.lineNumber);
});
"""


@dataclass
class Watched:
    """What a page did: requests, console errors, uncaught exceptions."""

    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        return [u for u in self.requests if not (u.startswith(self.origin + "/") or u == self.origin)]


def watch(page, origin: str) -> Watched:
    w = Watched(origin)
    page.on("request", lambda r: w.requests.append(r.url))
    page.on("console", lambda m: w.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: w.errors.append(f"uncaught: {e}"))
    page.add_init_script(RECORD_CSP)
    return w


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
