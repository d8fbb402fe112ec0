"""Shared fixtures: real programs on ephemeral ports, with readiness handshakes.

Programs are started as `python -m appliance ...` subprocesses, isolated from any
installed configuration (RIGTEL_CONFIG points at an empty ini file, the working folder
is a temporary one so no stray .env is read), and each fixture waits for the program's
`ready:` log line before handing it over. Nothing sleeps and hopes.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from appliance.bus import DataSubscriber, Publisher
from appliance.config import Config, load

REPO = Path(__file__).resolve().parents[1]
READY_BROKER = re.compile(r"ready: frontend (tcp://\S+) \(publishers\), backend (tcp://\S+) \(subscribers\)")


def clean_env(tmp: Path) -> dict[str, str]:
    """The environment for a program under test: no RIGTEL_* or prototype variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RIGTEL_") and k not in (
               "BROKER_FRONTEND_PORT", "BROKER_BACKEND_PORT", "FLASK_HOST", "FLASK_PORT",
               "FLASK_DEBUG", "DATABASE_PATH", "LOG_LEVEL", "LOG_FILE")}
    ini = tmp / "empty.ini"
    if not ini.exists():
        ini.write_text("[appliance]\n")
    env["RIGTEL_CONFIG"] = str(ini)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO)
    return env


@dataclass
class Program:
    """A running `python -m appliance ...` with its output collected line by line."""

    args: list[str]
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    _new: "queue.Queue[str | None]" = field(default_factory=queue.Queue)

    def _pump(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line)
            self._new.put(line)
        self.proc.stdout.close()  # type: ignore[union-attr]
        self._new.put(None)

    def wait_for(self, pattern: str | re.Pattern, timeout: float = 20) -> re.Match:
        """Block until an output line matches; fail with the output so far if it never does."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in list(self.lines):
            if m := rx.search(line):
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.args}: no line matching {rx.pattern!r} in {timeout}s; output:\n"
                                     + "".join(self.lines[-50:]))
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"{self.args} exited ({self.proc.wait()}) before {rx.pattern!r}; "
                                     "output:\n" + "".join(self.lines[-50:]))
            if m := rx.search(line):
                return m

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.args} did not stop within {timeout}s of {sig!r}")

    @property
    def output(self) -> str:
        return "".join(self.lines)


_STARTED: list[Program] = []


@pytest.fixture(autouse=True)
def _no_program_outlives_its_test():
    """A test that fails midway must not leave its programs running (ports, CPU, files).

    Only programs started during the test itself: wider-scoped fixtures start theirs before
    this fixture takes its mark, and stop them themselves."""
    mark = len(_STARTED)
    yield
    for program in _STARTED[mark:]:
        if program.proc.poll() is None:
            program.proc.kill()
            program.proc.wait(10)
    del _STARTED[mark:]


def start_program(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> Program:
    proc = subprocess.Popen([sys.executable, "-m", "appliance", *args], cwd=tmp,
                            env=env or clean_env(tmp), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    program = Program(list(args), proc)
    _STARTED.append(program)
    threading.Thread(target=program._pump, name=f"pump-{args[0]}", daemon=True).start()
    return program


@dataclass
class BrokerProcess:
    program: Program
    frontend: str
    backend: str
    tmp: Path

    @property
    def frontend_port(self) -> int:
        return int(self.frontend.rsplit(":", 1)[1])

    @property
    def backend_port(self) -> int:
        return int(self.backend.rsplit(":", 1)[1])

    def port_args(self) -> list[str]:
        return ["--set", f"broker_frontend_port={self.frontend_port}",
                "--set", f"broker_backend_port={self.backend_port}"]

    def settings(self, **more: str) -> Config:
        overrides = {"broker_frontend_port": str(self.frontend_port),
                     "broker_backend_port": str(self.backend_port), **more}
        return settings_for(self.tmp, overrides)


def settings_for(tmp: Path, overrides: dict[str, str]) -> Config:
    """Settings for in-process publishers and subscribers, isolated like the programs."""
    ini = tmp / "empty.ini"
    if not ini.exists():
        ini.write_text("[appliance]\n")
    return load(overrides, config_file=str(ini), env={}, dotenv="")


def start_broker(tmp: Path, frontend_port: int = 0, backend_port: int = 0,
                 *extra: str) -> BrokerProcess:
    program = start_program(["broker", "--set", f"broker_frontend_port={frontend_port}",
                             "--set", f"broker_backend_port={backend_port}", *extra], tmp)
    m = program.wait_for(READY_BROKER)
    return BrokerProcess(program, m.group(1), m.group(2), tmp)


@pytest.fixture
def broker(tmp_path: Path):
    b = start_broker(tmp_path, 0, 0, "--set", "bus_stats_s=0.5")
    yield b
    assert b.program.stop() == 0, b.program.output


class Collector(DataSubscriber):
    """A subscriber that keeps every envelope, running in its own thread."""

    def __init__(self, topics: list[str], settings: Config) -> None:
        super().__init__(topics=topics, settings=settings)
        self.envelopes: list = []
        self.gaps: list = []
        self.restarts: list = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self.start, name="collector", daemon=True)

    def on_envelope(self, envelope) -> None:
        with self.changed:
            self.envelopes.append(envelope)
            self.changed.notify_all()

    def on_gap(self, gap) -> None:
        self.gaps.append(gap)

    def on_restart(self, envelope) -> None:
        self.restarts.append(envelope)

    def on_reject(self, reject) -> None:
        super().on_reject(reject)
        with self.changed:
            self.changed.notify_all()

    def wait_until(self, condition: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what or condition}; "
                                         f"{len(self.envelopes)} envelopes, stats {dict(self.stats)}")
                self.changed.wait(min(left, 0.1))

    def wait_change(self, timeout: float) -> None:
        """Wait up to `timeout` s for anything to arrive (for loops that resend)."""
        with self.changed:
            self.changed.wait(timeout)

    def __enter__(self) -> "Collector":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.thread.join(5)

    def topics_seen(self) -> set[str]:
        return {e.topic for e in self.envelopes}


def wait_subscribed(publisher: Publisher, *collectors: Collector, timeout: float = 20) -> None:
    """Publish probes until every collector has one: the subscription has reached the broker.

    This is the readiness handshake for ZeroMQ's slow joiner: messages published before
    the subscription propagates are dropped by design.
    """
    deadline = time.monotonic() + timeout
    while True:
        publisher.publish("probe", {"probe": 1})
        if all(any(e.topic == "probe" and e.src == publisher.src for e in c.envelopes) for c in collectors):
            return
        if time.monotonic() > deadline:
            raise AssertionError("subscribers never received a probe: the bus is not connected")
        collectors[0].wait_change(0.05)


def wait_until(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.1):
    """Poll `condition` until it returns something true, and return that; fail after `timeout`.

    A database another program is still creating or has locked reads as not yet
    (sqlite3.OperationalError), so conditions can query the saver's database directly."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while True:
        try:
            got = condition()
        except sqlite3.OperationalError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


# -- logging in to the dashboard ---------------------------------------------------------


@dataclass
class WebLogin:
    """A users file with an admin and a viewer, and a self-signed certificate, for a web test.

    `args()` gives the --set options for `rigtel web`; `overrides()` the same for
    settings_for(); `header(role)` an Authorization header; `auth(role)` (name, password)."""

    users_file: Path
    cert_file: Path
    key_file: Path
    passwords: dict[str, str]  # role -> password; the user is named after the role

    def overrides(self) -> dict[str, str]:
        return {"users_file": str(self.users_file), "tls_cert_file": str(self.cert_file),
                "tls_key_file": str(self.key_file)}

    def args(self) -> list[str]:
        return [a for k, v in self.overrides().items() for a in ("--set", f"{k}={v}")]

    def auth(self, role: str = "admin") -> tuple[str, str]:
        return role, self.passwords[role]

    def header(self, role: str = "admin") -> str:
        import base64

        return "Basic " + base64.b64encode(":".join(self.auth(role)).encode()).decode()

    def client(self, app, role: str = "admin"):
        """A Flask test client that sends this role's credentials with every request."""
        c = app.test_client()
        c.environ_base["HTTP_AUTHORIZATION"] = self.header(role)
        return c


_CERTS: dict[str, tuple[bytes, bytes]] = {}


def make_web_login(tmp: Path) -> WebLogin:
    import secrets

    from appliance.security import certs, users

    folder = tmp / "security"
    folder.mkdir(exist_ok=True)
    if "pair" not in _CERTS:  # one key pair per test run: making one costs a little
        _CERTS["pair"] = certs.make_self_signed(["localhost"], ["127.0.0.1", "::1"])
    login = WebLogin(folder / "users.json", folder / "cert.pem", folder / "key.pem",
                     {"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)})
    certs.write_pair(login.cert_file, login.key_file, *_CERTS["pair"])
    for role, password in login.passwords.items():
        users.set_user(login.users_file, role, role, password)
    return login


@pytest.fixture
def web_login(tmp_path: Path) -> WebLogin:
    return make_web_login(tmp_path)
