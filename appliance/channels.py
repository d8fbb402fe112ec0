"""The channel catalogue: one table every part of the appliance reads.

Each channel has a canonical mnemonic, a description, the unit it is stored in
(oilfield units), its WITS0 record/item code where WITS0 defines one, and a
plausible range. Values outside the plausible range are rejected at ingest and
kept in the dead-letter store; they are not clipped.

Mnemonics follow WITS0 record 01 (time-based drilling data) and the WITSML
names that rig recorders commonly use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Channel:
    mnemonic: str
    description: str
    unit: str
    wits: str | None  # four-digit WITS0 record+item code, e.g. "0108"
    low: float  # plausible range, inclusive, in `unit`
    high: float

    def plausible(self, value: float) -> bool:
        return math.isfinite(value) and self.low <= value <= self.high


# fmt: off
CATALOGUE: tuple[Channel, ...] = (
    Channel("DBTM", "Bit depth (measured)",          "ft",      "0108",     0.0, 50000.0),
    Channel("DMEA", "Hole depth (measured)",         "ft",      "0110",     0.0, 50000.0),
    Channel("BPOS", "Block position",                "ft",      "0112",   -20.0,   250.0),
    Channel("ROPA", "Rate of penetration (average)", "ft/h",    "0113",     0.0,  2000.0),
    Channel("HKLA", "Hookload (average)",            "klbf",    "0114",     0.0,  2500.0),
    Channel("WOBA", "Weight on bit (average)",       "klbf",    "0116",  -100.0,   300.0),
    Channel("TQA",  "Rotary torque (average)",       "kft.lbf", "0118",     0.0,   150.0),
    Channel("RPMA", "Rotary speed (average)",        "rpm",     "0120",     0.0,   500.0),
    Channel("SPPA", "Standpipe pressure (average)",  "psi",     "0121",     0.0, 15000.0),
    Channel("CHKP", "Casing (choke) pressure",       "psi",     "0122",     0.0, 20000.0),
    Channel("SPM1", "Pump 1 stroke rate",            "spm",     "0123",     0.0,   300.0),
    Channel("SPM2", "Pump 2 stroke rate",            "spm",     "0124",     0.0,   300.0),
    Channel("SPM3", "Pump 3 stroke rate",            "spm",     "0125",     0.0,   300.0),
    Channel("TVA",  "Active pit volume",             "bbl",     "0126",     0.0, 10000.0),
    Channel("MFOP", "Mud flow out (paddle)",         "%",       "0128",     0.0,   100.0),
    Channel("MFOA", "Mud flow out",                  "gpm",     "0129",     0.0,  5000.0),
    Channel("MFIA", "Mud flow in",                   "gpm",     "0130",     0.0,  5000.0),
    Channel("MDOA", "Mud density out",               "ppg",     "0131",     0.0,    25.0),
    Channel("MDIA", "Mud density in",                "ppg",     "0132",     0.0,    25.0),
    Channel("MTOA", "Mud temperature out",           "degF",    "0133",   -40.0,   400.0),
    Channel("MTIA", "Mud temperature in",            "degF",    "0134",   -40.0,   400.0),
    Channel("GASA", "Total gas (average)",           "%",       "0140",     0.0,   100.0),
)
# fmt: on

# Channels outside WITS0 record 01: a downhole measurement some rigs send, and what the
# predictor derives (topic `derived`; RIGSTATE codes are appliance.predict.states.RIG_STATES).
# fmt: off
EXTRA: tuple[Channel, ...] = (
    Channel("APWD",     "Annular pressure while drilling (downhole)", "psi", None, 0.0, 40000.0),
)
DERIVED: tuple[Channel, ...] = (
    Channel("RIGSTATE", "Rig state (code, see docs/PREDICTOR.md)", "code",  None,        0.0,      20.0),
    Channel("ONBOTTOM", "Bit on bottom (1) or off (0)",            "flag",  None,        0.0,       1.0),
    Channel("ROPC",     "Rate of penetration from hole depth",     "ft/h",  None,        0.0,    2000.0),
    Channel("MSE",      "Mechanical specific energy (Teale)",      "psi",   None,        0.0, 1000000.0),
    Channel("ECD",      "Equivalent circulating density",          "ppg",   None,        0.0,      30.0),
    Channel("FLOWDIFF", "Flow out minus flow in",                  "gpm",   None,    -5000.0,    5000.0),
    Channel("PITDEV",   "Pit gain (+) / loss (-) against baseline", "bbl",  None,   -10000.0,   10000.0),
    Channel("SPPDEV",   "Standpipe pressure for the flow vs its norm", "%", None,     -100.0,    1000.0),
    Channel("ROP_PRED", "ROP the drilling model expects",           "ft/h",  None,        0.0,    2000.0),
    Channel("ROP_RESID", "Measured minus expected ROP",             "ft/h",  None,    -2000.0,    2000.0),
    Channel("PIT_TREND", "Pit volume trend (10 min slope)",         "bbl/h", None,   -10000.0,   10000.0),
    Channel("PIT_PROJ", "Pit volume expected in 10 min",            "bbl",   None,   -10000.0,   20000.0),
    Channel("DRILL_RATE", "Effective rate of making hole (6 h)",    "ft/h",  None,        0.0,    2000.0),
    Channel("ETA_TD",   "Hours to the target depth",                "h",     None,        0.0,  100000.0),
)
# fmt: on

BY_MNEMONIC: dict[str, Channel] = {c.mnemonic: c for c in CATALOGUE + EXTRA + DERIVED}
BY_WITS: dict[str, Channel] = {c.wits: c for c in CATALOGUE if c.wits}


def lookup(mnemonic: str) -> Channel | None:
    """The catalogue entry for a mnemonic, or None for a channel the catalogue does not know."""
    return BY_MNEMONIC.get(mnemonic)


def check_value(mnemonic: str, value: object) -> str | None:
    """Why a channel value must be rejected, or None when it is acceptable.

    Channels unknown to the catalogue (integrators' own) only have to be finite numbers;
    catalogue channels must also lie in their plausible range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{mnemonic}: not a number ({type(value).__name__})"
    if isinstance(value, int) and abs(value) > 1e308:
        return f"{mnemonic}: {str(value)[:20]}... is too large"
    if not math.isfinite(value):
        return f"{mnemonic}: not finite ({value})"
    channel = BY_MNEMONIC.get(mnemonic)
    if channel is not None and not channel.plausible(value):
        return (f"{mnemonic}: {value:g} {channel.unit} outside the plausible range "
                f"{channel.low:g}..{channel.high:g}")
    return None
