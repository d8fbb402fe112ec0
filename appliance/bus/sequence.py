"""Sequence tracking: gaps, restarts and late messages, per (source, boot, topic).

Pure bookkeeping, no sockets, so the same logic serves every subscriber, the saver's
restart recovery and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


ENDED_KEPT = 1000


class Verdict(Enum):
    FIRST = "first"  # first message seen from this stream: nothing to compare with
    NEXT = "next"  # exactly the expected number
    GAP = "gap"  # numbers were skipped: messages lost between source and here
    RESTART = "restart"  # the source came back with a new boot id
    LATE = "late"  # a number already passed: a duplicate or a reordered message


# The answer for almost every message, made once: reading an Enum member costs about as
# much as a dict lookup and a tuple allocation together, and a subscriber asks per message.
NEXT = Verdict.NEXT
_NEXT_RESULT = (Verdict.NEXT, None)


@dataclass(frozen=True, slots=True)
class Gap:
    src: str
    boot: str
    topic: str
    first_missing: int
    last_missing: int

    @property
    def count(self) -> int:
        return self.last_missing - self.first_missing + 1


class SequenceTracker:
    """Remembers the highest sequence number seen per stream.

    `observe` returns a verdict and, for a GAP, the missing range. A stream is
    (src, boot, topic); a source seen with a new boot is a RESTART, and its new stream
    starts wherever the source starts counting.
    """

    def __init__(self) -> None:
        self.last: dict[tuple[str, str, str], int] = {}
        self.boots: dict[tuple[str, str], str] = {}  # (src, topic) -> current boot
        # where the streams of replaced boots ended, newest last (bounded), for a saver
        # that fetches their missing tail from the source's spool
        self.ended: dict[tuple[str, str, str], int] = {}
        self.gaps = 0
        self.lost = 0
        self.restarts = 0
        self.late = 0

    def observe(self, src: str, boot: str, topic: str, seq: int) -> tuple[Verdict, Gap | None]:
        key = (src, boot, topic)
        last = self.last.get(key)
        if last is not None and seq == last + 1:  # the common case first
            self.last[key] = seq
            return _NEXT_RESULT
        if last is None:
            previous_boot = self.boots.get((src, topic))
            self.boots[(src, topic)] = boot
            self.last[key] = seq
            if previous_boot is not None and previous_boot != boot:
                # the old boot's stream is over; forgetting it keeps memory bounded
                ended = self.last.pop((src, previous_boot, topic), None)
                if ended is not None:
                    self.ended[(src, previous_boot, topic)] = ended
                    if len(self.ended) > ENDED_KEPT:
                        del self.ended[next(iter(self.ended))]
                self.restarts += 1
                return Verdict.RESTART, None
            return Verdict.FIRST, None
        if seq <= last:
            self.late += 1
            return Verdict.LATE, None
        gap = Gap(src, boot, topic, last + 1, seq - 1)
        self.last[key] = seq
        self.gaps += 1
        self.lost += gap.count
        return Verdict.GAP, gap
