"""Units of measure: conversion between what a source writes and what the catalogue stores.

Every unit is a dimension and a linear map to that dimension's base unit (SI, except
rotation and stroke rates, whose base is "per minute"): base = value * factor + offset.
A conversion from one unit to another of the same dimension is then one multiply and one
add, computed once per channel and applied per value (`Conversion.apply`).

Names are matched case-insensitively after spaces are removed, and each unit has the
spellings recorders and WITSML/LAS files actually use (`kN.m`, `kNm`, `kft.lbf`,
`lbf.ft`, `c/s`, `1/min`, `m3/s`, `L/min`, `galUS/min`, `g/cm3`, `degC`, `K`, ...).
A unit that is unknown, or of another dimension than the one asked for, raises UnitError
with what was expected: a wrong unit must never pass silently as a right one.

"Dimensionless" spellings (empty, `unitless`, `none`, `Euc` — engineering units, which
says nothing) carry no information; callers decide whether to assume the catalogue unit
(and say so) — see `is_unspecified`.
"""

from __future__ import annotations

from typing import NamedTuple


class UnitError(ValueError):
    """A unit that cannot be converted as asked; the message says what was expected."""


class Unit(NamedTuple):
    dimension: str
    factor: float  # base = value * factor + offset
    offset: float = 0.0


LBF_N = 4.4482216152605
FT_M = 0.3048
GAL_M3 = 0.003785411784
BBL_M3 = 0.158987294928
PSI_PA = 6894.757293168361
KGF_N = 9.80665
LBM_KG = 0.45359237

# canonical spelling -> (unit, other spellings)
_TABLE: dict[str, tuple[Unit, tuple[str, ...]]] = {
    # length
    "m": (Unit("length", 1.0), ("meter", "meters", "metre", "metres")),
    "ft": (Unit("length", FT_M), ("feet", "foot", "ftus")),
    "in": (Unit("length", 0.0254), ("inch", "inches")),
    "cm": (Unit("length", 0.01), ()),
    "mm": (Unit("length", 0.001), ()),
    "km": (Unit("length", 1000.0), ()),
    # speed (rate of penetration, tripping speed)
    "m/s": (Unit("speed", 1.0), ()),
    "m/h": (Unit("speed", 1 / 3600), ("m/hr", "m/hour")),
    "m/min": (Unit("speed", 1 / 60), ()),
    "ft/h": (Unit("speed", FT_M / 3600), ("ft/hr", "fph", "ft/hour")),
    "ft/min": (Unit("speed", FT_M / 60), ("fpm",)),
    "ft/s": (Unit("speed", FT_M), ("fps",)),
    # force (hookload, weight on bit)
    "N": (Unit("force", 1.0), ("newton", "newtons")),
    "kN": (Unit("force", 1000.0), ()),
    "daN": (Unit("force", 10.0), ()),
    "lbf": (Unit("force", LBF_N), ("lb", "lbs")),
    "klbf": (Unit("force", 1000 * LBF_N), ("klb", "kips", "kip", "1000lbf", "klbs")),
    "kgf": (Unit("force", KGF_N), ()),
    "kkgf": (Unit("force", 1000 * KGF_N), ("tonf_metric", "tf", "tonnef", "mt")),
    "tonf": (Unit("force", 2000 * LBF_N), ("tonf_us", "ton")),
    # torque
    "N.m": (Unit("torque", 1.0), ("nm", "n-m", "n.m", "newton.meter")),
    "kN.m": (Unit("torque", 1000.0), ("knm", "kn-m", "kn.m")),
    "ft.lbf": (Unit("torque", FT_M * LBF_N), ("lbf.ft", "ftlbf", "ft-lbf", "lbf-ft", "ft.lb", "lb.ft", "ftlb", "lbft")),
    "kft.lbf": (Unit("torque", 1000 * FT_M * LBF_N), (
        "klbf.ft", "kftlbf", "kft-lbf", "klbf-ft", "ft.klbf", "kft.lb", "klb.ft", "kftlb", "klbft",
        "1000ft.lbf", "1000lbf.ft")),
    "kgf.m": (Unit("torque", KGF_N), ("kgm", "kgf-m")),
    # rotation and stroke rates, per minute
    "rpm": (Unit("rate", 1.0), ("rev/min", "r/min", "c/min")),
    "spm": (Unit("rate", 1.0), ("stk/min", "strokes/min", "1/min", "/min", "min-1")),
    "c/s": (Unit("rate", 60.0), ("rev/s", "rps", "hz", "1/s", "/s", "s-1")),
    "rad/s": (Unit("rate", 60 / (2 * 3.141592653589793)), ()),
    # pressure
    "Pa": (Unit("pressure", 1.0), ("pascal",)),
    "kPa": (Unit("pressure", 1000.0), ()),
    "MPa": (Unit("pressure", 1e6), ()),
    "bar": (Unit("pressure", 1e5), ()),
    "psi": (Unit("pressure", PSI_PA), ("psig", "lbf/in2", "psia")),
    "kgf/cm2": (Unit("pressure", KGF_N * 1e4), ("at",)),
    "atm": (Unit("pressure", 101325.0), ()),
    # volume
    "m3": (Unit("volume", 1.0), ("m^3", "cubicmeter", "cbm")),
    "bbl": (Unit("volume", BBL_M3), ("bbls", "barrel", "barrels")),
    "L": (Unit("volume", 0.001), ("l", "litre", "liter", "dm3")),
    "galUS": (Unit("volume", GAL_M3), ("gal", "usgal")),
    "ft3": (Unit("volume", FT_M ** 3), ()),
    # volume flow
    "m3/s": (Unit("flow", 1.0), ()),
    "m3/min": (Unit("flow", 1 / 60), ()),
    "m3/h": (Unit("flow", 1 / 3600), ()),
    "L/min": (Unit("flow", 0.001 / 60), ("lpm", "l/min", "dm3/min")),
    "L/s": (Unit("flow", 0.001), ("lps", "dm3/s")),
    "gpm": (Unit("flow", GAL_M3 / 60), ("galus/min", "gal/min", "usgpm")),
    "bbl/min": (Unit("flow", BBL_M3 / 60), ("bpm",)),
    "bbl/h": (Unit("flow", BBL_M3 / 3600), ("bbl/hr", "bph")),
    # density (mud weight)
    "kg/m3": (Unit("density", 1.0), ()),
    "g/cm3": (Unit("density", 1000.0), ("g/cc", "gcc", "kg/l", "kg/dm3", "sg")),
    "ppg": (Unit("density", LBM_KG / GAL_M3), ("lbm/galus", "lb/gal", "lbm/gal", "lbs/gal")),
    "lbm/ft3": (Unit("density", LBM_KG / FT_M ** 3), ("pcf", "lb/ft3")),
    # temperature, base kelvin
    "K": (Unit("temperature", 1.0), ("kelvin", "degk")),
    "degC": (Unit("temperature", 1.0, 273.15), ("c", "°c", "deg_c", "celsius")),
    "degF": (Unit("temperature", 5 / 9, 459.67 * 5 / 9), ("f", "°f", "deg_f", "fahrenheit")),
    # fractions
    "%": (Unit("fraction", 0.01), ("percent", "pct", "%vol", "vol%")),
    "fraction": (Unit("fraction", 1.0), ("frac", "v/v", "m3/m3")),
    "ppm": (Unit("fraction", 1e-6), ()),
    # time
    "s": (Unit("time", 1.0), ("sec", "second", "seconds")),
    "ms": (Unit("time", 0.001), ()),
    "min": (Unit("time", 60.0), ("minute", "minutes")),
    "h": (Unit("time", 3600.0), ("hr", "hour", "hours")),
    # angles
    "dega": (Unit("angle", 1.0), ("deg", "degree", "degrees", "°")),
    "rad": (Unit("angle", 180 / 3.141592653589793), ()),
}

UNSPECIFIED = frozenset({"", "unitless", "none", "euc", "n/a", "na", "-", "dimensionless", "unknown"})


def _key(name: str) -> str:
    return "".join(name.split()).lower()


_INDEX: dict[str, tuple[str, Unit]] = {}
for _canonical, (_unit, _spellings) in _TABLE.items():
    for _spelling in (_canonical, *_spellings):
        _INDEX.setdefault(_key(_spelling), (_canonical, _unit))


def is_unspecified(unit: str | None) -> bool:
    """Whether a unit string says nothing (empty, 'unitless', 'Euc', ...)."""
    return unit is None or _key(unit) in UNSPECIFIED


def canonical(unit: str) -> str:
    """The canonical spelling of a known unit (`KPA` -> `kPa`); UnitError when unknown."""
    found = _INDEX.get(_key(unit))
    if found is None:
        raise UnitError(f"unknown unit {unit!r}")
    return found[0]


def dimension(unit: str) -> str | None:
    found = _INDEX.get(_key(unit))
    return found[1].dimension if found else None


class Conversion(NamedTuple):
    """value_to = value_from * factor + offset."""

    source: str
    target: str
    factor: float
    offset: float

    def apply(self, value: float) -> float:
        return value * self.factor + self.offset

    def invert(self) -> "Conversion":
        return Conversion(self.target, self.source, 1 / self.factor, -self.offset / self.factor)

    @property
    def identity(self) -> bool:
        return self.factor == 1.0 and self.offset == 0.0


def conversion(source: str, target: str) -> Conversion:
    """How to turn values in `source` units into `target` units.

    Raises UnitError when either is unknown or they measure different things (a pressure
    is never converted into a length).
    """
    a, b = _INDEX.get(_key(source)), _INDEX.get(_key(target))
    if b is None:
        raise UnitError(f"unknown target unit {target!r}")
    if a is None:
        raise UnitError(f"unknown unit {source!r} (expected a {b[1].dimension} unit such as {b[0]})")
    (_, ua), (_, ub) = a, b
    if ua.dimension != ub.dimension:
        raise UnitError(f"unit {source!r} is a {ua.dimension}, not a {ub.dimension} like {b[0]}")
    if a[0] == b[0]:
        return Conversion(source, target, 1.0, 0.0)
    # base = v*fa + oa ; out = (base - ob) / fb
    factor = ua.factor / ub.factor
    offset = (ua.offset - ub.offset) / ub.factor
    # snap factors that are 1 up to rounding (spm <-> rpm <-> 1/min)
    if abs(factor - 1.0) < 1e-12 and abs(offset) < 1e-12:
        factor, offset = 1.0, 0.0
    return Conversion(source, target, factor, offset)
