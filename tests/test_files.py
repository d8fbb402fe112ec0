"""Recorded logs in and out: units, mnemonics, the CSV/WITSML/LAS readers and writers.

The fixtures in tests/fixtures/ were made from the simulator (make_fixtures.py); these
tests step the same model again and compare, so every conversion is checked against known
truth. The real Volve files are read when ../shared/data/volve is present.
"""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import pytest

from appliance import units
from appliance.channels import BY_MNEMONIC
from appliance.sources import mnemonics
from appliance.sources.files import LogError, open_log, parse_time
from appliance.sources.writers import write_log
from tests.fixtures import make_fixtures as fx

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VOLVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "volve"
if not VOLVE.is_dir():
    VOLVE = Path("/work/shared/data/volve")


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


# --- units ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, source, target, expected", [
    (1000.0, "kPa", "psi", 145.0377377),
    (1.0, "bar", "psi", 14.50377377),
    (100.0, "degC", "degF", 212.0),
    (273.15, "K", "degF", 32.0),
    (1.0, "m3/s", "gpm", 15850.32314),
    (1000.0, "L/min", "gpm", 264.1720524),
    (1.0, "kkgf", "klbf", 2.204622622),
    (1000.0, "N", "klbf", 0.2248089431),
    (1.0, "kN.m", "kft.lbf", 0.7375621493),
    (1.0, "c/s", "rpm", 60.0),
    (1.5, "Hz", "spm", 90.0),
    (1.0, "g/cm3", "ppg", 8.345404452),
    (1.0, "m3", "bbl", 6.289810770),
    (100.0, "m", "ft", 328.0839895),
    (1.0, "m/s", "ft/h", 11811.02362),
    (0.5, "fraction", "%", 50.0),
    (80.0, "1/min", "spm", 80.0),
])
def test_conversions_match_published_factors(value, source, target, expected):
    assert close(units.conversion(source, target).apply(value), expected, 1e-8)


def test_conversion_spellings_and_inverse():
    assert units.conversion("KPA", "psi") == units.conversion("kPa", "psi")._replace(source="KPA")
    c = units.conversion("degC", "degF")
    assert close(c.invert().apply(c.apply(37.0)), 37.0)
    assert units.conversion("kN.m", "kNm").identity


@pytest.mark.parametrize("source, target", [("m", "psi"), ("furlongs", "ft"), ("kPa", "parsecs")])
def test_wrong_or_unknown_units_are_refused_with_the_reason(source, target):
    with pytest.raises(units.UnitError) as e:
        units.conversion(source, target)
    assert source in str(e.value) or target in str(e.value)


# --- mnemonics ------------------------------------------------------------------------


def test_resolve_prefers_the_better_name_and_reports_the_rest():
    m = mnemonics.resolve([("Depth", "m"), ("MDEPTH", "m"), ("HKLD_AVG", "N"), ("WIDGETS", "m"),
                           ("SPPA", "m"), ("TOTGAS", "Euc")])
    assert set(m.mapped) == {"MDEPTH", "HKLD_AVG", "TOTGAS"}
    assert m.mapped["MDEPTH"].channel == "DMEA" and close(m.mapped["MDEPTH"].factor, 1 / 0.3048)
    assert m.mapped["TOTGAS"].note == "unit not given; taken as %"
    reasons = {u.source: u.reason for u in m.unmapped}
    assert reasons["Depth"] == "also DMEA; MDEPTH is preferred"
    assert reasons["WIDGETS"] == "mnemonic not known to the catalogue"
    assert "length, not a pressure" in reasons["SPPA"]
    assert len(m.describe()) == 6  # every curve accounted for


def test_resolve_overrides_win_and_can_leave_out():
    m = mnemonics.resolve([("P_SP", "bar"), ("HKLD", "kkgf")], {"P_SP": "SPPA", "HKLD": ""})
    assert m.mapped["P_SP"].channel == "SPPA"
    assert [u.reason for u in m.unmapped] == ["left out by the mapping given"]


# --- the fixtures, against the simulator's truth --------------------------------------


def _expected_time_rows(columns: list[tuple[str, str, str]]) -> dict[int, dict[str, float]]:
    """ts -> the values a reader must give for the time-indexed fixtures."""
    out = {}
    mapped = {ch for ch, _, _ in columns}
    for i, (ts, values) in enumerate(fx.truth()):
        kind = fx.DAMAGED.get(i)
        if kind in ("null", "bad_time", "back_in_time"):
            continue
        row = {k: v for k, v in values.items() if k in mapped}
        if kind == "empty":
            del row[columns[0][0]]
        elif kind == "garbage":
            del row[columns[1][0]]
        out[ts] = row
    return out


@pytest.mark.parametrize("name, fmt, columns", [
    ("sim-si.csv", None, fx.CSV_COLUMNS),
    ("sim-si.csv", "csv", fx.CSV_COLUMNS),
    ("sim-time.xml", None, fx.WITSML_TIME_COLUMNS),
])
def test_time_fixture_reads_as_the_simulator_wrote_it(name, fmt, columns):
    log = open_log(str(FIXTURES / name), fmt)
    assert log.index == "time"
    assert [u.source for u in log.channels.unmapped] == ["SHAKER_LOAD"]
    bad: list[tuple[str, str]] = []
    rows = list(log.rows(on_bad=lambda reason, text: bad.append((reason, text))))
    expected = _expected_time_rows(columns)
    assert [ts for ts, _ in rows] == sorted(expected)
    for ts, values in rows:
        want = expected[ts]
        assert set(values) == set(want), ts
        for k, v in values.items():
            assert close(v, want[k], 1e-9), (ts, k, v, want[k])
    assert dict(log.problems) == {"rows with no values": 1, "not a number in DMEA": 1,
                                  "time not readable": 1, "time not after the previous row's": 1}
    assert sorted(r for r, _ in bad) == ["not a number in DMEA", "time not after the previous row's",
                                         "time not readable"]
    assert all(text.startswith(name + ":") for _, text in bad)
    # rows() starts over
    assert len(list(log.rows())) == len(rows)


@pytest.mark.parametrize("name", ["sim-depth.xml", "sim-depth.las"])
def test_depth_fixture_gets_a_synthetic_clock_and_the_index_as_hole_depth(name):
    log = open_log(str(FIXTURES / name), depth_start_ms=1_000_000, depth_step_ms=2000)
    assert log.index == "depth"
    index = [m for m in log.channels.mapped.values() if m.note.endswith("the depth index")]
    assert [(m.source, m.channel) for m in index] == [("DEPTH" if name.endswith(".xml") else "DEPT", "DMEA")]
    rows = list(log.rows())
    truth = fx.depth_rows()
    assert len(rows) == len(truth) == 200
    for n, ((ts, values), (depth_m, want)) in enumerate(zip(rows, truth)):
        assert ts == 1_000_000 + n * 2000
        assert close(values["DMEA"], want["DMEA"], 1e-9)
        for ch in ("ROPA", "WOBA", "TQA", "SPPA", "MFIA", "MDIA", "MTOA", "GASA", "RPMA", "DBTM"):
            assert close(values[ch], want[ch], 1e-9), (n, ch)
        if name.endswith(".las") and n == 7:
            assert "HKLA" not in values  # null in that row only
        else:
            assert close(values["HKLA"], want["HKLA"], 1e-9)


def test_depth_log_default_clock_starts_at_the_log_date():
    assert next(open_log(str(FIXTURES / "sim-depth.las")).rows())[0] == parse_time("2016-10-07")
    assert next(open_log(str(FIXTURES / "sim-depth.xml")).rows())[0] == parse_time("2016-10-07T05:23:24Z")


def test_extra_curves_come_in_their_own_units_but_never_under_a_catalogue_name(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("time,SPPA [kPa],SHAKER [%],MDEPTH [m],DMEA [m]\n"
                 "2026-01-01T00:00:00Z,1000,40,100,101\n")
    log = open_log(str(p))
    ts, values = next(log.rows(extra=True))
    assert values["SHAKER"] == 40.0 and close(values["SPPA"], 145.0377377, 1e-8)
    assert close(values["DMEA"], 101 / 0.3048)  # the catalogue name wins over the alias
    assert "MDEPTH" in values  # the alias left out is an extra in metres


def test_a_repeated_column_name_is_reported_and_never_takes_the_firsts_conversion(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("time,SPPA [psi],SPPA [kPa]\n2026-01-01T00:00:00Z,100,1000\n")
    log = open_log(str(p))
    assert [(u.source, u.reason) for u in log.channels.unmapped] == [
        ("SPPA_2", "a second column named SPPA; the first is used")]
    assert list(log.rows()) == [(parse_time("2026-01-01T00:00:00Z"), {"SPPA": 100.0})]
    assert list(log.rows(extra=True))[0][1] == {"SPPA": 100.0, "SPPA_2": 1000.0}


# --- CSV variants ---------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("time,SPPA [kPa],HKLA\n2026-01-01T00:00:00Z,1000,150\n", {"SPPA": 145.0377377, "HKLA": 150.0}),
    ("Time;SPPA (kPa);RPM\n2026-01-01 00:00:00;1000;120\n", {"SPPA": 145.0377377, "RPMA": 120.0}),
    ("TIME\tSPPA\tMFIA\n1767225600\t2000\t600\n", {"SPPA": 2000.0, "MFIA": 600.0}),
    ("time,SPPA,FLOWIN\nunitless,kPa,m3/s\n1767225600000,1000,0.01\n", {"SPPA": 145.0377377, "MFIA": 158.5032314}),
    ("time,SPPA [psi],HKLA [klbf]\n2026-01-01T00:00:00Z,-999.25,\n2026-01-01T00:00:01Z,10,NaN\n",
     {"SPPA": 10.0}),
])
def test_csv_variants(tmp_path, text, expected):
    p = tmp_path / "log.csv"
    p.write_text(text)
    rows = list(open_log(str(p)).rows())
    assert len(rows) == 1
    ts, values = rows[0]
    assert ts in (1767225600000, 1767225601000)
    assert set(values) == set(expected)
    for k, v in expected.items():
        assert close(values[k], v, 1e-8), k


def test_csv_without_columns_is_refused_with_what_to_write(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("just one column\n1\n")
    with pytest.raises(LogError, match="time column"):
        open_log(str(p))


def test_witsml_that_is_not_xml_or_has_no_log(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text("<logs><log><unclosed></log>")
    with pytest.raises(LogError, match="not well-formed"):
        open_log(str(p))
    p.write_text("<wells><well/></wells>")
    with pytest.raises(LogError, match="no WITSML <log>"):
        open_log(str(p))


def test_witsml_rows_stream_in_constant_memory(tmp_path):
    p = tmp_path / "big.xml"
    curves = [("Time", "unitless"), ("SPPA", "kPa"), ("HKLD", "kN"), ("RPM", "rpm")]
    with open(p, "w") as f:
        f.write(fx.witsml_header("date time", "Time", curves))
        for i in range(60_000):
            f.write(f"<data>{fx.iso(fx.START_MS + i * 1000)},{1000 + i % 7},{600.5},{120}</data>\n")
        f.write("</logData></log></logs>\n")
    assert p.stat().st_size > 3_000_000
    log = open_log(str(p))
    tracemalloc.start()
    n = sum(1 for _ in log.rows())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 60_000
    assert peak < 1_000_000, peak  # the file is 3+ MB: rows are not kept


# --- writers: export -> re-import ---------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "las", "witsml"])
def test_written_logs_read_back_exactly(tmp_path, fmt):
    names = ["DMEA", "HKLA", "SPPA", "SPM1", "MFIA", "MDIA", "MTOA", "GASA"]
    columns = [(n, BY_MNEMONIC[n].unit) for n in names]
    truth = fx.truth(120)
    rows = []
    for i, (ts, values) in enumerate(truth):
        rows.append((ts + 7, [None if (i % 9 == 0 and n == "HKLA") else values[n] for n in names]))
    path = tmp_path / f"out.{fmt}"
    with open(path, "w") as out:
        n = write_log(fmt, out, columns, rows, start_ms=rows[0][0], end_ms=rows[-1][0] + 1, well="SIM-1")
    assert n == len(rows)
    log = open_log(str(path), fmt)
    assert log.index == "time"
    assert [(u.source, u.reason) for u in log.channels.unmapped] == (
        [("ts_ms", "the time again; the first column is the time used")] if fmt == "csv" else [])
    assert all(m.factor == 1.0 and m.offset == 0.0 for m in log.channels.mapped.values())
    back = list(log.rows())
    assert [ts for ts, _ in back] == [ts for ts, _ in rows]
    for (ts, values), (_, want) in zip(back, rows):
        assert values == {k: v for k, v in zip(names, want) if v is not None}
    assert not log.problems


def test_parse_time_forms():
    assert parse_time("2016-10-04T11:16:45.000Z") == 1475579805000
    assert parse_time("2016-10-04T13:16:45.123+02:00") == 1475579805123
    assert parse_time("2016-10-04 11:16:45") == 1475579805000
    assert parse_time("1475579805") == 1475579805000
    assert parse_time("1475579805123") == 1475579805123
    for bad in ("", "yesterday", "-5", "nan"):
        with pytest.raises(ValueError):
            parse_time(bad)


# --- the real Volve files ------------------------------------------------------------

volve = pytest.mark.skipif(not VOLVE.is_dir(), reason="the Volve files are not in ../shared/data/volve")


@volve
def test_volve_time_log_maps_the_drilling_channels():
    log = open_log(str(VOLVE / "F-4_GenTime_time-log.xml"))
    assert log.index == "time" and log.info["well"] == "NO 15/9-F-4"
    m = log.channels.mapped
    assert {m[s].channel for s in ("HKLD_AVG", "PUMP", "SURF_RPM", "TORQUE_AVG", "FLOWIN", "BITDEP")} == \
        {"HKLA", "SPPA", "RPMA", "TQA", "MFIA", "DBTM"}
    assert len(log.channels.mapped) + len(log.channels.unmapped) == 78  # every curve but the index
    rows = list(log.rows())
    assert len(rows) == 3605 and not log.problems
    ts, first = rows[0]
    assert ts == parse_time("2016-10-07T05:23:24.000Z")
    assert close(first["HKLA"], 696574.9 / 4448.2216152605, 1e-9)  # HKLD_AVG 696574.9 N
    assert close(first["DMEA"], 3510 / 0.3048, 1e-9)
    assert rows[-1][0] == parse_time("2016-10-07T08:11:35.000Z")


@volve
def test_volve_trip_log_and_its_activity_codes():
    log = open_log(str(VOLVE / "F-4_GenTime2_trip-log.xml"))
    rows = list(log.rows(extra=True))
    assert len(rows) == 10000 and not log.problems
    assert {"DBTM", "DMEA", "BPOS", "RigActivityCode"} <= set(rows[0][1])
    assert rows[0][1]["RigActivityCode"] == 104


@volve
def test_volve_depth_log_with_empty_cells():
    log = open_log(str(VOLVE / "F-9A_12.25in_depth-log.xml"), depth_step_ms=1000)
    assert log.index == "depth"
    assert log.channels.mapped["SPPA"].source_unit == "kPa"
    rows = list(log.rows())
    assert len(rows) == 10000 and not log.problems
    assert close(rows[0][1]["DMEA"], 273.101 / 0.3048, 1e-9)
    assert rows[1][0] - rows[0][0] == 1000
    with_sppa = [v["SPPA"] for _, v in rows if "SPPA" in v]
    assert len(with_sppa) > 1000 and all(0 <= p < 10000 for p in with_sppa)
