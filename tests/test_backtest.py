"""`rigtel backtest` as a real process over recorded files: a simulated CSV with a kick in it,
a WITSML time log, and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.predict.evaluate import default_volve
from appliance.sources.events import parse_events
from appliance.sources.rig import RigModel
from tests.conftest import REPO, clean_env

T0_S = 1_767_225_600  # 2026-01-01 00:00 UTC
KICK_AT_S, KICK_S = 5400, 1200


def rigtel(tmp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], cwd=tmp, env=clean_env(tmp),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def kick_csv(tmp_path_factory) -> Path:
    """Two and a half hours of the simulator at 1 s with a kick, as the replay CSV: a time
    column, then channels with bracketed units (standpipe pressure in kPa, converted on read)."""
    path = tmp_path_factory.mktemp("backtest") / "kick.csv"
    m = RigModel(seed=4, events=parse_events(f"kick@{KICK_AT_S}+{KICK_S}"))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for i in range(1, 9001):
            d = m.step(1.0)
            if i == 1:
                w.writerow(["time", *[f"SPPA [kPa]" if k == "SPPA" else k for k in d]])
            w.writerow([T0_S + i, *[round(v * 6.894757, 2) if k == "SPPA" else v for k, v in d.items()]])
    return path


def test_json_lines_show_every_state_change_and_the_kick(kick_csv, tmp_path):
    r = rigtel(tmp_path, "backtest", str(kick_csv), "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    states = [x for x in lines if x["type"] == "state"]
    alerts = [x for x in lines if x["type"] == "alert"]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["rows"] == 9000 and summary["format"] == "csv"
    assert summary["hours"] == pytest.approx(2.5, abs=0.01)
    # drilling with a connection every stand: the states alternate and each change is printed once
    assert states[0]["previous"] is None and {"rotary_drilling", "in_slips"} <= {s["state"] for s in states}
    assert all(a["state"] != b["state"] for a, b in zip(states, states[1:]))
    assert summary["state_changes"] == len(states) - 1
    assert sum(summary["hours_by_state"].values()) == pytest.approx(2.5, abs=0.01)
    kicks = [a for a in alerts if a["kind"] == "kick" and a["state"] == "active_unack"]
    assert kicks, alerts
    delay_s = kicks[0]["ts"] / 1000 - (T0_S + KICK_AT_S)
    assert 0 <= delay_s <= 300, delay_s
    assert "evidence" in kicks[0] and kicks[0]["message"]
    assert summary["alarms_by_kind"].get("kick") >= 1
    # nothing alarms before the kick: the first hour and a half is normal drilling
    early = [a for a in alerts if a["ts"] < (T0_S + KICK_AT_S) * 1000 and a["state"] == "active_unack"]
    assert early == []


def test_readable_lines_and_thresholds_from_a_file(kick_csv, tmp_path):
    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps({"SPPA": {"h": 2000.0, "priority": "low"}}))
    r = rigtel(tmp_path, "backtest", str(kick_csv), "--format", "csv", "--thresholds", str(limits))
    assert r.returncode == 0, r.stderr
    assert " state  rotary_drilling" in r.stdout
    assert "threshold.SPPA.h" in r.stdout  # the simulated SPP runs above 2,000 psi while pumping
    assert "9000 rows, 2.5 h of data" in r.stdout


@pytest.mark.parametrize("args, code, message", [
    (["nope.csv"], 1, "nope.csv"),
    (["{csv}", "--format", "pdf"], 2, "invalid choice"),
    (["{csv}", "--thresholds", "{bad}"], 2, "H (3000) must be below HH (2000)"),
])
def test_bad_input_gets_a_clear_error(kick_csv, tmp_path, args, code, message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"SPPA": {"h": 3000, "hh": 2000}}))
    args = [a.format(csv=kick_csv, bad=bad) for a in args]
    r = rigtel(tmp_path, "backtest", *args)
    assert r.returncode == code and message in r.stderr, (r.returncode, r.stderr)


def test_a_witsml_time_log(tmp_path):
    volve = default_volve()
    fixture = REPO / "tests" / "fixtures" / "sim-time.xml"
    path = volve / "F-4_GenTime_time-log.xml" if volve else fixture
    if not path.exists():
        pytest.skip(f"no WITSML time log here ({fixture}, or the Volve logs)")
    r = rigtel(tmp_path, "backtest", str(path), "--format", "witsml", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    summary = lines[-1]
    rows_in_file = 3605 if volve else 297  # the Volve F-4 time log, or the simulator fixture
    assert summary["type"] == "summary" and summary["format"] == "witsml"
    assert summary["rows"] >= rows_in_file * 0.95, summary
    assert any(x["type"] == "state" for x in lines)
    # real data, a few hours: no alarm flood (ISA-18.2: about one per 10 minutes at most)
    assert summary["alarms_per_10min"] <= 1.0, summary
