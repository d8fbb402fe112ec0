"""Heartbeats: every program says it is alive on `sys.heartbeat` at a steady interval.

A heartbeat carries the program's name, process id, uptime and whatever small
statistics the program adds, so the logger and the dashboard can tell
a live program from one that has hung.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from appliance.bus.publisher import Publisher

TOPIC = "sys.heartbeat"


class Heartbeat:
    def __init__(self, publisher: Publisher, program: str, interval_s: float,
                 stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.publisher = publisher
        self.program = program
        self.interval_s = interval_s
        self.stats = stats
        self.started = time.monotonic()
        self.next_due = self.started

    def tick(self) -> bool:
        """Publish a heartbeat if one is due; returns whether it did."""
        now = time.monotonic()
        if now < self.next_due:
            return False
        # keep the cadence even when a tick comes late, without bursts to catch up
        self.next_due = max(self.next_due + self.interval_s, now)
        body: dict[str, Any] = {"program": self.program, "pid": os.getpid(),
                                "uptime_s": round(now - self.started, 3)}
        if self.stats is not None:
            body["stats"] = self.stats()
        self.publisher.publish(TOPIC, body)
        return True

    def seconds_to_next(self) -> float:
        return max(0.0, self.next_due - time.monotonic())
