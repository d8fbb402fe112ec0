"""Plain HH/H/L/LL limits per channel, editable at run time.

A limit set is what the dashboard publishes on `control.thresholds` and the saver keeps in
the `thresholds` table: `{"channel", "hh", "h", "l", "ll", "deadband", "priority"}`, any
limit null for none. Each level is its own alarm point (`threshold.<CHANNEL>.<level>`);
once raised it clears only when the value is back inside by `deadband` (default 1 % of
the channel's plausible range). H is suppressed while HH is raised (and L while LL), so a
value going through both shows one alarm, the worse. Low limits of pump channels
(`SPPA`, flows, strokes) are suppressed while the pumps are off or changing.
Priorities: H and L take `priority` (default medium), HH and LL one step higher.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from appliance.channels import BY_MNEMONIC
from appliance.predict.alarms import PRIORITIES, Condition
from appliance.predict.params import PUMP_CHANNELS

LEVELS = ("hh", "h", "l", "ll")


class Limits(NamedTuple):
    hh: float | None = None
    h: float | None = None
    l: float | None = None
    ll: float | None = None
    deadband: float | None = None
    priority: str | None = None


def _number(x: Any, what: str) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number or null, not {x!r}")
    return float(x)


def parse_limits(data: dict[str, Any]) -> Limits:
    """A limit set from a `control.thresholds` event or a `thresholds` row; ValueError if unusable."""
    lim = {k: _number(data.get(k), k) for k in (*LEVELS, "deadband")}
    if lim["deadband"] is not None and lim["deadband"] < 0:
        raise ValueError("deadband must not be negative")
    priority = data.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    highs = [x for x in (lim["h"], lim["hh"]) if x is not None]
    lows = [x for x in (lim["ll"], lim["l"]) if x is not None]
    if len(highs) == 2 and highs[0] > highs[1]:
        raise ValueError("h must not be above hh")
    if len(lows) == 2 and lows[0] > lows[1]:
        raise ValueError("ll must not be above l")
    if highs and lows and min(highs) <= max(lows):
        raise ValueError("the high limits must be above the low limits")
    return Limits(priority=priority, **lim)


class ThresholdWatch:
    def __init__(self) -> None:
        self.limits: dict[str, Limits] = {}
        self.raised: dict[tuple[str, str], bool] = {}

    def set(self, channel: str, limits: Limits | None) -> list[Condition]:
        """Replace one channel's limits (None or all-null removes them); conditions that
        clear what the old limits raised."""
        out = []
        if limits is None or all(getattr(limits, k) is None for k in LEVELS):
            self.limits.pop(channel, None)
        else:
            self.limits[channel] = limits
        for level in LEVELS:
            if (channel, level) in self.raised and (channel not in self.limits
                                                    or getattr(self.limits[channel], level) is None):
                del self.raised[(channel, level)]
                out.append(Condition(f"threshold.{channel}.{level}", "threshold", False, "medium", "",
                                     {"cleared": "limit removed"}, channel, off_delay_s=0.0))
        return out

    def conditions(self, v: dict[str, float], pumps_quiet: str | None, off_delay_s: float,
                   on_delay_s: float) -> list[Condition]:
        """`pumps_quiet`: why pump channels' low limits mean nothing now (pumps off), or None."""
        out: list[Condition] = []
        for channel, lim in self.limits.items():
            x = v.get(channel)
            c = BY_MNEMONIC.get(channel)
            deadband = lim.deadband if lim.deadband is not None else (0.01 * (c.high - c.low) if c else 0.0)
            base = PRIORITIES.index(lim.priority) if lim.priority in PRIORITIES else PRIORITIES.index("medium")
            unit = c.unit if c else ""
            for level in LEVELS:
                limit = getattr(lim, level)
                if limit is None:
                    continue
                key = (channel, level)
                high = level.startswith("h")
                if x is None:
                    out.append(Condition(f"threshold.{channel}.{level}", "threshold", None, "medium", "", {}, channel))
                    continue
                was = self.raised.get(key, False)
                if high:
                    on = x > limit if not was else x > limit - deadband
                else:
                    on = x < limit if not was else x < limit + deadband
                self.raised[key] = on
                worse = "hh" if level == "h" else "ll" if level == "l" else None
                suppressed = None
                if worse and self.raised.get((channel, worse)):
                    suppressed = f"{worse.upper()} raised"
                elif not high and channel in PUMP_CHANNELS and pumps_quiet:
                    suppressed = pumps_quiet
                prio = PRIORITIES[max(base - 1, 0)] if level in ("hh", "ll") else PRIORITIES[base]
                word = {"hh": "high-high", "h": "high", "l": "low", "ll": "low-low"}[level]
                out.append(Condition(
                    f"threshold.{channel}.{level}", "threshold", on, prio,
                    f"{channel} {word}: {x:g} {unit} {'above' if high else 'below'} {limit:g}",
                    {"channel": channel, "value": x, "level": level, "limit": limit, "deadband": deadband,
                     "relied_on": [channel]}, channel, suppressed=suppressed,
                    on_delay_s=on_delay_s, off_delay_s=off_delay_s))
        return out
