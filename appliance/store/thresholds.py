"""Alarm thresholds per channel (HH/H/L/LL, deadband, priority): checking one setting.

A threshold change travels as a message on the `control.thresholds` topic,

    {"channel": "SPPA", "hh": 4500.0, "h": 4000.0, "l": null, "ll": null,
     "deadband": 50.0, "priority": "high", "by": "driller"}

published by the web program (PUT /api/thresholds/<channel>), stored by the saver in the
`thresholds` table (a history: the newest row per channel wins) and applied at once by
the predictor, which also reads the current set from storage when it starts. A null limit
is not set; a row with every limit null clears the channel's thresholds.

The same `check()` guards the API (a 400 naming the problem) and the saver (a dead
letter with the reason), so a bad setting can neither be stored nor reach the predictor.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from appliance.channels import BY_MNEMONIC, Channel

TOPIC = "control.thresholds"
LIMITS = ("ll", "l", "h", "hh")  # in the order their values must rise
# the predictor's alarm priorities (appliance.predict.alarms), lowest first; spelt out here so
# that the saver and the web, which check settings, do not load the predictor's modules
# (tests/test_thresholds.py holds the two equal)
PRIORITIES = ("low", "medium", "high", "critical")
FIELDS = ("channel", *LIMITS, "deadband", "priority", "by")
MAX_BY = 200


NOT_LIMITABLE_UNITS = ("code", "flag")  # RIGSTATE, ONBOTTOM: states, not quantities


def limitable(channel: Channel) -> bool:
    """Whether alarm limits mean anything for a catalogue channel (not for a state code)."""
    return channel.unit not in NOT_LIMITABLE_UNITS


class ThresholdError(ValueError):
    """A threshold setting that cannot be accepted; the message says what to change."""


class Threshold(NamedTuple):
    """One channel's alarm limits, in the channel's catalogue unit (None: not set)."""

    channel: str
    hh: float | None
    h: float | None
    l: float | None  # noqa: E741 - the alarm-management name for the low limit
    ll: float | None
    deadband: float | None
    priority: str | None
    by: str

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()

    @property
    def cleared(self) -> bool:
        return all(getattr(self, k) is None for k in LIMITS)


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ThresholdError(f"{name} must be a number or null, not {str(value)[:40]!r}")
    try:
        value = float(value)
    except OverflowError:
        raise ThresholdError(f"{name} is too large") from None
    if not math.isfinite(value):
        raise ThresholdError(f"{name} must be a finite number")
    return value


def check(data: Any, channel: str | None = None, extra_channels: frozenset[str] = frozenset()) -> Threshold:
    """The setting in `data` (the message's data, or an API body with `channel` given
    separately), checked: known channel, finite numbers, LL < L < H < HH among the limits
    set, every limit inside the channel's plausible range, deadband >= 0 and smaller than
    that range, a known priority. Raises ThresholdError saying what is wrong.

    Channels outside the catalogue (derived channels such as MSE) are accepted when named
    in `extra_channels`; only finiteness and ordering are checked for them."""
    if not isinstance(data, dict):
        raise ThresholdError("a threshold setting is a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ThresholdError(f"unknown field(s) {', '.join(map(str, unknown))[:200]}; "
                             f"the fields are {', '.join(FIELDS)}")
    channel = channel if channel is not None else data.get("channel")
    if not isinstance(channel, str) or not channel:
        raise ThresholdError("name the channel")
    if data.get("channel") not in (None, channel):
        raise ThresholdError(f"the body names channel {str(data['channel'])[:40]!r} but the address {channel!r}")
    entry = BY_MNEMONIC.get(channel)
    if entry is None and channel not in extra_channels:
        raise ThresholdError(f"unknown channel {channel[:60]!r}: thresholds apply to catalogue channels "
                             "and stored derived channels (/api/channels lists them)")
    if entry is not None and not limitable(entry):
        raise ThresholdError(f"{channel} is a {entry.unit} ({entry.description}), not a quantity: "
                             "alarm limits do not apply to it")
    values = {k: _number(k.upper(), data.get(k)) for k in LIMITS}
    unit = f" {entry.unit}" if entry else ""
    if entry is not None:
        for k, v in values.items():
            if v is not None and not entry.low <= v <= entry.high:
                raise ThresholdError(f"{k.upper()} {v:g}{unit} is outside {channel}'s plausible range "
                                     f"{entry.low:g}..{entry.high:g}{unit}")
    set_limits = [(k, v) for k, v in values.items() if v is not None]
    for (k1, v1), (k2, v2) in zip(set_limits, set_limits[1:]):
        if not v1 < v2:
            raise ThresholdError(f"{k1.upper()} ({v1:g}) must be below {k2.upper()} ({v2:g}): "
                                 "the limits must rise LL < L < H < HH")
    deadband = _number("deadband", data.get("deadband"))
    if deadband is not None:
        if deadband < 0:
            raise ThresholdError(f"deadband must not be negative ({deadband:g})")
        if entry is not None and deadband >= entry.high - entry.low:
            raise ThresholdError(f"deadband {deadband:g}{unit} is wider than {channel}'s whole range")
    priority = data.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise ThresholdError(f"priority must be one of {', '.join(PRIORITIES)} or null, "
                             f"not {str(priority)[:40]!r}")
    by = data.get("by", "")
    if not isinstance(by, str):
        raise ThresholdError("by must be a string: who made the change")
    return Threshold(channel, values["hh"], values["h"], values["l"], values["ll"], deadband, priority,
                     by[:MAX_BY])
