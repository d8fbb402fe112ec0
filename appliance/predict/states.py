"""Rig states: the one vocabulary every part uses, and the per-sample rules that pick one.

A rig state is published on `derived` as the number `RIGSTATE` (its index in RIG_STATES),
because channel frames carry numbers only; `name_of(code)` turns it back into a name.

The rules look at one moment: is the bit on bottom, are the pumps on, is the string
turning, which way is the bit moving, is the string hanging in the slips. Each input may
be missing; a rule that needs a missing input is skipped, and when nothing can be said
the state is `unknown`.
"""

from __future__ import annotations

from typing import NamedTuple

RIG_STATES: tuple[str, ...] = (
    "unknown",
    "rotary_drilling",  # on bottom, string turning (pumps on or not)
    "slide_drilling",  # on bottom, pumps on, string not turning (mud motor)
    "reaming",  # off bottom, pumps on, turning, bit moving down
    "back_reaming",  # off bottom, pumps on, turning, bit moving up
    "circulating_off_bottom",  # off bottom, pumps on, bit not moving
    "rotating_off_bottom",  # off bottom, pumps off, turning, bit not moving
    "in_slips",  # string hanging in the slips: a connection, or a stand on a trip
    "tripping_in",  # bit moving down, not reaming
    "tripping_out",  # bit moving up, not back-reaming
    "stationary",  # nothing moves, pumps off
)
CODE: dict[str, int] = {name: i for i, name in enumerate(RIG_STATES)}
DRILLING = frozenset({"rotary_drilling", "slide_drilling"})
OFF_BOTTOM_MOVING = frozenset({"reaming", "back_reaming", "tripping_in", "tripping_out"})

# what the simulator's ground-truth `activity` may legitimately be called, per rig state
SIMULATOR_ACTIVITY: dict[str, frozenset[str]] = {
    "drilling": DRILLING | {"reaming", "circulating_off_bottom"},
    "connection": frozenset({"in_slips", "tripping_in", "tripping_out", "back_reaming", "reaming",
                             "circulating_off_bottom", "stationary"}),
    "circulating": frozenset({"circulating_off_bottom", "reaming", "back_reaming"}),
    "tripping_out": frozenset({"tripping_out", "in_slips", "tripping_in", "stationary",
                               "circulating_off_bottom"}),
    "tripping_in": frozenset({"tripping_in", "in_slips", "tripping_out", "stationary"}),
    "surface": frozenset({"in_slips", "stationary"}),
}


def name_of(code: float) -> str:
    """The rig state name for a `RIGSTATE` value; 'unknown' for anything else."""
    i = int(code) if code == code else 0
    return RIG_STATES[i] if 0 <= i < len(RIG_STATES) else "unknown"


class Observation(NamedTuple):
    """What the rules look at; None where the input is not available."""

    on_bottom: bool | None
    pumps_on: bool | None
    rotating: bool | None
    bit_speed_ft_s: float | None  # + down (deeper), - up
    in_slips: bool | None


def classify(o: Observation, moving_ft_s: float) -> str:
    """One rig state for one moment. `moving_ft_s`: slower than this, the bit is still."""
    if o.in_slips:
        return "in_slips"
    if o.on_bottom:
        if o.rotating:
            return "rotary_drilling"
        if o.pumps_on:
            return "slide_drilling"
        if o.rotating is None and o.pumps_on is None:
            return "unknown"
        return "stationary"
    speed = o.bit_speed_ft_s
    if o.on_bottom is None and speed is None:
        return "unknown"
    moving = speed is not None and abs(speed) >= moving_ft_s
    if moving:
        down = speed > 0
        if o.pumps_on and o.rotating:
            return "reaming" if down else "back_reaming"
        return "tripping_in" if down else "tripping_out"
    if o.pumps_on:
        return "circulating_off_bottom"
    if o.rotating:
        return "rotating_off_bottom"
    if o.pumps_on is None and o.rotating is None:
        return "unknown"
    return "stationary"
