"""Settings: precedence, validation, the `rigtel config` listing, and documentation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import SETTINGS, ConfigError, Setting, load, parse_assignments
from tests.conftest import REPO, clean_env


@pytest.fixture
def ini(tmp_path: Path):
    def write(text: str) -> str:
        path = tmp_path / "appliance.ini"
        path.write_text(text)
        return str(path)
    return write


def test_defaults_are_valid_and_typed(ini):
    cfg = load(config_file=ini("[appliance]\n"), env={}, dotenv="")
    assert cfg.broker_frontend_port == 5555 and cfg.broker_backend_port == 5556
    assert cfg.web_debug is False and cfg.simulator_rate_hz == 1.0
    assert all(cfg.source(s.name) == "default" for s in SETTINGS)


def test_precedence_file_then_dotenv_then_environment_then_command_line(ini, tmp_path):
    path = ini("[appliance]\nlog_level = WARNING\nrig_id = from-file\nsimulator_seed = 7\nbroker_frontend_port = 6001\n")
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nexport RIGTEL_RIG_ID='from-dotenv'\nRIGTEL_SIMULATOR_SEED=8\nOTHER_TOOL=x\n")
    env = {"RIGTEL_SIMULATOR_SEED": "9", "LOG_LEVEL": "debug"}
    cfg = load({"log_level": "ERROR"}, config_file=path, env=env, dotenv=str(dotenv))
    assert cfg.broker_frontend_port == 6001 and cfg.source("broker_frontend_port") == f"file {path}"
    assert cfg.rig_id == "from-dotenv" and cfg.source("rig_id").startswith("env file")
    assert cfg.simulator_seed == 9 and cfg.source("simulator_seed") == "environment RIGTEL_SIMULATOR_SEED"
    assert cfg.log_level == "ERROR" and cfg.source("log_level") == "command line"


def test_prototype_environment_names_still_work_and_rigtel_names_win(ini):
    path = ini("[appliance]\n")
    cfg = load(config_file=path, env={"BROKER_FRONTEND_PORT": "7001", "FLASK_PORT": "9000",
                                      "FLASK_DEBUG": "yes", "DATABASE_PATH": "/tmp/x.db"}, dotenv="")
    assert (cfg.broker_frontend_port, cfg.web_port, cfg.web_debug, cfg.database_path) == (7001, 9000, True, "/tmp/x.db")
    cfg = load(config_file=path, env={"BROKER_FRONTEND_PORT": "7001",
                                      "RIGTEL_BROKER_FRONTEND_PORT": "7002"}, dotenv="")
    assert cfg.broker_frontend_port == 7002


@pytest.mark.parametrize("text, message", [
    ("[appliance]\nbroker_frontend_prot = 1\n", "unknown setting 'broker_frontend_prot' (did you mean 'broker_frontend_port'?)"),
    ("[bus]\nbroker_frontend_port = 1\n", "unknown section [bus]"),
    ("[appliance]\nbroker_frontend_port = 70000\n", "setting broker_frontend_port = '70000'"),
    ("[appliance]\nbroker_frontend_port = five\n", "expected a whole number from 0 to 65535"),
    ("[appliance]\nlog_level = LOUD\n", "expected one of DEBUG, INFO, WARNING, ERROR"),
    ("[appliance]\nweb_debug = maybe\n", "expected one of true/false"),
    ("[appliance]\nsimulator_rate_hz = nan\n", "expected a number from 0.1 to 1000"),
    ("[appliance]\nrig_id = rig 1\n", "setting rig_id"),
    ("[appliance]\nbus_bind_host = 0.0.0.0\n", "loopback"),
    ("not an ini file", "File contains no section headers"),
])
def test_bad_files_stop_start_up_naming_the_key(ini, text, message):
    with pytest.raises(ConfigError) as e:
        load(config_file=ini(text), env={}, dotenv="")
    assert message in str(e.value)


def test_unknown_or_bad_environment_and_command_line_are_refused(ini, tmp_path):
    path = ini("[appliance]\n")
    with pytest.raises(ConfigError, match="environment: unknown setting 'RIGTEL_RIGID'"):
        load(config_file=path, env={"RIGTEL_RIGID": "x"}, dotenv="")
    with pytest.raises(ConfigError, match="command line: unknown setting 'rate'"):
        load({"rate": "1"}, config_file=path, env={}, dotenv="")
    with pytest.raises(ConfigError, match=r"from environment LOG_LEVEL"):
        load(config_file=path, env={"LOG_LEVEL": "chatty"}, dotenv="")
    bad_dotenv = tmp_path / "bad.env"
    bad_dotenv.write_text("RIGTEL_NOPE=1\n")
    with pytest.raises(ConfigError, match="unknown setting 'RIGTEL_NOPE'"):
        load(config_file=path, env={}, dotenv=str(bad_dotenv))
    with pytest.raises(ConfigError, match="expected NAME=VALUE"):
        parse_assignments(["log_level"])
    with pytest.raises(ConfigError, match="No such file"):
        load(config_file=str(tmp_path / "missing.ini"), env={}, dotenv="")


def test_secrets_are_masked_in_listings_and_errors():
    table = (Setting("api_token", lambda s: s if len(s) > 3 else (_ for _ in ()).throw(ValueError("too short")),
                     "", "a token", secret=True),)
    cfg = load({"api_token": "hunter22"}, config_file=None, env={"RIGTEL_CONFIG": "/dev/null"}, dotenv="", table=table)
    assert cfg.api_token == "hunter22"
    assert cfg.describe() == [("api_token", "********", "command line")]
    with pytest.raises(ConfigError) as e:
        load({"api_token": "abc"}, env={"RIGTEL_CONFIG": "/dev/null"}, dotenv="", table=table)
    assert "abc" not in str(e.value) and "********" in str(e.value)


def test_rigtel_config_prints_every_setting_with_its_source(tmp_path):
    env = clean_env(tmp_path)
    env["RIGTEL_RIG_ID"] = "rig-42"
    out = subprocess.run([sys.executable, "-m", "appliance", "config", "--set", "log_level=DEBUG"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    first, *rest = out.splitlines()
    # clean_env names an (empty) settings file in RIGTEL_CONFIG: it says it read it
    assert first == f"# read: settings file {tmp_path / 'empty.ini'}"
    lines = {line.split("=")[0].strip(): line for line in rest}
    assert set(lines) == {s.name for s in SETTINGS}
    assert re.search(r"rig_id\s+= rig-42\s+# environment RIGTEL_RIG_ID", lines["rig_id"])
    assert lines["log_level"].endswith("# command line")
    assert lines["web_port"].endswith("# default")


def test_rigtel_config_says_when_no_settings_file_was_read(tmp_path):
    if Path("/etc/rigtel/appliance.ini").exists():
        pytest.skip("an appliance is installed here: its settings file would be read")
    env = clean_env(tmp_path)
    del env["RIGTEL_CONFIG"]
    out = subprocess.run([sys.executable, "-m", "appliance", "config"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("# no settings file (/etc/rigtel/appliance.ini does not exist")


@pytest.mark.parametrize("command, settings", [
    ("logger", ["logger_summary_s"]),
    ("broker", ["broker_frontend_port", "bus_receive_hwm"]),
    ("wits0", ["wits0_port"]),
])
def test_a_programs_help_lists_the_settings_it_reads(tmp_path, command, settings):
    out = subprocess.run([sys.executable, "-m", "appliance", command, "--help"], cwd=tmp_path,
                         env=clean_env(tmp_path), capture_output=True, text=True, check=True).stdout
    listed = re.findall(r"^  (\w+) = ", out, re.M)
    assert set(settings) <= set(listed)
    assert not [name for name in listed if name.startswith("wits0_out_")]  # wits0-out's, not wits0's


def test_a_setting_in_the_wrong_case_is_named_rightly(tmp_path):
    env = clean_env(tmp_path)
    env["RIGTEL_rig_id"] = "x"
    run = subprocess.run([sys.executable, "-m", "appliance", "config"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "unknown setting 'RIGTEL_rig_id' (did you mean 'RIGTEL_RIG_ID'?)" in run.stderr


def test_a_bad_setting_stops_a_program_with_exit_2_and_a_readable_message(tmp_path):
    env = clean_env(tmp_path)
    run = subprocess.run([sys.executable, "-m", "appliance", "broker", "--set", "broker_frontend_port=-1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "configuration error: setting broker_frontend_port = '-1' (from command line): expected a whole number" in run.stderr


def test_every_setting_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert not missing, f"settings missing from README.md: {missing}"
    aliases = [a for s in SETTINGS for a in s.aliases if f"`{a}`" not in readme]
    assert not aliases, f"environment aliases missing from README.md: {aliases}"


def test_the_shipped_ini_file_loads():
    cfg = load(config_file=str(REPO / "etc/appliance.ini"), env={}, dotenv="")
    assert cfg.rig_id == "rig-1"
