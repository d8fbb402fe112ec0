"""Events injected into the rig simulator, and their ground-truth labels.

The `simulator_events` setting lists them as comma-separated ``KIND@START+DURATION``,
times in rig time since the simulation started::

    kick@2h+20m, washout@5h30m+1h, flatline:SPPA@90m+10m, dropout:TVA@3600+300

Kinds that change the well's physics: kick, loss, washout, packoff. Kinds that break one
sensor, named by its catalogue mnemonic: flatline:CHANNEL, spike:CHANNEL, dropout:CHANNEL.
An event is active on [start, end): a frame at rig time t shows it when start <= t < end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from appliance.channels import CATALOGUE

SIMULATED = {c.mnemonic: c for c in CATALOGUE}  # the channels the simulator's sensors make

PHYSICAL_KINDS = ("kick", "loss", "washout", "packoff")
SENSOR_KINDS = ("flatline", "spike", "dropout")

FORMAT_HELP = ("write events as KIND@START+DURATION, comma-separated, e.g. "
               "'kick@2h+20m,flatline:SPPA@90m+10m'; times like 2h, 30m, 45s, 1h30m or 90 (seconds); "
               "kinds: " + ", ".join(PHYSICAL_KINDS) + ", "
               + ", ".join(f"{k}:CHANNEL" for k in SENSOR_KINDS))

_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?$")


@dataclass(frozen=True)
class Event:
    """One injected event; times in rig seconds since the simulation started."""

    kind: str
    channel: str | None  # catalogue mnemonic for sensor kinds, None for physical ones
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    def label(self, origin_ms: int) -> dict[str, Any]:
        """Ground truth for scoring detectors: kind, channel and [start_ms, end_ms) in UTC epoch ms.

        origin_ms: the epoch ms of rig time zero.
        """
        return {"kind": self.kind, "channel": self.channel,
                "start_ms": origin_ms + round(self.start_s * 1000),
                "end_ms": origin_ms + round(self.end_s * 1000)}


def parse_duration(text: str) -> float:
    """Seconds in `text` written like 2h, 30m, 45s, 1h30m, 1.5h or 90 (seconds); ValueError if unreadable."""
    t = text.strip().lower()
    if not t:
        raise ValueError("an empty time")
    try:
        seconds = float(t)
    except ValueError:
        m = _DURATION.match(t)
        if not m or not any(m.groups()):
            raise ValueError(f"cannot read the time {text.strip()!r}") from None
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mi * 60 + s
    if not seconds >= 0 or seconds == float("inf"):  # refuses NaN and negative numbers
        raise ValueError(f"cannot read the time {text.strip()!r}")
    return seconds


def parse_event(spec: str) -> Event:
    """One ``KIND@START+DURATION`` into an Event; ValueError saying what is accepted."""
    item = spec.strip()
    what, at, when = item.partition("@")
    start_text, plus, duration_text = when.partition("+")
    if not at or not plus:
        raise ValueError(f"event {item!r}: {FORMAT_HELP}")
    kind, colon, channel = (p.strip() for p in what.partition(":"))
    kind = kind.lower()
    if kind in PHYSICAL_KINDS:
        if colon:
            raise ValueError(f"event {item!r}: {kind} takes no channel (only "
                             f"{', '.join(SENSOR_KINDS)} name one); {FORMAT_HELP}")
        channel_or_none = None
    elif kind in SENSOR_KINDS:
        channel = channel.upper()
        if not channel:
            raise ValueError(f"event {item!r}: {kind} needs a channel, e.g. {kind}:SPPA; {FORMAT_HELP}")
        if channel not in SIMULATED:
            raise ValueError(f"event {item!r}: unknown channel {channel!r}; the catalogue has "
                             + ", ".join(SIMULATED))
        channel_or_none = channel
    else:
        raise ValueError(f"event {item!r}: unknown kind {kind!r}; {FORMAT_HELP}")
    try:
        start = parse_duration(start_text)
        duration = parse_duration(duration_text)
    except ValueError as e:
        raise ValueError(f"event {item!r}: {e}; {FORMAT_HELP}") from None
    if duration <= 0:
        raise ValueError(f"event {item!r}: the duration must be more than zero; {FORMAT_HELP}")
    return Event(kind, channel_or_none, start, start + duration)


def parse_events(spec: str) -> list[Event]:
    """The `simulator_events` setting into events sorted by start; '' gives none."""
    if not spec.strip():
        return []
    items = spec.split(",")
    if any(not i.strip() for i in items):
        raise ValueError(f"events {spec.strip()!r}: an empty item between commas; {FORMAT_HELP}")
    return sorted((parse_event(i) for i in items), key=lambda e: (e.start_s, e.end_s))
