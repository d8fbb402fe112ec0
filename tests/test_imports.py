"""What each running program has imported: nothing heavy it does not use.

Every program is a separate Python process, so a library it imports but does not need
costs resident memory once per process (numpy ~15 MB, flask ~20 MB, cryptography ~10 MB,
asyncio ~7 MB, zmq ~6 MB). The appliance's memory target (total RSS <= 250 MB, each program
<= 45 MB; `tests/bench/run.py install` measures it) depends on keeping it that way.

The programs are started for real (`python -m appliance ...`, as supervisord runs them) with
`-X importtime` output in their log, and checked once they say they are ready: the import
graph of the running program, including what `main` imports lazily, not of a module alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env, make_web_login, start_program

HEAVY = ("numpy", "flask", "werkzeug", "jinja2", "cryptography", "asyncio", "apscheduler", "lasio")
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$")


def imported_modules(output: str) -> set[str]:
    """Every module named in `-X importtime` lines."""
    return {m.group(1) for line in output.splitlines() if (m := IMPORT_LINE.match(line))}


def imported(output: str) -> set[str]:
    """Top-level packages named in `-X importtime` lines."""
    return {name.split(".")[0] for name in imported_modules(output)}


def profiled_env(tmp: Path) -> dict[str, str]:
    return {**clean_env(tmp), "PYTHONPROFILEIMPORTTIME": "1"}


def run_until_ready(args: list[str], ready: str, tmp: Path, full_names: bool = False) -> set[str]:
    """The top-level packages (or with `full_names` every module) a program imported by the
    time it logged `ready`."""
    program = start_program(args, tmp, env=profiled_env(tmp))
    program.wait_for(ready, timeout=60)
    program.stop()
    modules = imported(program.output)
    assert {"appliance", "logging"} <= modules, program.output[-2000:]  # the profile was read
    return imported_modules(program.output) if full_names else modules


@pytest.mark.parametrize("name, ready, also_banned", [
    # the key files' modules (zmq.auth, tempfile) only with remote publishers
    ("broker", r"ready: frontend", ("sqlite3", "appliance.security.curve", "zmq.auth", "tempfile", "ctypes")),
    # ctypes (malloc_trim) only once a backlog was worked off
    ("logger", r"ready: listening", ("sqlite3", "ctypes")),
    ("wits0-out", r"ready: wits0-out is off", ("sqlite3", "ctypes")),
])
def test_bus_programs_import_no_heavy_library(broker, tmp_path, name, ready, also_banned):
    args = [name] if name == "broker" else [name, *broker.port_args()]
    if name == "broker":
        args += ["--set", "broker_frontend_port=0", "--set", "broker_backend_port=0"]
    modules = run_until_ready(args, ready, tmp_path, full_names=True)
    assert "zmq" in modules
    banned = modules & {*also_banned} | {m for m in modules if m.split(".")[0] in HEAVY}
    assert not banned, sorted(banned)


def test_saver_stores_frames_and_roll_ups_without_numpy(broker, tmp_path):
    """The roll-ups are plain Python (appliance/store/rollups.py): numpy would be ~15 MB of
    the saver's RSS. Checked after frames are stored, so the commit path's imports count."""
    from appliance.bus import Publisher
    from tests.test_saver import wait_rows, wait_saver_subscribed

    db = tmp_path / "db.db"
    saver = start_program(["saver", *broker.port_args(), "--set", f"database_path={db}"], tmp_path,
                          env=profiled_env(tmp_path))
    saver.wait_for("ready: writing", timeout=60)
    with Publisher("sim", settings=broker.settings()) as pub:
        wait_saver_subscribed(pub, db)
        pub.publish_batch("drilling", [(1_764_449_520_000 + i * 100, {"SPPA": 2500.0 + i, "HKLA": 210})
                                       for i in range(50)])
        wait_rows(db, "SELECT min, max, count FROM rollup_1h JOIN channels ON channels.id = channel_id "
                      "WHERE name = 'SPPA'", [(2500.0, 2549.0, 50)])
    saver.stop()
    modules = imported(saver.output)
    assert {"appliance", "sqlite3", "zmq"} <= modules, saver.output[-2000:]
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    predictor = {m for m in imported_modules(saver.output) if m.startswith("appliance.predict")}
    assert not predictor, predictor  # threshold settings are checked without the predictor's modules


def test_source_runs_the_simulator_without_numpy(broker, tmp_path):
    """The simulator's noise comes from the standard library (appliance/sources/rig.py)."""
    modules = run_until_ready(["source", *broker.port_args(), "--set", "simulator_rate_hz=10",
                               "--set", f"data_dir={tmp_path}"], r"ready: publishing", tmp_path)
    assert "zmq" in modules
    banned = {*HEAVY, "sqlite3", "ctypes"}
    assert not modules & banned, sorted(modules & banned)


def test_program_alerts_carries_no_zeromq_until_a_program_crashes(tmp_path):
    """The event listener mostly waits: the bus is connected at the first alert."""
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "program-alerts",
                             "--set", f"database_path={tmp_path / 'none.db'}"],
                            cwd=tmp_path, env=profiled_env(tmp_path), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"READY\n"  # the event listener protocol: it is waiting
    finally:
        proc.stdin.close()  # supervisord gone: the listener ends
        err = proc.stderr.read().decode()
        assert proc.wait(30) == 0, err[-2000:]
        proc.stdout.close()
        proc.stderr.close()
    modules = imported(err)
    banned = {*HEAVY, "zmq", "orjson"}
    assert "appliance" in modules and not modules & banned, sorted(modules & banned)


def test_web_imports_neither_numpy_nor_cryptography_nor_asyncio(broker, tmp_path):
    """numpy only arrives with the Analytics KPIs (on first use), cryptography never: the
    certificate is read with the stdlib decoder."""
    login = make_web_login(tmp_path)
    modules = run_until_ready(["web", *broker.port_args(), "--set", f"database_path={tmp_path / 'db.db'}",
                               "--set", f"data_dir={tmp_path}", "--set", "web_port=0", "--set", "web_http_port=-1",
                               "--set", f"supervisor_socket={tmp_path / 'none.sock'}", *login.args()],
                              r"ready: dashboard", tmp_path, full_names=True)
    assert {"flask", "waitress", "zmq"} <= modules
    banned = {"numpy", "cryptography", "asyncio", "apscheduler",
              "xmlrpc", "urllib.request", "appliance.sources.writers"}  # System view, exports: on first use
    found = {m for m in modules if m in banned or m.split(".")[0] in banned}
    assert not found, sorted(found)


def test_rigtel_help_and_config_import_only_the_standard_library(tmp_path):
    env = profiled_env(tmp_path)
    for args in (["--help"], ["config"]):
        run = subprocess.run([sys.executable, "-m", "appliance", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr[-2000:]
        modules = imported(run.stderr)
        assert "appliance" in modules
        banned = {*HEAVY, "zmq", "orjson", "sqlite3", "waitress"}
        assert not modules & banned, (args, sorted(modules & banned))


def test_the_predictor_works_without_numpy(broker, tmp_path):
    """The predictor's statistics are plain Python (medians, the trend's quarters, the ROP
    model's fit): numpy would be ~15 MiB of its resident memory. The program up to ready,
    then the engine through 20 minutes of rotary drilling, so that every one of them ran."""
    modules = run_until_ready(["predictor", *broker.port_args(), "--set", f"database_path={tmp_path / 'db.db'}"],
                              r"ready: listening", tmp_path)
    assert {"zmq", "sqlite3"} <= modules
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    code = ("import sys\nfrom appliance.predict.engine import Predictor\n"
            "from appliance.sources.rig import RigModel\n"
            "rig, p = RigModel(seed=1), Predictor()\n"
            "for k in range(1, 1201):\n    p.step(1_764_000_000_000 + k * 1000, rig.step(1.0))\n"
            "ran = (p.models.rop.fits['rotary'] is not None, sorted(p.anomaly.stats) != [],\n"
            "       'mse_up_pct' in p.dysfunction.last_trend[1])\n"
            "print(ran, sorted(m for m in sys.modules if m.split('.')[0] == 'numpy'))")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "(True, True, True) []", run.stdout


def _vm(pid: int, field: str) -> int:
    """A /proc/PID/status figure in kB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def test_web_answers_kpis_without_numpy_and_logs_in_one_slow_hash_at_a_time(broker, tmp_path):
    """/api/kpis is computed in a child process (appliance/analytics/offload.py): after the
    Analytics view asked, the web program has neither numpy nor OpenBLAS mapped (they were
    ~23 MB of its RSS for the rest of its life), and the answer is the one computed here.
    Browsers logging in together wait for each other's scrypt check (32 MiB each) instead of
    holding one each: four at once raise the web's peak RSS by one check, not four."""
    import base64
    import http.client
    import json
    import ssl
    import threading

    from appliance.analytics import kpis
    from appliance.sources.rig import RigModel
    from appliance.store.schema import connect_reader
    from tests.test_kpis import store
    from tests.test_writer import T0

    rig = RigModel(seed=3, start_depth_ft=1000.0, trip_every_ft=300.0)
    db = tmp_path / "rigtel.db"
    store(db, [(T0 + (i + 1) * 1000, rig.step(1.0)) for i in range(2 * 3600)], keep=kpis.CHANNELS)
    conn = connect_reader(db)
    expected = kpis.kpis_for_range(conn, T0, T0 + 2 * 3_600_000)
    conn.close()
    login = make_web_login(tmp_path)
    web = start_program(["web", *broker.port_args(), "--set", f"database_path={db}", "--set", f"data_dir={tmp_path}",
                         "--set", "web_port=0", "--set", "web_http_port=-1",
                         "--set", f"supervisor_socket={tmp_path / 'none.sock'}", *login.args()],
                        tmp_path, env=profiled_env(tmp_path))
    try:
        port = int(web.wait_for(r"ready: dashboard on https://\S+:(\d+)/", timeout=60).group(1))
        auth = "Basic " + base64.b64encode(f"viewer:{login.passwords['viewer']}".encode()).decode()
        ctx = ssl.create_default_context(cafile=str(login.cert_file))

        def get(path: str) -> tuple[int, bytes]:
            c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=120)
            try:
                c.request("GET", path, headers={"Authorization": auth})
                r = c.getresponse()
                return r.status, r.read()
            finally:
                c.close()

        with open(f"/proc/{web.proc.pid}/clear_refs", "w") as f:
            f.write("5")  # VmHWM from here: the peak of the logins below, not of start-up
        rest_kb = _vm(web.proc.pid, "VmRSS")
        answers: list[int] = []
        logins = [threading.Thread(target=lambda: answers.append(get("/api/latest")[0])) for _ in range(4)]
        for t in logins:
            t.start()
        for t in logins:
            t.join(60)
        assert answers == [200] * 4
        assert _vm(web.proc.pid, "VmHWM") - rest_kb < 48 * 1024  # one 32 MiB check, not four

        status, body = get(f"/api/kpis?from={T0}&to={T0 + 2 * 3_600_000}")
        assert status == 200, body[:500]
        assert json.loads(body) == json.loads(json.dumps(expected))
        status, body = get(f"/api/kpis?from={T0}&to={T0 + 8 * 86_400_000}")
        assert status == 400 and b"at most 7 days" in body
        with open(f"/proc/{web.proc.pid}/maps") as f:
            mapped = {line.split()[-1] for line in f if "numpy" in line or "openblas" in line}
        assert not mapped, sorted(mapped)[:5]
    finally:
        assert web.stop() == 0, web.output[-3000:]
    numpy = {m for m in imported_modules(web.output) if m.split(".")[0] == "numpy"}
    assert not numpy, sorted(numpy)[:5]
