"""Reading recorded drilling logs: CSV, WITSML 1.4.1.1 `<log>` documents and LAS 2.0.

    from appliance.sources.files import open_log
    log = open_log("F-4_GenTime_time-log.xml")        # format from the content
    for line in log.channels.describe(): print(line)  # what each curve became, or why not
    for ts_ms, values in log.rows():                  # catalogue mnemonics, catalogue units
        ...

`open_log()` reads only the header: which curves there are, their units, the index. The
mapping to the catalogue (`log.channels`, see appliance.sources.mnemonics) is known before
any row is read, so a caller can show it or refuse to go on. `rows()` then streams the
data from the file in constant memory (WITSML through `iterparse`, clearing each row; LAS
and CSV line by line) and can be called again to start over.

Rows come out as `(ts_ms, {mnemonic: value})`, UTC epoch milliseconds and catalogue units,
without the channels that are null in that row (`-999.25`, the file's own null value, an
empty cell). Rows that cannot be used — an unreadable time, a time not after the previous
row's, a cell that is not a number — are skipped, counted in `log.problems` by reason, and
handed to `on_bad(reason, line)` when given (replay dead-letters them).

Depth-indexed logs (WITSML `indexType` measured depth, LAS `DEPT`, CSV whose first column
is a depth) have no time: rows get a synthetic clock, `depth_start_ms` plus `depth_step_ms`
per row, and the index depth becomes the hole depth `DMEA`.

Times without a zone are taken as UTC. CSV's time column may be ISO 8601 or epoch seconds
or milliseconds; LAS's time index is epoch seconds, or seconds from the well section's DATE.
"""

from __future__ import annotations

import csv
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator, Mapping as TMapping

from appliance import units
from appliance.channels import BY_MNEMONIC
from appliance.sources.mnemonics import ChannelMap, Mapping, Unmapped, map_channel, resolve

FORMATS = ("csv", "witsml", "las")
NULL_VALUE = -999.25
NULL_TEXT = frozenset({"", "-999.25", "nan", "null", "none", "n/a", "na", "-"})
DEFAULT_DEPTH_STEP_MS = 1000

Row = tuple[int, dict[str, float]]
BadRow = Callable[[str, str], None]  # (reason, the row as text)


class LogError(ValueError):
    """A file that cannot be read as a drilling log; the message says what is wrong and what to do."""


@dataclass
class RecordedLog:
    """A recorded log whose header has been read; `rows()` streams its data."""

    path: str
    format: str  # csv | witsml | las
    index: str  # "time" or "depth"
    channels: Mapping  # source mnemonic -> catalogue channel; and the curves left out, with why
    info: dict[str, str] = field(default_factory=dict)  # well, wellbore, log name, company, dates
    problems: Counter = field(default_factory=Counter)  # reason -> rows skipped, from the last rows()
    _raw: Callable[[], Iterator[tuple[int, list[str]]]] | None = field(default=None, repr=False)
    _index_column: int = 0
    _columns: dict[str, int] = field(default_factory=dict, repr=False)  # source mnemonic -> cell index
    _time_of: Callable[[str], int] | None = field(default=None, repr=False)
    _nulls: frozenset = NULL_TEXT
    _null_value: float = NULL_VALUE
    _depth_map: ChannelMap | None = field(default=None, repr=False)  # the depth index -> DMEA
    depth_start_ms: int = 0
    depth_step_ms: int = DEFAULT_DEPTH_STEP_MS

    def rows(self, on_bad: BadRow | None = None, extra: bool = False) -> Iterator[Row]:
        """(ts_ms, {channel: value in catalogue units}) per row, in file order.

        extra: also give the numeric curves that map to no catalogue channel, under their
        own mnemonic and in their own units (for study, not for the `drilling` topic).
        """
        self.problems.clear()
        plan: list[tuple[int, str, float, float]] = [
            (self._columns[m.source], m.channel, m.factor, m.offset)
            for m in self.channels.mapped.values() if m.source in self._columns]
        if extra:  # never under a catalogue name: those values would be in the wrong unit
            plan += [(self._columns[u.source], u.source, 1.0, 0.0) for u in self.channels.unmapped
                     if u.source in self._columns and u.source.upper() not in BY_MNEMONIC]
        nulls, null_value = self._nulls, self._null_value
        index_col, time_of = self._index_column, self._time_of
        width = max([c for c, *_ in plan] + [index_col]) + 1
        depth_channel = self._depth_map if self.index == "depth" else None
        previous_ts = -1
        n = 0
        assert self._raw is not None
        for line_no, cells in self._raw():
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            index_text = cells[index_col].strip()
            if time_of is not None:
                try:
                    ts = time_of(index_text)
                except ValueError:
                    self._bad(on_bad, "time not readable", line_no, cells)
                    continue
                if ts <= previous_ts:
                    self._bad(on_bad, "time not after the previous row's", line_no, cells)
                    continue
            else:
                ts = self.depth_start_ms + n * self.depth_step_ms
            values: dict[str, float] = {}
            if depth_channel is not None:
                try:
                    depth = float(index_text)
                except ValueError:
                    self._bad(on_bad, "depth not readable", line_no, cells)
                    continue
                if depth != null_value and math.isfinite(depth):
                    values[depth_channel.channel] = depth * depth_channel.factor + depth_channel.offset
            bad_cell = None
            for col, name, factor, offset in plan:
                text = cells[col]
                if text in nulls:
                    continue
                try:
                    v = float(text)
                except ValueError:
                    text = text.strip()
                    if text.lower() in nulls:
                        continue
                    try:
                        v = float(text)
                    except ValueError:
                        bad_cell = bad_cell or name
                        continue
                if v == null_value or not math.isfinite(v):
                    continue
                values[name] = v * factor + offset
            if bad_cell is not None:
                # the row's good values still count; the bad cell is reported
                self._bad(on_bad, f"not a number in {bad_cell}", line_no, cells, skipped=False)
            previous_ts = ts
            n += 1
            if values:
                yield ts, values
            else:
                self.problems["rows with no values"] += 1

    def _bad(self, on_bad: BadRow | None, reason: str, line_no: int, cells: list[str],
             skipped: bool = True) -> None:
        self.problems[reason] += 1
        if on_bad is not None:
            on_bad(reason, f"{os.path.basename(self.path)}:{line_no}: " + ",".join(cells)[:2000])

    def summary(self) -> str:
        what = ", ".join(f"{k}: {v}" for k, v in self.info.items() if not k.startswith("_") and v)
        return (f"{self.format} {self.index}-indexed log {os.path.basename(self.path)}"
                + (f" ({what})" if what else "") + "; "
                f"{len(self.channels.mapped)} catalogue channels, {len(self.channels.unmapped)} curves not used")


# --- times ----------------------------------------------------------------------------


def parse_time(text: str) -> int:
    """UTC epoch ms from ISO 8601 (zone optional, UTC assumed) or epoch seconds/milliseconds.

    A bare number is epoch milliseconds when above 1e11 (after 1973-03-03 in ms, or year
    5138 in seconds), else epoch seconds. Raises ValueError when it is neither.
    """
    t = text.strip()
    if not t:
        raise ValueError("empty time")
    c = t[0]
    if c.isdigit() and len(t) >= 10 and t[4] == "-":
        if t.endswith(("Z", "z")):
            t = t[:-1] + "+00:00"
        dt = datetime.fromisoformat(t)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        # integer arithmetic: float timestamps lose the millisecond on some values
        delta = dt - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000
    value = float(t)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a time: {text!r}")
    return int(round(value)) if value > 1e11 else int(round(value * 1000))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _time_or_none(text: str | None) -> int | None:
    try:
        return parse_time(text) if text else None
    except ValueError:
        return None


# --- format detection -----------------------------------------------------------------


def detect_format(path: str) -> str:
    """csv, witsml or las from the file's first bytes (then its name)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return "witsml"
    if text.startswith(b"~") or re.search(rb"^~V", head, re.M):
        return "las"
    ext = os.path.splitext(path)[1].lower()
    if ext in (".xml", ".witsml"):
        return "witsml"
    if ext == ".las":
        return "las"
    return "csv"


def open_log(path: str, format: str | None = None, *, mapping: TMapping[str, str] | None = None,
             depth_start_ms: int | None = None, depth_step_ms: int = DEFAULT_DEPTH_STEP_MS) -> RecordedLog:
    """Read a log's header; `format` is csv, witsml or las (default: from the content).

    mapping: source mnemonic -> catalogue mnemonic ('' leaves a curve out), over the
    built-in aliases. depth_start_ms/depth_step_ms: the synthetic clock of depth-indexed
    logs (default start: the log's own date when it has one, else 0).
    Raises LogError with what is wrong, OSError when the file cannot be opened.
    """
    fmt = (format or detect_format(path)).lower()
    if fmt not in FORMATS:
        raise LogError(f"unknown format {format!r}: expected one of {', '.join(FORMATS)}")
    if depth_step_ms <= 0:
        raise LogError("the depth log clock step must be positive")
    reader = {"csv": _open_csv, "witsml": _open_witsml, "las": _open_las}[fmt]
    log = reader(path, mapping or {})
    log.depth_step_ms = depth_step_ms
    if depth_start_ms is not None:
        log.depth_start_ms = depth_start_ms
    return log


_TIME_AGAIN = {"TS_MS", "EPOCH_MS", "TIME_MS"}  # the time in a second column (our own CSV export)


def _finish(log: RecordedLog, curves: list[tuple[str, str]], index_pos: int,
            mapping: TMapping[str, str]) -> RecordedLog:
    """Map the non-index curves, and for depth logs the index itself to DMEA."""
    # a name used twice: the later columns get a name of their own and are reported, so the
    # first column's conversion is never applied to another's cells
    seen: dict[str, int] = {}
    renamed: list[tuple[str, str, str]] = []  # (new name, unit, original)
    unique = []
    for i, (m, u) in enumerate(curves):
        key = m.upper()
        if key in seen and i != index_pos:
            seen[key] += 1
            unique.append((f"{m}_{seen[key]}", u))
            renamed.append((unique[-1][0], u, m))
        else:
            seen.setdefault(key, 1)
            unique.append((m, u))
    curves = unique
    skip = {name for name, _, _ in renamed}
    others = [(m, u) for i, (m, u) in enumerate(curves)
              if i != index_pos and m.upper() not in _TIME_AGAIN and m not in skip]
    log.channels = resolve(others, mapping)
    log.channels.unmapped.extend(Unmapped(m, u, "the time again; the first column is the time used")
                                 for i, (m, u) in enumerate(curves) if i != index_pos and m.upper() in _TIME_AGAIN)
    log.channels.unmapped.extend(Unmapped(name, u, f"a second column named {original}; the first is used")
                                 for name, u, original in renamed)
    log._columns = {m: i for i, (m, _) in enumerate(curves) if i != index_pos}
    log._index_column = index_pos
    if log.index == "depth":
        index_name, index_unit = curves[index_pos]
        held = next((m for m in log.channels.mapped.values() if m.channel == "DMEA"), None)
        try:
            depth_map = map_channel(index_name, index_unit, "DMEA")
        except units.UnitError as e:
            raise LogError(f"{log.path}: the depth index {index_name} has unit {index_unit!r}: {e}") from None
        if held is not None:  # the index is the row's depth: it wins over a DMEA column
            del log.channels.mapped[held.source]
            log.channels.unmapped.append(Unmapped(held.source, held.source_unit,
                                                  f"also DMEA; the depth index {index_name} is used"))
        log._depth_map = depth_map
        log.channels.mapped[index_name] = depth_map._replace(note=(depth_map.note + "; " if depth_map.note else "")
                                                             + "the depth index")
        if not log.depth_start_ms:
            log.depth_start_ms = _time_or_none(log.info.get("date")) or 0
    return log


# --- CSV ------------------------------------------------------------------------------

_HEADER_UNIT = re.compile(r"^\s*(.*?)\s*[\[(]\s*([^\])]*?)\s*[\])]\s*$")
_DEPTH_NAMES = {"DEPTH", "DEPT", "MD", "DMEA", "DBTM", "BITDEP", "MDEPTH", "INDEX_DEPTH"}


def _split_header(cell: str) -> tuple[str, str]:
    m = _HEADER_UNIT.match(cell)
    return (m.group(1), m.group(2)) if m else (cell.strip(), "")


def _csv_dialect(line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


def _open_csv(path: str, mapping: TMapping[str, str]) -> RecordedLog:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        header: list[str] | None = None
        second: list[str] | None = None
        delimiter = ","
        skip = 0  # lines before the data
        for line in f:
            skip += 1
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if header is None:
                delimiter = _csv_dialect(line)
                header = next(csv.reader([line], delimiter=delimiter))
                continue
            second = next(csv.reader([line], delimiter=delimiter))
            break
    if not header or len(header) < 2:
        raise LogError(f"{path}: no CSV header with a time column and at least one channel column "
                       "(expected e.g. 'time,SPPA [kPa],HKLA [klbf]')")
    curves = [_split_header(c) for c in header]
    units_row = False
    if second is not None and second[0].strip():
        try:
            parse_time(second[0])
        except ValueError:
            rest = [c.strip() for c in second[1:]]
            first_is_number = _is_number(second[0])
            if not first_is_number and not any(_is_number(c) for c in rest if c):
                units_row = True  # a second header row of units, as WITSML tools export
                curves = [(m, u or (second[i].strip() if i < len(second) else ""))
                          for i, (m, u) in enumerate(curves)]
    index_name, index_unit = curves[0]
    is_depth = (index_name.upper() in _DEPTH_NAMES
                or units.dimension(index_unit or "-") == "length")
    log = RecordedLog(path, "csv", "depth" if is_depth else "time", Mapping({}, []))
    # lines before the first data row: the second line read is data unless it held units
    data_from = skip if (second is None or units_row) else skip - 1

    def raw() -> Iterator[tuple[int, list[str]]]:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            for _ in range(data_from):
                f.readline()
            line_no = data_from
            for cells in csv.reader(f, delimiter=delimiter):
                line_no += 1
                if not cells or (len(cells) == 1 and not cells[0].strip()) or cells[0].lstrip().startswith("#"):
                    continue
                yield line_no, cells

    log._raw = raw
    if not is_depth:
        log._time_of = parse_time
    return _finish(log, curves, 0, mapping)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# --- WITSML 1.4.1.1 (and 1.3.1.1) <log> ------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _open_witsml(path: str, mapping: TMapping[str, str]) -> RecordedLog:
    info: dict[str, str] = {}
    curve_info: list[dict[str, str]] = []
    mnemonic_list = unit_list = None
    index_type = index_curve = ""
    null_value = ""
    depth = 0  # nesting depth inside the first <log>
    in_log = False
    current: dict[str, str] | None = None
    try:
        for event, elem in ET.iterparse(path, events=("start", "end")):
            tag = _local(elem.tag)
            if event == "start":
                if tag == "log" and not in_log and not info.get("_seen_log"):
                    in_log, info["_seen_log"] = True, "1"
                    depth = 0
                elif in_log:
                    depth += 1
                    if tag == "logCurveInfo" and depth == 1:
                        current = {}
                    elif tag == "data":
                        break  # the header is read; rows() reads the data
                continue
            if not in_log:
                continue
            if tag == "log":
                break
            text = (elem.text or "").strip()
            if current is not None and depth == 2:
                if tag in ("mnemonic", "unit", "nullValue", "columnIndex", "curveDescription"):
                    current[tag] = text
            elif tag == "logCurveInfo" and depth == 1 and current is not None:
                curve_info.append(current)
                current = None
            elif depth == 1:
                if tag in ("nameWell", "nameWellbore", "name", "serviceCompany", "creationDate",
                           "startDateTimeIndex", "endDateTimeIndex"):
                    info[tag] = text
                elif tag in ("startIndex", "endIndex"):
                    info[tag] = f"{text} {elem.get('uom', '')}".strip()
                elif tag == "indexType":
                    index_type = text
                elif tag == "indexCurve":
                    index_curve = text
                elif tag == "nullValue":
                    null_value = text
            elif depth == 2 and tag == "mnemonicList":
                mnemonic_list = text
            elif depth == 2 and tag == "unitList":
                unit_list = text
            if event == "end":
                depth -= 1
            elem.clear()
    except ET.ParseError as e:
        raise LogError(f"{path}: not well-formed XML ({e}); is it a WITSML log?") from None
    if not info.get("_seen_log"):
        raise LogError(f"{path}: no WITSML <log> element; expected a WITSML 1.4.1.1 <logs><log> document")
    if mnemonic_list:
        names = [m.strip() for m in mnemonic_list.split(",")]
        unit_cells = [u.strip() for u in unit_list.split(",")] if unit_list else []
        by_name = {c.get("mnemonic", ""): c for c in curve_info}
        curves = [(n, unit_cells[i] if i < len(unit_cells) and unit_cells[i]
                   else by_name.get(n, {}).get("unit", "")) for i, n in enumerate(names)]
    elif curve_info:  # WITSML 1.3.1: column order from logCurveInfo/columnIndex
        ordered = sorted(curve_info, key=lambda c: int(c.get("columnIndex") or 0))
        curves = [(c.get("mnemonic", ""), c.get("unit", "")) for c in ordered]
    else:
        raise LogError(f"{path}: the <log> has neither a mnemonicList nor logCurveInfo: no curves to read")
    upper = [m.upper() for m, _ in curves]
    if not index_curve:
        index_curve = curves[0][0]
    if index_curve.upper() not in upper:
        raise LogError(f"{path}: the index curve {index_curve!r} is not among the log's curves")
    index_pos = upper.index(index_curve.upper())
    is_time = "time" in index_type.lower() or (not index_type and units.dimension(curves[index_pos][1]) != "length")
    info_out = {"well": info.get("nameWell", ""), "wellbore": info.get("nameWellbore", ""),
                "log": info.get("name", ""), "company": info.get("serviceCompany", ""),
                "start": info.get("startDateTimeIndex") or info.get("startIndex", ""),
                "end": info.get("endDateTimeIndex") or info.get("endIndex", ""),
                "date": info.get("startDateTimeIndex") or info.get("creationDate", "")}
    log = RecordedLog(path, "witsml", "time" if is_time else "depth", Mapping({}, []), info_out)
    nulls = set(NULL_TEXT)
    numeric_null = NULL_VALUE
    if null_value:
        nulls.add(null_value)
        try:
            numeric_null = float(null_value)
        except ValueError:
            pass
    for c in curve_info:  # per-curve null values, rarely different from the log's
        if c.get("nullValue"):
            nulls.add(c["nullValue"])
    log._nulls = frozenset(nulls)
    log._null_value = numeric_null

    def raw() -> Iterator[tuple[int, list[str]]]:
        n = 0
        inside = False
        log_data = None
        for event, elem in ET.iterparse(path, events=("start", "end")):
            tag = _local(elem.tag)
            if event == "start":
                if tag == "log":
                    if inside or n:
                        return
                    inside = True
                elif tag == "logData":
                    log_data = elem
                continue
            if tag == "data" and inside:
                n += 1
                yield n, (elem.text or "").split(",")
                if log_data is not None:
                    log_data.clear()  # constant memory: drop the rows already read
                else:
                    elem.clear()
            elif tag == "log" and inside:
                return

    log._raw = raw
    if is_time:
        log._time_of = parse_time
    return _finish(log, curves, index_pos, mapping)


# --- LAS 2.0 (lasio) ------------------------------------------------------------------

_TIME_INDEX = {"TIME", "ETIM", "DATE", "DATETIME", "TIM", "EPOCH", "TIMESTAMP"}


def _open_las(path: str, mapping: TMapping[str, str]) -> RecordedLog:
    import lasio  # only LAS needs it; importing it costs ~0.3 s

    try:
        las = lasio.read(path, ignore_data=True, ignore_header_errors=True)
    except Exception as e:  # lasio raises many kinds for a bad header
        raise LogError(f"{path}: not a readable LAS file ({type(e).__name__}: {e})") from None
    curves = [(c.mnemonic, c.unit or "") for c in las.curves]
    if len(curves) < 2:
        raise LogError(f"{path}: the LAS ~Curve section lists {len(curves)} curve(s); "
                       "expected the index and at least one channel")

    def well(name: str) -> str:
        try:
            return str(las.well[name].value).strip()
        except (KeyError, AttributeError):
            return ""

    try:
        wrapped = str(las.version["WRAP"].value).strip().upper().startswith("Y")
    except KeyError:
        wrapped = False
    null_text = well("NULL")
    index_name, index_unit = curves[0]
    is_time = index_name.upper() in _TIME_INDEX or units.dimension(index_unit or "-") == "time"
    date = well("DATE")
    info = {"well": well("WELL"), "company": well("COMP") or well("SRVC"), "field": well("FLD"),
            "start": well("STRT"), "end": well("STOP"), "date": date if _time_or_none(date) else ""}
    log = RecordedLog(path, "las", "time" if is_time else "depth", Mapping({}, []), info)
    nulls = set(NULL_TEXT)
    try:
        log._null_value = float(null_text) if null_text else NULL_VALUE
        nulls.add(null_text)
    except ValueError:
        pass
    log._nulls = frozenset(nulls)

    if wrapped:
        # Wrapped LAS (one row over several lines) is rare in drilling data; lasio reads it
        # whole, so such a file is held in memory.
        def raw() -> Iterator[tuple[int, list[str]]]:
            full = lasio.read(path, ignore_header_errors=True)
            for n, row in enumerate(full.data, 1):
                yield n, [repr(float(v)) for v in row]
    else:
        def raw() -> Iterator[tuple[int, list[str]]]:
            with open(path, encoding="utf-8", errors="replace") as f:
                line_no = 0
                for line in f:
                    line_no += 1
                    if line[:2].upper() == "~A":
                        break
                for line in f:
                    line_no += 1
                    s = line.strip()
                    if not s or s.startswith("#"):
                        continue
                    if s.startswith("~"):
                        return
                    yield line_no, s.split()

    log._raw = raw
    if is_time:
        scale = 1000.0
        if index_unit and units.dimension(index_unit) == "time":
            scale = units.conversion(index_unit, "s").factor * 1000.0
        origin = _time_or_none(date) or 0

        def time_of(text: str) -> int:
            try:
                v = float(text)
            except ValueError:
                return parse_time(text)  # an ISO time in the index column (LAS 3 style)
            if not math.isfinite(v):
                raise ValueError("not finite")
            ms = v * scale
            # epoch seconds stand alone; small values are seconds from the well's DATE
            return int(round(ms)) if ms > 1e11 else origin + int(round(ms))

        log._time_of = time_of
    return _finish(log, curves, 0, mapping)


def read_all(path: str, format: str | None = None) -> list[Row]:
    """Every row of a log in memory: for tests and small files only."""
    return list(open_log(path, format).rows())
