"""`make run` for real: `rigtel dev` renders the supervisord template into a prefix and runs
every program under supervisord; they come up, data flows, a killed program comes back, and
Ctrl-C stops everything cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import clean_env

PROGRAMS = {"broker", "saver", "predictor", "source", "logger", "maintenance", "web", "program-alerts"}
# wits0-out is not among them: no WITS0 output configured, so it is left out


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def supervisorctl(conf: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "supervisorctl"), "-c", str(conf), *args],
                          capture_output=True, text=True, timeout=30)


def states(conf: Path) -> dict[str, tuple[str, str]]:
    out = supervisorctl(conf, "status").stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def wait_until(condition, timeout: float, what: str, detail=lambda: "", interval: float = 0.2):
    """Poll a condition that has no event to wait on (supervisord state), with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; {detail()}")
        time.sleep(interval)


@pytest.fixture
def dev_run(tmp_path: Path):
    prefix = tmp_path / "dev"
    etc = prefix / "etc/rigtel"
    etc.mkdir(parents=True)
    frontend, backend, web, web_http = free_ports(4)
    (etc / "appliance.ini").write_text(
        "[appliance]\nrig_id = test-rig\n"
        f"data_dir = {prefix}/var/lib/rigtel\ndatabase_path = {prefix}/var/lib/rigtel/rigtel.db\n"
        f"broker_frontend_port = {frontend}\nbroker_backend_port = {backend}\nweb_port = {web}\n"
        f"web_http_port = {web_http}\n"
        f"supervisor_socket = {prefix}/run/rigtel/supervisor.sock\n"
        "simulator_rate_hz = 5\nsimulator_speed = 20\nlogger_summary_s = 1\n")
    env = clean_env(tmp_path)
    del env["RIGTEL_CONFIG"]  # the rendered supervisord.conf passes --config to every program
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "dev", "--prefix", str(prefix)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    conf = etc / "supervisord.conf"
    try:
        yield proc, conf, prefix, web
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        proc.stdout.close()


def test_make_run_brings_every_program_up_restarts_a_killed_one_and_stops_cleanly(dev_run):
    proc, conf, prefix, web_port = dev_run
    log_dir = prefix / "var/log/rigtel"
    wait_until(lambda: set(states(conf)) == PROGRAMS and all(
        states(conf)[p][0] == "RUNNING" for p in PROGRAMS), 45, "every program RUNNING",
        lambda: supervisorctl(conf, "status").stdout)

    # the simulator's data reaches the logger through the broker
    def logger_saw_drilling():
        text = (log_dir / "logger.log").read_text() if (log_dir / "logger.log").exists() else ""
        return re.search(r"drilling: [\d.]+ msg/s [\d.]+ frames/s from test-rig\.simulator", text)
    wait_until(logger_saw_drilling, 30, "drilling traffic in logger.log")

    # ... and the saver's database
    db = prefix / "var/lib/rigtel/rigtel.db"

    def stored_frames() -> int:
        import sqlite3
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                return conn.execute("SELECT coalesce(sum(messages), 0) FROM streams "
                                    "WHERE src = 'test-rig.simulator' AND topic = 'drilling'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
    wait_until(lambda: stored_frames() > 0, 30, "simulator frames in the database")

    # the dashboard answers over HTTPS with the dev admin `rigtel dev` made and printed, and
    # its System view sees every program through supervisord
    import base64
    import json
    import ssl
    import urllib.request
    etc = prefix / "etc/rigtel"
    password = (etc / "dev-admin-password").read_text().strip()
    assert (etc / "dev-admin-password").stat().st_mode & 0o777 == 0o600
    assert (etc / "users.json").stat().st_mode & 0o777 == 0o600
    assert (etc / "tls/key.pem").stat().st_mode & 0o777 == 0o600
    context = ssl.create_default_context(cafile=str(etc / "tls/cert.pem"))
    request = urllib.request.Request(f"https://127.0.0.1:{web_port}/api/system", headers={
        "Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=10, context=context) as r:
        system = json.load(r)
    assert system["tls"]["self_signed"] and not system["tls"]["expiring"]
    assert {p["name"]: p["state"] for p in system["programs"]} == {p: "RUNNING" for p in PROGRAMS}
    assert system["database"]["channels"] >= 20

    # kill -9 the broker: supervisord restarts it and data flows again
    pid = int(re.search(r"pid (\d+)", states(conf)["broker"][1]).group(1))
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: states(conf)["broker"][0] == "RUNNING"
               and f"pid {pid}," not in states(conf)["broker"][1], 30, "the broker back, with a new pid")
    size = (log_dir / "logger.log").stat().st_size
    wait_until(lambda: "drilling:" in (log_dir / "logger.log").read_text()[size:], 30,
               "drilling traffic after the broker restart")

    # Ctrl-C: supervisord stops every program with SIGTERM; each exits 0 and says so
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    out = proc.stdout.read()
    assert "make status" in out and str(log_dir) in out  # it told the user how to watch it
    assert f"https://127.0.0.1:{web_port}/" in out and f"admin / {password}" in out  # and how to log in
    supervisord_log = (log_dir / "supervisord.log").read_text()
    for program in PROGRAMS:
        assert re.search(rf"stopped: {program} \(exit status 0\)", supervisord_log), supervisord_log[-3000:]
        assert "stopped" in (log_dir / f"{program}.log").read_text().splitlines()[-1]


def test_make_run_refuses_busy_ports_with_instructions(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        prefix = tmp_path / "dev"
        (prefix / "etc/rigtel").mkdir(parents=True)
        (prefix / "etc/rigtel/appliance.ini").write_text(
            f"[appliance]\nbroker_frontend_port = {port}\nbroker_backend_port = {free_ports(1)[0]}\n")
        env = clean_env(tmp_path)
        del env["RIGTEL_CONFIG"]
        run = subprocess.run([sys.executable, "-m", "appliance", "dev", "--prefix", str(prefix)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert run.returncode == 1
    assert f"127.0.0.1:{port} (broker_frontend_port) already in use" in run.stderr
    assert f":({port})" in run.stderr and "ss -ltnp" in run.stderr


@pytest.mark.parametrize("signum, terminal", [(signal.SIGHUP, True), (signal.SIGINT, True), (signal.SIGTERM, False)])
def test_closing_the_terminal_stops_make_run_like_ctrl_c(tmp_path, signum, terminal):
    """supervisord takes SIGHUP as "reload": run in the terminal's session, a closed
    terminal restarted every program and left them running. `rigtel dev` keeps it in a
    session of its own and turns SIGHUP, like Ctrl-C, into a clean shutdown; and as its
    output comes through rigtel dev, a terminal that has gone away (closed before the
    signal) does not kill it halfway through stopping the programs."""
    import pty
    started = tmp_path / "started"
    program = f"import pathlib, time; pathlib.Path({str(started)!r}).open('a').write('x'); time.sleep(600)"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"""[supervisord]
logfile = {tmp_path}/supervisord.log
pidfile = {tmp_path}/supervisord.pid

[unix_http_server]
file = {tmp_path}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{tmp_path}/supervisor.sock

[program:sleeper]
command = {sys.executable} -c "{program}"
startsecs = 0
stopwaitsecs = 5
""")
    supervisord = str(Path(sys.executable).parent / "supervisord")
    master, slave = pty.openpty() if terminal else (None, None)
    parent = subprocess.Popen([sys.executable, "-c", "import sys; from appliance.ops.dev import supervise; "
                               f"sys.exit(supervise([{supervisord!r}, '-n', '-c', {str(conf)!r}]))"],
                              env=clean_env(tmp_path), stdout=slave, stderr=slave)
    try:
        wait_until(lambda: started.exists() and states(conf).get("sleeper", ("",))[0] == "RUNNING", 30,
                   "the program running under supervisord")
        supervisord_pid = int((tmp_path / "supervisord.pid").read_text())
        if terminal:
            os.close(slave)
            os.close(master)  # the terminal goes away: writes to it fail from now on
            master = slave = None
        parent.send_signal(signum)
        assert parent.wait(30) == 0
        with pytest.raises(ProcessLookupError):
            os.kill(supervisord_pid, 0)  # supervisord is gone, not reloading
        assert started.read_text() == "x"  # the program was not started again
        assert "received SIGTERM indicating exit request" in (tmp_path / "supervisord.log").read_text()
    finally:
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
        if parent.poll() is None:
            parent.kill()
        subprocess.run(["pkill", "-f", str(conf)], check=False)
