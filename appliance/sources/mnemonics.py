"""Which catalogue channel a recorded curve is, from its mnemonic and unit.

Recorded files name their curves after the service company's conventions: the catalogue's
own WITSML mnemonics (`SPPA`, `HKLA`), Baker Hughes' (`HKLD_AVG`, `PUMP`, `BITDEP`),
Schlumberger's and Geoservices' (`HKLD`, `SWOB`, `GS_TFLO`), and plain words. ALIASES lists,
per catalogue channel and in order of preference, the names that mean that channel;
when a file has several of them (Volve's time logs carry both `MDEPTH` and `Depth` for hole
depth) the most preferred one is used and the others are reported, never merged.

A curve whose unit is not given (empty, `unitless`, `Euc`) is taken to be in the
catalogue's unit, and the mapping says so. A curve in a unit of another dimension, or in an
unknown unit, is not mapped: it is listed in `Mapping.unmapped` with the reason, as is every
curve whose mnemonic is not known here. Nothing is dropped without a word.
"""

from __future__ import annotations

from typing import Iterable, Mapping as TMapping, NamedTuple

from appliance import units
from appliance.channels import BY_MNEMONIC, CATALOGUE

# catalogue mnemonic -> other names for it, most preferred first (matched case-insensitively)
ALIASES: dict[str, tuple[str, ...]] = {
    "DBTM": ("BITDEP", "DEPTH_BIT", "BIT_DEPTH", "BDEP", "DEPT", "DBTMM", "BIT_MD"),
    "DMEA": ("MDEPTH", "DEPTH_HOLE", "HOLE_DEPTH", "HDTH", "Depth", "DMEAM", "HOLE_MD", "MD"),
    "BPOS": ("BLOCKCOMP", "BLKPOS", "BLOCK_POS", "BLOCKPOS", "BLOCK_HEIGHT", "BHT", "BLOCKUCOMP"),
    "ROPA": ("ROP_AVG", "ROP", "GS_ROP", "ROP5", "ROPA_AVG"),
    "HKLA": ("HKLD_AVG", "HKLD", "GS_HKLD", "HOOKLOAD", "HKL", "HKLA_AVG"),
    "WOBA": ("WOB_AVG", "SWOB", "GS_SWOB", "CWOB", "WOB"),
    "TQA": ("TORQUE_AVG", "GS_TQA", "TORQUE", "TQ", "STOR", "TQA_AVG"),
    "RPMA": ("SURF_RPM", "RPM", "GS_RPM", "RPM_SURF", "TDRPM", "RPMA_AVG"),
    "SPPA": ("PUMP", "GS_SPPA", "SPP", "STANDPIPE", "SPPA_AVG"),
    "CHKP": ("CASPR", "CHOKE_PRESS", "CSGP", "CASING_PRESSURE", "CHOKE_PRESSURE"),
    "SPM1": ("STRATE1", "SPM_1", "PUMP1_SPM"),
    "SPM2": ("STRATE2", "SPM_2", "PUMP2_SPM"),
    "SPM3": ("STRATE3", "SPM_3", "PUMP3_SPM"),
    # Volve's recorder gives the total of all pits only; active volume is preferred when both exist
    "TVA": ("GS_TVA", "PIT_ACTIVE", "ACTIVE_PIT", "TVT", "PITTOT"),
    "MFOP": ("FLOWOUTPC", "FLOW_OUT_PCT", "MFOP_PCT", "FLWPADDLE"),
    "MFOA": ("FLOWOUT", "FLOW_OUT", "FLOWOUT_CORIOLIS", "GS_MFOA"),
    "MFIA": ("FLOWIN", "TFLO", "GS_TFLO", "FLOW_IN", "FLOW_PUMPS"),
    "MDOA": ("MWOUT", "GS_MDOA", "MW_OUT", "MUD_WT_OUT"),
    "MDIA": ("MWIN", "MWTI", "GS_MWTI", "MW_IN", "MUD_WT_IN"),
    "MTOA": ("MTOUT", "GS_MTOA", "MT_OUT", "TEMP_OUT"),
    "MTIA": ("MTIN", "GS_TDH", "GS_MTIA", "MT_IN", "TEMP_IN"),
    "GASA": ("TOTGAS", "GS_GASA", "GAS", "TGAS", "TOTAL_GAS"),
}

_RANKED: dict[str, tuple[str, int]] = {}
for _channel in CATALOGUE:
    for _rank, _name in enumerate((_channel.mnemonic, *ALIASES.get(_channel.mnemonic, ()))):
        _RANKED.setdefault(_name.upper(), (_channel.mnemonic, _rank))


class ChannelMap(NamedTuple):
    """One source curve that becomes a catalogue channel."""

    source: str  # the mnemonic in the file
    source_unit: str  # its unit as written ('' when none)
    channel: str  # catalogue mnemonic
    unit: str  # catalogue unit
    factor: float  # catalogue value = source value * factor + offset
    offset: float
    note: str = ""  # e.g. "unit not given; taken as psi"

    def convert(self, value: float) -> float:
        return value * self.factor + self.offset


class Unmapped(NamedTuple):
    """A source curve that is not published as a catalogue channel, and why."""

    source: str
    source_unit: str
    reason: str


class Mapping(NamedTuple):
    mapped: dict[str, ChannelMap]  # source mnemonic -> its channel
    unmapped: list[Unmapped]

    def describe(self) -> list[str]:
        """Readable lines, one per source curve: what it became, or why nothing."""
        lines = []
        for m in self.mapped.values():
            conv = "" if (m.factor, m.offset) == (1.0, 0.0) else f" (x{m.factor:.6g}{m.offset:+.6g})" \
                if m.offset else f" (x{m.factor:.6g})"
            lines.append(f"{m.source} [{m.source_unit or '-'}] -> {m.channel} [{m.unit}]{conv}"
                         + (f"; {m.note}" if m.note else ""))
        lines.extend(f"{u.source} [{u.source_unit or '-'}] not used: {u.reason}" for u in self.unmapped)
        return lines


def channel_for(mnemonic: str) -> str | None:
    """The catalogue channel a mnemonic names (its own name or a known alias), or None."""
    found = _RANKED.get(mnemonic.strip().upper())
    return found[0] if found else None


def map_channel(source: str, source_unit: str, channel: str) -> ChannelMap:
    """The conversion of one curve into a catalogue channel; UnitError when the unit cannot be."""
    target = BY_MNEMONIC[channel]
    if units.is_unspecified(source_unit):
        return ChannelMap(source, source_unit or "", channel, target.unit, 1.0, 0.0,
                          f"unit not given; taken as {target.unit}")
    conv = units.conversion(source_unit, target.unit)
    return ChannelMap(source, source_unit, channel, target.unit, conv.factor, conv.offset)


def resolve(curves: Iterable[tuple[str, str]], overrides: TMapping[str, str] | None = None) -> Mapping:
    """Map (mnemonic, unit) curves to catalogue channels.

    overrides: source mnemonic -> catalogue mnemonic, or '' to leave a curve out on purpose;
    they win over the aliases (a site whose recorder names things its own way).
    """
    overrides = {k.upper(): v for k, v in (overrides or {}).items()}
    best: dict[str, tuple[int, ChannelMap]] = {}  # channel -> (rank, map)
    unmapped: list[Unmapped] = []
    for source, unit in curves:
        unit = unit or ""
        key = source.strip().upper()
        if key in overrides:
            channel = overrides[key]
            if not channel:
                unmapped.append(Unmapped(source, unit, "left out by the mapping given"))
                continue
            if channel not in BY_MNEMONIC:
                unmapped.append(Unmapped(source, unit, f"mapped to {channel!r}, which is not in the catalogue"))
                continue
            rank = -1
        elif key in _RANKED:
            channel, rank = _RANKED[key]
        else:
            unmapped.append(Unmapped(source, unit, "mnemonic not known to the catalogue"))
            continue
        try:
            m = map_channel(source, unit, channel)
        except units.UnitError as e:
            unmapped.append(Unmapped(source, unit, f"would be {channel}, but {e}"))
            continue
        if channel in best:
            held_rank, held = best[channel]
            if rank < held_rank:
                best[channel] = (rank, m)
                unmapped.append(Unmapped(held.source, held.source_unit,
                                         f"also {channel}; {source} is preferred"))
            else:
                unmapped.append(Unmapped(source, unit, f"also {channel}; {held.source} is preferred"))
            continue
        best[channel] = (rank, m)
    mapped = {m.source: m for _, m in best.values()}
    return Mapping(mapped, unmapped)
