"""Writing drilling logs: CSV, LAS 2.0 and WITSML 1.4.1.1, streamed row by row.

The same three formats `appliance.sources.files` reads, so anything exported can be
replayed or re-imported. Each writer takes the columns (mnemonic, unit) and an iterable of
rows `(ts_ms, [value or None per column])` and writes as the rows come: the header is
written first from what is known before any row (the requested time range), so a month of
data is exported in constant memory.

- CSV: `time,DMEA [ft],HKLA [klbf],...`; time in ISO 8601 UTC with milliseconds; an empty
  cell where a channel has no value in that row.
- LAS 2.0: index `TIME` in UTC epoch seconds (three decimals); null `-999.25`; STRT/STOP
  are the requested range, STEP 0 (irregular).
- WITSML 1.4.1.1: one `<logs><log>` with `indexType` date time, `logCurveInfo` per curve,
  and `logData` rows; units in WITSML spelling (`1/min`, `galUS/min`, `lbm/galUS`); an
  empty cell for a missing value.

Values are written in their shortest exact decimal form (Python's repr), so a re-import
gets back the very same floats.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence, TextIO
from xml.sax.saxutils import escape, quoteattr

from appliance.channels import BY_MNEMONIC

FORMATS = ("csv", "las", "witsml")
EXTENSIONS = {"csv": "csv", "las": "las", "witsml": "xml"}
MEDIA_TYPES = {"csv": "text/csv", "las": "text/plain", "witsml": "application/xml"}
LAS_NULL = "-999.25"
# catalogue unit -> the WITSML 1.4.1.1 unit-of-measure symbol
WITSML_UOM = {"spm": "1/min", "gpm": "galUS/min", "ppg": "lbm/galUS"}

Row = tuple[int, Sequence[float | None]]


def iso_ms(ts_ms: int) -> str:
    """UTC ISO 8601 with milliseconds and a Z: 2026-11-29T23:12:00.123Z."""
    dt = datetime.fromtimestamp(ts_ms // 1000, tz=timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"


def _num(v: float | None, null: str = "") -> str:
    return null if v is None else repr(float(v))


def _description(name: str) -> str:
    ch = BY_MNEMONIC.get(name)
    return ch.description if ch else name


def write_csv(out: TextIO, columns: Sequence[tuple[str, str]], rows: Iterable[Row],
              progress: Callable[[int], None] | None = None, **_: object) -> int:
    """Write rows as CSV; returns how many. `progress(ts_ms)` is called every 1000 rows."""
    out.write(",".join(["time", *(f"{n} [{u}]" if u else n for n, u in columns)]) + "\r\n")
    n = 0
    for ts, values in rows:
        out.write(iso_ms(ts) + "," + ",".join(_num(v) for v in values) + "\r\n")
        n += 1
        if progress is not None and n % 1000 == 0:
            progress(ts)
    return n


def _las_line(mnemonic: str, unit: str, value: str, description: str) -> str:
    # LAS 2.0: MNEM.UNIT  VALUE : DESCRIPTION; no colon may sit in the value
    return f" {mnemonic}.{unit.replace(' ', '')}".ljust(16) + f" {value}".ljust(24) + f" : {description}\n"


def write_las(out: TextIO, columns: Sequence[tuple[str, str]], rows: Iterable[Row],
              start_ms: int = 0, end_ms: int = 0, well: str = "", company: str = "",
              progress: Callable[[int], None] | None = None, **_: object) -> int:
    """Write rows as LAS 2.0 with a TIME index in UTC epoch seconds; returns how many."""
    day = iso_ms(start_ms)[:10]
    out.write("~Version Information\n")
    out.write(_las_line("VERS", "", "2.0", "CWLS LOG ASCII STANDARD - VERSION 2.0"))
    out.write(_las_line("WRAP", "", "NO", "ONE LINE PER TIME STEP"))
    out.write("~Well Information\n")
    out.write(_las_line("STRT", "s", f"{start_ms / 1000:.3f}", f"START TIME, UTC EPOCH SECONDS ({iso_ms(start_ms)})"
                        .replace(":", "-")))
    out.write(_las_line("STOP", "s", f"{end_ms / 1000:.3f}", f"STOP TIME, UTC EPOCH SECONDS ({iso_ms(end_ms)})"
                        .replace(":", "-")))
    out.write(_las_line("STEP", "s", "0", "STEP (0 - IRREGULAR)"))
    out.write(_las_line("NULL", "", LAS_NULL, "NULL VALUE"))
    out.write(_las_line("COMP", "", company or "-", "COMPANY"))
    out.write(_las_line("WELL", "", well or "-", "WELL"))
    out.write(_las_line("SRVC", "", "rigtel", "SERVICE COMPANY"))
    out.write(_las_line("DATE", "", day, "START DATE (UTC)"))
    out.write("~Curve Information\n")
    out.write(_las_line("TIME", "s", "", "TIME, UTC EPOCH SECONDS"))
    for name, unit in columns:
        out.write(_las_line(name, unit, "", _description(name)))
    out.write("~ASCII " + " ".join(["TIME", *(n for n, _ in columns)]) + "\n")
    n = 0
    for ts, values in rows:
        out.write(f"{ts / 1000:.3f} " + " ".join(_num(v, LAS_NULL) for v in values) + "\n")
        n += 1
        if progress is not None and n % 1000 == 0:
            progress(ts)
    return n


def write_witsml(out: TextIO, columns: Sequence[tuple[str, str]], rows: Iterable[Row],
                 start_ms: int = 0, end_ms: int = 0, well: str = "", company: str = "",
                 name: str = "rigtel export", progress: Callable[[int], None] | None = None,
                 **_: object) -> int:
    """Write rows as one WITSML 1.4.1.1 time-indexed <log>; returns how many."""
    uoms = [WITSML_UOM.get(u, u) or "unitless" for _, u in columns]
    well_name = escape(well or "-")
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n'
              '<logs xmlns="http://www.witsml.org/schemas/1series" version="1.4.1.1">\n'
              f' <log uidWell={quoteattr(well or "-")} uidWellbore={quoteattr(well or "-")} '
              f'uid="{uuid.uuid4().hex[:16]}">\n'
              f'  <nameWell>{well_name}</nameWell>\n  <nameWellbore>{well_name}</nameWellbore>\n'
              f'  <name>{escape(name)}</name>\n'
              + (f'  <serviceCompany>{escape(company)}</serviceCompany>\n' if company else "")
              + f'  <creationDate>{iso_ms(int(datetime.now(timezone.utc).timestamp() * 1000))}</creationDate>\n'
              '  <indexType>date time</indexType>\n'
              f'  <startDateTimeIndex>{iso_ms(start_ms)}</startDateTimeIndex>\n'
              f'  <endDateTimeIndex>{iso_ms(end_ms)}</endDateTimeIndex>\n'
              '  <direction>increasing</direction>\n  <indexCurve>TIME</indexCurve>\n'
              '  <nullValue>-999.25</nullValue>\n'
              '  <logCurveInfo uid="TIME"><mnemonic>TIME</mnemonic><unit>unitless</unit>'
              '<curveDescription>Time, UTC</curveDescription><typeLogData>date time</typeLogData></logCurveInfo>\n')
    for (mnemonic, _), uom in zip(columns, uoms):
        out.write(f'  <logCurveInfo uid={quoteattr(mnemonic)}><mnemonic>{escape(mnemonic)}</mnemonic>'
                  f'<unit>{escape(uom)}</unit><curveDescription>{escape(_description(mnemonic))}'
                  '</curveDescription><typeLogData>double</typeLogData></logCurveInfo>\n')
    out.write('  <logData>\n'
              f'   <mnemonicList>{escape(",".join(["TIME", *(m for m, _ in columns)]))}</mnemonicList>\n'
              f'   <unitList>{escape(",".join(["unitless", *uoms]))}</unitList>\n')
    n = 0
    for ts, values in rows:
        out.write(f"   <data>{iso_ms(ts)},{','.join(_num(v) for v in values)}</data>\n")
        n += 1
        if progress is not None and n % 1000 == 0:
            progress(ts)
    out.write('  </logData>\n </log>\n</logs>\n')
    return n


WRITERS = {"csv": write_csv, "las": write_las, "witsml": write_witsml}


def write_log(fmt: str, out: TextIO, columns: Sequence[tuple[str, str]], rows: Iterable[Row],
              **options: object) -> int:
    """Write rows in `fmt` (csv, las or witsml); options: start_ms, end_ms, well, company, progress."""
    try:
        writer = WRITERS[fmt]
    except KeyError:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}") from None
    return writer(out, columns, rows, **options)  # type: ignore[operator]
