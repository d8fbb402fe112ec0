"""Writing drilling logs: CSV, LAS 2.0 and WITSML 1.4.1.1, streamed row by row.

The same three formats `appliance.sources.files` reads, so anything exported can be
replayed or re-imported. Each writer takes the columns (mnemonic, unit) and an iterable of
rows `(ts_ms, [value or None per column])` and writes as the rows come: the header is
written first from what is known before any row (the requested time range), so a month of
data is exported in constant memory.

- CSV: `time_utc,ts_ms,DMEA [ft],HKLA [klbf],...`; the time in ISO 8601 UTC with
  milliseconds and again in epoch ms; an empty cell where a channel has no value in that row
  (the dashboard's download, unchanged).
- LAS 2.0: index `TIME` in UTC epoch seconds (three decimals); null `-999.25`; STRT/STOP
  are the requested range, STEP 0 (irregular).
- WITSML 1.4.1.1: one `<logs><log>` with `indexType` date time, `logCurveInfo` per curve,
  and `logData` rows; units in WITSML spelling (`1/min`, `galUS/min`, `lbm/galUS`); an
  empty cell for a missing value.

Values are written in their shortest exact decimal form (Python's repr; values are floats
or ints), so a re-import gets back the very same floats.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Sequence, TextIO
from xml.sax.saxutils import escape, quoteattr

from appliance.channels import BY_MNEMONIC

FORMATS = ("csv", "las", "witsml")
EXTENSIONS = {"csv": "csv", "las": "las", "witsml": "xml"}
MEDIA_TYPES = {"csv": "text/csv", "las": "text/plain", "witsml": "application/xml"}
LAS_NULL = "-999.25"
# catalogue unit -> the WITSML 1.4.1.1 unit-of-measure symbol
WITSML_UOM = {"spm": "1/min", "gpm": "galUS/min", "ppg": "lbm/galUS"}

Row = tuple[int, Sequence[float | None]]


_DAY: tuple[int, str] = (-1, "")  # the last day formatted: one datetime per day, not per row


def iso_ms(ts_ms: int) -> str:
    """UTC ISO 8601 with milliseconds and a Z: 2026-11-29T23:12:00.123Z."""
    global _DAY
    secs, ms = divmod(ts_ms, 1000)
    day, sod = divmod(secs, 86400)
    cached = _DAY  # read once: another thread may replace it (the tuple swap is atomic)
    if cached[0] != day:
        cached = _DAY = (day, datetime.fromtimestamp(day * 86400, tz=timezone.utc).strftime("%Y-%m-%dT"))
    h, rem = divmod(sod, 3600)
    m, s = divmod(rem, 60)
    return f"{cached[1]}{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"


def _description(name: str) -> str:
    ch = BY_MNEMONIC.get(name)
    return ch.description if ch else name


def csv_text(columns: Sequence[tuple[str, str]], rows: Iterable[Row], **_: object) -> Iterator[str]:
    """CSV, piece by piece."""
    yield ",".join(["time_utc", "ts_ms", *(f"{n} [{u}]" if u else n for n, u in columns)]) + "\r\n"
    for ts, values in rows:
        yield f"{iso_ms(ts)},{ts}," + ",".join(["" if v is None else repr(v) for v in values]) + "\r\n"


def _las_line(mnemonic: str, unit: str, value: str, description: str) -> str:
    # LAS 2.0: MNEM.UNIT  VALUE : DESCRIPTION; no colon may sit in the value
    return f" {mnemonic}.{unit.replace(' ', '')}".ljust(16) + f" {value}".ljust(24) + f" : {description}\n"


def las_text(columns: Sequence[tuple[str, str]], rows: Iterable[Row], start_ms: int = 0, end_ms: int = 0,
             well: str = "", company: str = "", **_: object) -> Iterator[str]:
    """LAS 2.0 with a TIME index in UTC epoch seconds, piece by piece."""
    head = [
        "~Version Information\n",
        _las_line("VERS", "", "2.0", "CWLS LOG ASCII STANDARD - VERSION 2.0"),
        _las_line("WRAP", "", "NO", "ONE LINE PER TIME STEP"),
        "~Well Information\n",
        # no colon may appear before the description's, so the ISO times there use '-'
        _las_line("STRT", "s", f"{start_ms / 1000:.3f}", f"START TIME, UTC EPOCH SECONDS ({iso_ms(start_ms)})"
                  .replace(":", "-")),
        _las_line("STOP", "s", f"{end_ms / 1000:.3f}", f"STOP TIME, UTC EPOCH SECONDS ({iso_ms(end_ms)})"
                  .replace(":", "-")),
        _las_line("STEP", "s", "0", "STEP (0 - IRREGULAR)"),
        _las_line("NULL", "", LAS_NULL, "NULL VALUE"),
        _las_line("COMP", "", company or "-", "COMPANY"),
        _las_line("WELL", "", well or "-", "WELL"),
        _las_line("SRVC", "", "rigtel", "SERVICE COMPANY"),
        _las_line("DATE", "", iso_ms(start_ms)[:10], "START DATE (UTC)"),
        "~Curve Information\n",
        _las_line("TIME", "s", "", "TIME, UTC EPOCH SECONDS"),
        *(_las_line(name, unit, "", _description(name)) for name, unit in columns),
        "~ASCII " + " ".join(["TIME", *(n for n, _ in columns)]) + "\n",
    ]
    yield "".join(head)
    for ts, values in rows:
        yield f"{ts / 1000:.3f} " + " ".join([LAS_NULL if v is None else repr(v) for v in values]) + "\n"


def witsml_text(columns: Sequence[tuple[str, str]], rows: Iterable[Row], start_ms: int = 0, end_ms: int = 0,
                well: str = "", company: str = "", name: str = "rigtel export", **_: object) -> Iterator[str]:
    """One WITSML 1.4.1.1 time-indexed <log>, piece by piece."""
    uoms = [WITSML_UOM.get(u, u) or "unitless" for _, u in columns]
    well_name = escape(well or "-")
    created = iso_ms(int(datetime.now(timezone.utc).timestamp() * 1000))
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<logs xmlns="http://www.witsml.org/schemas/1series" version="1.4.1.1">\n'
        f' <log uidWell={quoteattr(well or "-")} uidWellbore={quoteattr(well or "-")} uid="{uuid.uuid4().hex[:16]}">\n'
        f'  <nameWell>{well_name}</nameWell>\n  <nameWellbore>{well_name}</nameWellbore>\n'
        f'  <name>{escape(name)}</name>\n',
        f'  <serviceCompany>{escape(company)}</serviceCompany>\n' if company else "",
        f'  <creationDate>{created}</creationDate>\n'
        '  <indexType>date time</indexType>\n'
        f'  <startDateTimeIndex>{iso_ms(start_ms)}</startDateTimeIndex>\n'
        f'  <endDateTimeIndex>{iso_ms(end_ms)}</endDateTimeIndex>\n'
        '  <direction>increasing</direction>\n  <indexCurve>TIME</indexCurve>\n'
        '  <nullValue>-999.25</nullValue>\n'
        '  <logCurveInfo uid="TIME"><mnemonic>TIME</mnemonic><unit>unitless</unit>'
        '<curveDescription>Time, UTC</curveDescription><typeLogData>date time</typeLogData></logCurveInfo>\n',
        *(f'  <logCurveInfo uid={quoteattr(m)}><mnemonic>{escape(m)}</mnemonic><unit>{escape(uom)}</unit>'
          f'<curveDescription>{escape(_description(m))}</curveDescription><typeLogData>double</typeLogData>'
          '</logCurveInfo>\n' for (m, _), uom in zip(columns, uoms)),
        '  <logData>\n'
        f'   <mnemonicList>{escape(",".join(["TIME", *(m for m, _ in columns)]))}</mnemonicList>\n'
        f'   <unitList>{escape(",".join(["unitless", *uoms]))}</unitList>\n',
    ]
    yield "".join(head)
    for ts, values in rows:
        yield f"   <data>{iso_ms(ts)},{','.join(['' if v is None else repr(v) for v in values])}</data>\n"
    yield '  </logData>\n </log>\n</logs>\n'


TEXTS = {"csv": csv_text, "las": las_text, "witsml": witsml_text}


def log_text(fmt: str, columns: Sequence[tuple[str, str]], rows: Iterable[Row], **options: object) -> Iterator[str]:
    """The log in `fmt` (csv, las or witsml) as pieces of text, one per row after the header.
    options: start_ms, end_ms (the range asked for), well, company."""
    try:
        text = TEXTS[fmt]
    except KeyError:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}") from None
    return text(columns, rows, **options)  # type: ignore[operator]


def write_log(fmt: str, out: TextIO, columns: Sequence[tuple[str, str]], rows: Iterable[Row],
              progress: Callable[[int, int], None] | None = None, **options: object) -> int:
    """Write the log to `out`; returns the rows written. progress(rows, ts_ms) every 1000 rows."""
    n = 0
    last_ts = 0

    def counted() -> Iterator[Row]:
        nonlocal n, last_ts
        for row in rows:
            yield row
            n += 1
            last_ts = row[0]
            if progress is not None and n % 1000 == 0:
                progress(n, last_ts)

    for piece in log_text(fmt, columns, counted(), **options):
        out.write(piece)
    if progress is not None:
        progress(n, last_ts)
    return n
