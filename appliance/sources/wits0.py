"""WITS level 0: the framing, the site mapping file, and values in and out. Pure functions.

A WITS0 frame is ASCII lines: `&&`, then one line per item — a four-digit record+item code
and the value, `01085012.40` — then `!!`, each line ended by CR LF. Recorders differ, so
the parser is liberal in what it takes: LF or CR alone, spaces around or inside a line
(`0108 5012.4`), a frame whose `!!` never came (closed by the next `&&` or by the end of
the connection). It is strict about what it keeps: every line it cannot use is returned as
a BadLine with the reason, for counting and the dead letters — noise, binary bytes, a line
longer than any WITS0 line, a data line outside a frame (the tail of a frame cut by a
reconnect), a stray `!!`.

The site mapping file says which codes this rig's recorder sends, which catalogue channel
each one is and in which unit it comes (every rig configures its recorder differently):

    # CODE  CHANNEL  UNIT   [DECIMALS]
    0108    DBTM     m                  # bit depth, metric recorder
    0121    SPPA     kPa
    0101    -                           # well id: text, deliberately not a channel

`decode_frame()` applies it: values converted to catalogue units and checked against the
catalogue's plausible range; codes the file does not know, values that are not numbers,
and absurd values come back separately, never silently dropped. `encode_frame()` writes
a frame for `rigtel wits0-out`, in the codes, units and decimals of its own mapping file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from appliance import units
from appliance.channels import BY_MNEMONIC, check_value

MAX_LINE = 128  # the longest WITS0 line is ~30 bytes; anything far longer is noise
_CODE = re.compile(r"^\d{4}$")
_CHANNEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/%-]{0,127}$")


class Frame(NamedTuple):
    items: list[tuple[bytes, bytes]]  # (4-digit code, value text) in arrival order
    footer: bool  # False: closed by a new `&&` or the end of the connection, not by `!!`


class BadLine(NamedTuple):
    reason: str
    raw: bytes


class Wits0Parser:
    """Turns a byte stream into frames and bad lines; feed() as bytes arrive, end() at disconnect.

    Totals: `lines` (non-blank lines seen, a run of noise too long to be a line counting as
    one), `markers` (&& and !! taken), `frames`, `frames_without_footer`, `bad_lines`. Every
    line is an item of a frame returned, a marker, or a bad line returned:
    lines == items + markers + bad_lines, none lost uncounted.
    """

    def __init__(self) -> None:
        self._rest = b""
        self._skipping = False  # inside a run of noise already reported: drop to the next line end
        self._items: list[tuple[bytes, bytes]] | None = None  # the open frame
        self.lines = 0
        self.markers = 0  # && and !! lines taken
        self.frames = 0
        self.frames_without_footer = 0
        self.bad_lines = 0

    def feed(self, data: bytes) -> tuple[list[Frame], list[BadLine]]:
        frames: list[Frame] = []
        bad: list[BadLine] = []
        if b"\r" in data:  # CR LF as one line end (not two: half the loop), a lone CR as one too
            data = data.replace(b"\r\n", b"\n")
            if b"\r" in data:
                data = data.replace(b"\r", b"\n")
        if self._skipping:
            cut = data.find(b"\n")
            if cut < 0:
                return frames, bad
            data = data[cut + 1:]
            self._skipping = False
        chunk = self._rest + data if self._rest else data
        lines = chunk.split(b"\n")
        rest = lines.pop()
        n = 0
        overlong = None
        if len(rest) > MAX_LINE:  # no line end in sight: noise, reported after the lines before it
            n += 1
            overlong = BadLine("line too long: not WITS0 (noise or binary data?)", rest[:MAX_LINE * 4])
            rest = b""
            self._skipping = True
        self._rest = rest
        items = self._items
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            n += 1
            head = line[:4]
            if head.isdigit() and len(line) > 4:
                if items is None:
                    bad.append(BadLine("data line outside a frame (no && before it)", raw))
                else:
                    items.append((head, line[4:].lstrip()))
            elif line == b"&&":
                if items:
                    frames.append(Frame(items, False))
                items = []
                self.markers += 1
            elif line == b"!!":
                if items is None:
                    bad.append(BadLine("!! without a frame", raw))
                else:
                    frames.append(Frame(items, True))
                    items = None
                    self.markers += 1
            elif len(line) > MAX_LINE:
                bad.append(BadLine("line too long: not WITS0 (noise or binary data?)", raw[:MAX_LINE * 4]))
            else:
                bad.append(BadLine("not a WITS0 line", raw))
        self._items = items
        if overlong is not None:
            bad.append(overlong)
        self._count(n, frames, bad)
        return frames, bad

    def end(self) -> tuple[list[Frame], list[BadLine]]:
        """The connection ended: a frame still open is closed (its !! never came)."""
        frames: list[Frame] = []
        bad: list[BadLine] = []
        n = 0
        line = self._rest.strip()
        if line:
            n = 1  # a last line without its line end
            if self._items is not None and line[:4].isdigit() and len(line) > 4:
                self._items.append((line[:4], line[4:].lstrip()))
            elif line == b"!!" and self._items is not None:
                frames.append(Frame(self._items, True))
                self._items = None
                self.markers += 1
            else:
                bad.append(BadLine("half a line at the end of the connection", self._rest))
        self._rest = b""
        self._skipping = False
        if self._items:
            frames.append(Frame(self._items, False))
        self._items = None
        self._count(n, frames, bad)
        return frames, bad

    def _count(self, n: int, frames: list[Frame], bad: list[BadLine]) -> None:
        self.lines += n
        self.frames += len(frames)
        self.frames_without_footer += sum(1 for f in frames if not f.footer)
        self.bad_lines += len(bad)


# --- the site mapping file -------------------------------------------------------------


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Entry:
    code: str
    channel: str  # "" when the code is deliberately not a channel
    unit: str  # the unit on the wire
    factor: float  # catalogue value = wire value * factor + offset
    offset: float
    decimals: int  # for wits0-out
    low: float  # plausible range in catalogue units (+-inf outside the catalogue)
    high: float


class SiteMap(NamedTuple):
    path: str
    entries: dict[bytes, Entry]  # code -> entry (ignored codes included, channel "")
    # code -> (channel, factor, offset, low, high), None for an ignored code: the decoder's
    # per-item lookup without attribute access (it runs for every line received)
    table: dict[bytes, tuple[str, float, float, float, float] | None]

    def channels(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.channel]


def parse_site_map(text: str, path: str = "<mapping>", allow_unknown_channels: bool = True) -> SiteMap:
    """Read a mapping file's text; MappingError names the line at fault and what it expects."""
    entries: dict[bytes, Entry] = {}
    for number, full in enumerate(text.splitlines(), 1):
        line = full.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{number}"
        parts = line.split()
        if not 2 <= len(parts) <= 4:
            raise MappingError(f"{where}: expected 'CODE CHANNEL [UNIT] [DECIMALS]', got {full.strip()!r}")
        code, channel = parts[0], parts[1]
        if not _CODE.match(code) or code[:2] == "00" or code[2:] == "00":
            raise MappingError(f"{where}: {code!r} is not a WITS0 code (four digits, record 01-99 "
                               "then item 01-99, e.g. 0108)")
        if code.encode() in entries:
            raise MappingError(f"{where}: code {code} is mapped twice")
        if channel == "-":
            entries[code.encode()] = Entry(code, "", "", 1.0, 0.0, 2, -math.inf, math.inf)
            continue
        if not _CHANNEL.match(channel):
            raise MappingError(f"{where}: {channel!r} is not a channel name")
        catalogue = BY_MNEMONIC.get(channel)
        if catalogue is None and not allow_unknown_channels:
            raise MappingError(f"{where}: {channel} is not in the catalogue")
        unit = parts[2] if len(parts) > 2 else (catalogue.unit if catalogue else "")
        decimals = 2
        if len(parts) > 3:
            try:
                decimals = int(parts[3])
                if not 0 <= decimals <= 9:
                    raise ValueError
            except ValueError:
                raise MappingError(f"{where}: DECIMALS must be a whole number 0-9, not {parts[3]!r}") from None
        factor, offset = 1.0, 0.0
        if catalogue is not None and not units.is_unspecified(unit):
            try:
                conv = units.conversion(unit, catalogue.unit)
            except units.UnitError as e:
                raise MappingError(f"{where}: {channel} is stored in {catalogue.unit}: {e}") from None
            factor, offset = conv.factor, conv.offset
        low, high = (catalogue.low, catalogue.high) if catalogue else (-math.inf, math.inf)
        entries[code.encode()] = Entry(code, channel, unit, factor, offset, decimals, low, high)
    if not any(e.channel for e in entries.values()):
        raise MappingError(f"{path}: maps no code to a channel")
    table = {code: (e.channel, e.factor, e.offset, e.low, e.high) if e.channel else None
             for code, e in entries.items()}
    return SiteMap(path, entries, table)


def load_site_map(path: str, **kwargs: bool) -> SiteMap:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_site_map(f.read(), path, **kwargs)
    except OSError as e:
        raise MappingError(f"cannot read the WITS0 mapping file {path}: {e.strerror or e}") from None


# --- frames to channel values and back -------------------------------------------------


class Decoded(NamedTuple):
    values: dict[str, float]  # catalogue channel -> value in catalogue units
    bad: list[BadLine]  # not a number, absurd
    unmapped: list[tuple[bytes, bytes]]  # (code, value) the mapping does not know


def decode_frame(frame: Frame, site: SiteMap) -> Decoded:
    values: dict[str, float] = {}
    bad: list[BadLine] = []
    unmapped: list[tuple[bytes, bytes]] = []
    table = site.table
    missing = _MISSING
    for code, text in frame.items:
        entry = table.get(code, missing)
        if entry is None:  # ignored on purpose
            continue
        if entry is missing:
            unmapped.append((code, text))
            continue
        channel, factor, offset, low, high = entry
        try:
            v = float(text) * factor + offset
        except ValueError:
            bad.append(BadLine(f"{code.decode()} ({channel}): value is not a number", code + text))
            continue
        if not low <= v <= high:  # also refuses NaN and infinities
            reason = check_value(channel, v) or f"{channel}: {v!r} is not finite"
            bad.append(BadLine(f"{code.decode()} ({reason})", code + text))
            continue
        values[channel] = v
    return Decoded(values, bad, unmapped)


_MISSING = ("", 1.0, 0.0, 0.0, 0.0)


def encode_frame(values: dict[str, float], site: SiteMap) -> bytes:
    """One WITS0 frame of the mapped channels present in `values` (catalogue units in);
    b"" when none is present."""
    lines = []
    for entry in site.entries.values():
        if not entry.channel:
            continue
        v = values.get(entry.channel)
        if v is None or not math.isfinite(v):
            continue
        wire = (v - entry.offset) / entry.factor
        lines.append(f"{entry.code}{wire:.{entry.decimals}f}\r\n")
    if not lines:
        return b""
    return ("&&\r\n" + "".join(lines) + "!!\r\n").encode("ascii")


def unescape(text: str) -> bytes:
    r"""A keep-alive setting's text with \r, \n, \t and \\ turned into the bytes they name."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"r": "\r", "n": "\n", "t": "\t", "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out).encode("latin-1")
