"""The installer's Python half: settings written and updated in place, the supervisord
configuration rendered from the template, the systemd unit; and `rigtel status` pieces."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from appliance.config import load
from appliance.ops import setup
from appliance.ops.layout import Layout, render_supervisord_conf
from appliance.ops.status import FAIL, OK, Check, certificate_expiry, healthy, report

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = (REPO / "etc/supervisord.conf.in").read_text()


def test_update_ini_keeps_comments_and_other_settings():
    text = "; my rig\n[appliance]\nrig_id = rig-9\n; web_port = 8080\nlog_level = INFO\n\n[other]\nx = 1\n"
    out = setup.update_ini(text, {"web_port": "9000", "log_level": "DEBUG", "simulator_speed": "5"})
    assert out.startswith("; my rig\n[appliance]\nrig_id = rig-9\nweb_port = 9000\nlog_level = DEBUG\n"
                          "simulator_speed = 5\n")
    assert out.endswith("[other]\nx = 1\n")
    assert setup.update_ini("", {"rig_id": "a"}) .strip().endswith("[appliance]\nrig_id = a")


def _settings(root: Path, *sets: str) -> int:
    return setup.main(["settings", "--root", str(root), "--opt-current", str(root / "opt/rigtel/current"),
                       "--template", str(REPO / "etc/appliance.ini"), *[a for s in sets for a in ("--set", s)]])


def test_settings_fresh_then_upgrade_changes_only_what_is_named(tmp_path: Path, capsys):
    root = tmp_path / "p"
    Layout(root).make_dirs()
    assert _settings(root, "web_port=18080", "rig_id=rig-7") == 0
    ini = root / "etc/rigtel/appliance.ini"
    cfg = load(config_file=str(ini), env={}, dotenv="")
    assert cfg.database_path == str(root / "var/lib/rigtel/rigtel.db") and cfg.web_port == 18080
    assert cfg.supervisor_socket == str(root / "run/rigtel/supervisor.sock") and cfg.rig_id == "rig-7"
    assert ini.stat().st_mode & 0o777 == 0o640
    ini.write_text(ini.read_text() + "; the site's own note\n")
    assert _settings(root, "simulator_speed=3") == 0
    text = ini.read_text()
    assert "; the site's own note" in text and "web_port = 18080" in text and "simulator_speed = 3" in text
    # a bad value: refused with the setting named, the file untouched
    before = ini.read_text()
    assert _settings(root, "web_port=eighty") == 2
    assert "web_port" in capsys.readouterr().err and ini.read_text() == before
    assert not ini.with_name("appliance.ini.new").exists()


def test_render_every_program_of_the_template_with_user_socket_group_unit_and_pointers(tmp_path: Path):
    root = tmp_path / "sys"
    Layout(root).make_dirs()
    release = root / "opt/rigtel/releases/x"
    (release / "venv").mkdir(parents=True)
    assert setup.main(["render", "--root", str(root), "--opt-current", str(root / "opt/rigtel/current"),
                       "--release", str(release), "--template", str(REPO / "etc/supervisord.conf.in"),
                       "--user", "rigtel", "--group", "rigtel"]) == 0
    conf = (root / "etc/rigtel/supervisord.conf").read_text()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(conf)
    sections = [s for s in parser.sections() if s.startswith(("program:", "eventlistener:"))]
    optional_off = 1  # wits0-out, off by default (test_optional_programs_...)
    assert len(sections) == len(re.findall(r"^\[(?:program|eventlistener):", TEMPLATE, re.M)) - optional_off
    for s in sections:
        assert parser[s]["user"] == "rigtel", s
        assert int(parser[s]["startsecs"]) >= 3
        assert parser[s]["command"].startswith(str(root / "opt/rigtel/current/venv/bin/python") + " -m appliance ")
        # not supervisord's working directory, where `python -m` could find another `appliance`
        assert parser[s]["directory"] == str(root / "var/lib/rigtel"), s
    assert parser["unix_http_server"]["chmod"] == "0770" and parser["unix_http_server"]["chown"] == "root:rigtel"
    assert parser["eventlistener:program-alerts"]["events"] == \
        "PROCESS_STATE_EXITED,PROCESS_STATE_FATAL,PROCESS_STATE_RUNNING"
    assert "redirect_stderr" not in parser["eventlistener:program-alerts"]  # stdout is the protocol
    broker = [p for p in setup.programs(conf) if p[0] != "program-alerts"][0]
    assert broker[0] == "broker"  # the bus first
    for pointer in (root / "etc/supervisord.conf", release / "venv/etc/supervisord.conf"):
        assert f"serverurl = unix://{root}/run/rigtel/supervisor.sock" in pointer.read_text()
    unit = (root / "etc/systemd/system/rigtel.service").read_text()
    assert "KillMode=mixed" in unit and "Type=simple" in unit
    assert int(re.search(r"TimeoutStopSec=(\d+)", unit)[1]) > sum(p[2] for p in setup.programs(conf))


def test_someone_elses_supervisord_conf_is_left_alone(tmp_path: Path, capsys):
    theirs = tmp_path / "supervisord.conf"
    theirs.write_text("[supervisord]\n")
    assert not setup.write_pointer(theirs, "x")
    assert theirs.read_text() == "[supervisord]\n" and "left alone" in capsys.readouterr().err


def test_optional_programs_are_rendered_only_when_their_setting_is_on(tmp_path: Path):
    """wits0-out is left out (a comment says why) unless wits0_out_enabled; the rest stays."""
    def names(text: str) -> list[str]:
        return [p.name for p in setup.programs(text)]

    off = render_supervisord_conf(TEMPLATE, Layout(Path("/p")), "/p/python")
    assert "wits0-out" not in names(off) and "; [program:wits0-out] left out: off: wits0_out_enabled = false" in off
    on = render_supervisord_conf(TEMPLATE, Layout(Path("/p")), "/p/python",
                                 settings=load({"wits0_out_enabled": "true"}, env={}, dotenv="",
                                               config_file=str(_empty_ini(tmp_path))))
    assert set(names(on)) - set(names(off)) == {"wits0-out"}
    assert set(names(on)) == set(re.findall(r"^\[(?:program|eventlistener):([\w-]+)\]", TEMPLATE, re.M))
    # the section after the one left out is whole: same text in both renderings
    assert on[on.index("[program:logger]"):] == off[off.index("[program:logger]"):]
    # the installer's half renders from the settings it has just written
    root = tmp_path / "p"
    Layout(root).make_dirs()
    release = root / "opt/rigtel/releases/x"
    (release / "venv").mkdir(parents=True)
    conf = root / "etc/rigtel/supervisord.conf"
    for enabled in ("false", "true"):
        assert _settings(root, f"wits0_out_enabled={enabled}") == 0
        assert setup.main(["render", "--root", str(root), "--opt-current", str(root / "opt/rigtel/current"),
                           "--release", str(release), "--template", str(REPO / "etc/supervisord.conf.in")]) == 0
        assert ("wits0-out" in names(conf.read_text())) == (enabled == "true")


def _empty_ini(tmp_path: Path) -> Path:
    ini = tmp_path / "empty.ini"
    ini.write_text("[appliance]\n")
    return ini


def test_rigtel_status_shows_an_optional_program_off_and_fails_one_on_but_not_rendered(tmp_path: Path):
    from appliance.ops.status import program_checks

    def checks(enabled: str, states: list[dict]) -> dict[str, Check]:
        cfg = load({"wits0_out_enabled": enabled}, env={}, dotenv="", config_file=str(_empty_ini(tmp_path)))
        return {c.name: c for c in program_checks(states, cfg)}

    running = [{"name": "broker", "state": "RUNNING", "description": "pid 1"}]
    off = checks("false", running)
    assert off["program wits0-out"].level == OK and "off: wits0_out_enabled = false" in off["program wits0-out"].text
    assert checks("true", running)["program wits0-out"].level == FAIL
    assert checks("true", [*running, {"name": "wits0-out", "state": "RUNNING", "description": "pid 2"}])[
        "program wits0-out"].level == OK


def test_prefix_mode_renders_no_user_and_no_chown():
    text = render_supervisord_conf(TEMPLATE, Layout(Path("/p")), "/p/python")
    assert "\nuser =" not in text and "chown" not in text


def test_certificate_expiry_is_read_from_the_file(tmp_path: Path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    run = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "10",
                          "-subj", "/CN=rig", "-keyout", str(key), "-out", str(cert)], capture_output=True)
    if run.returncode != 0:
        pytest.skip("no openssl command to make a test certificate")
    days = (certificate_expiry(str(cert)) - datetime.now(timezone.utc)).total_seconds() / 86400
    assert 9 < days <= 10
    with pytest.raises(ValueError, match="cannot read the certificate"):
        certificate_expiry(str(tmp_path / "missing.pem"))


def test_report_is_unhealthy_on_any_fail():
    checks = [Check("a", OK, "fine"), Check("b", FAIL, "down")]
    assert not healthy(checks) and "NOT healthy" in report(checks, False)
    assert '"healthy": false' in report(checks, True)
    assert healthy(checks[:1])


def test_data_checks_read_freshness_gaps_and_alerts_from_the_database(tmp_path: Path):
    import sqlite3
    import time

    from appliance.ops.status import WARN, check_data
    from appliance.store.schema import DDL

    db_path = tmp_path / "rigtel.db"
    cfg = load({"database_path": str(db_path)}, config_file=str(REPO / "etc/appliance.ini"), env={}, dotenv="")
    assert check_data(cfg, 60)[0].level == FAIL  # no database at all
    db = sqlite3.connect(db_path)
    db.executescript(DDL)
    db.commit()
    assert "no drilling data stored yet" in check_data(cfg, 60)[0].text
    now = time.time_ns() // 1_000_000
    db.execute("INSERT INTO streams (src, boot, topic, first_seq, last_seq, messages, updated_ms) "
               "VALUES ('r.sim', 'b', 'drilling', 1, 10, 10, ?)", (now - 5000,))
    db.execute("INSERT INTO gaps (src, boot, topic, first_seq, last_seq, detected_ms) VALUES "
               "('r.sim', 'b', 'drilling', 3, 4, ?)", (now,))
    db.execute("INSERT INTO alerts (ts, src, seq, alert_id, kind, state, priority, data) VALUES "
               "(?, 'r.supervisor', 1, 'program-web', 'program_down', 'active_unack', 'high', ?)",
               (now, '{"id": "program-web", "kind": "program_down", "priority": "high"}'))
    db.commit()
    data, gaps, alerts = check_data(cfg, 60)
    assert data.level == OK and "5 s ago" in data.text
    assert gaps.level == WARN and "2 message(s) lost" in gaps.text
    assert alerts.level == WARN and "program-web" in alerts.text
    assert check_data(cfg, 2)[0].level == FAIL  # stale for a tighter limit
    db.close()


def test_nothing_in_the_data_folder_can_shadow_the_installed_package(tmp_path: Path):
    """Programs start in the data folder (writable by the service user), and `python -m`
    would put it first on sys.path: the environment every program inherits from the rendered
    supervisord.conf must keep it off, so a planted `appliance/` there is never imported."""
    from supervisor.datatypes import dict_of_key_value_pairs

    conf = render_supervisord_conf(TEMPLATE, Layout(tmp_path), sys.executable)
    lib_dir = re.search(r"^directory = (.+)$", conf, re.M).group(1)
    assert all(line == f"directory = {lib_dir}" for line in re.findall(r"^directory = .+$", conf, re.M))
    inherited = dict_of_key_value_pairs(re.search(r"^\[supervisord\][^\[]*?^environment = ([^\n]+)$",
                                                  conf, re.M | re.S).group(1))
    shadow = Path(lib_dir) / "appliance"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (shadow / "__main__.py").write_text("raise SystemExit('the planted package ran')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO)  # where the real package is, as an installed one would be
    planted = subprocess.run([sys.executable, "-m", "appliance", "--help"], cwd=lib_dir, env=env,
                             capture_output=True, text=True, timeout=60)
    assert "planted" in planted.stderr  # the hazard is real without the setting
    ran = subprocess.run([sys.executable, "-m", "appliance", "--help"], cwd=lib_dir,
                         env={**env, **inherited}, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and "rigtel" in ran.stdout, ran.stderr


LOADER = Path("/lib64/ld-linux-x86-64.so.2")


def _glibc_tunables(env: dict[str, str]) -> dict[str, int]:
    """The malloc tunables glibc's loader reads from this environment, as a program started
    with it gets them (`ld.so --list-tunables`, glibc 2.33+)."""
    out = subprocess.run([str(LOADER), "--list-tunables"], env=env, capture_output=True, text=True,
                         timeout=30).stdout
    return {m[1]: int(m[2], 16) for m in re.finditer(r"^glibc\.malloc\.(\w+): (0x[0-9a-f]+)", out, re.M)}


@pytest.mark.skipif(not LOADER.exists(), reason="x86-64 glibc loader not found")
@pytest.mark.parametrize("sets", [{}, {"malloc_arena_max": "1", "malloc_threshold_kb": "256"},
                                  {"malloc_arena_max": "0", "malloc_threshold_kb": "0"}])
def test_the_malloc_settings_reach_every_program_and_glibc(tmp_path: Path, sets):
    """malloc_arena_max and malloc_threshold_kb are rendered into supervisord's environment:
    supervisord's own parser of the rendered file hands them to every program, and glibc
    reads them from there (0: the variable is not set, glibc keeps its own behaviour)."""
    from supervisor.options import ServerOptions

    settings = load(sets, env={}, dotenv="", config_file=str(_empty_ini(tmp_path)))
    layout = Layout(tmp_path / "root")
    layout.make_dirs()
    conf = tmp_path / "supervisord.conf"
    conf.write_text(render_supervisord_conf(TEMPLATE, layout, sys.executable, settings=settings))
    options = ServerOptions()
    options.realize(["-c", str(conf)])
    programs = {p.name: p.environment for g in options.process_group_configs for p in g.process_configs}
    assert set(programs) == {p.name for p in setup.programs(conf.read_text())} and "web" in programs
    if not sets:  # the defaults docs/DEPLOYMENT.md explains
        assert (settings.malloc_arena_max, settings.malloc_threshold_kb) == (2, 128)
    want = {"arena_max": settings.malloc_arena_max, "mmap_threshold": settings.malloc_threshold_kb * 1024,
            "trim_threshold": settings.malloc_threshold_kb * 1024}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    assert {k: _glibc_tunables(base)[k] for k in want} == dict.fromkeys(want, 0)  # glibc's own
    for name, env in programs.items():
        assert env.get("PYTHONSAFEPATH") == "1", name
        got = _glibc_tunables({**base, **env})
        assert {k: got[k] for k in want} == want, (name, env)
