"""Small streaming estimators, each fed one sample at a time with its time in seconds.

All of them are deterministic and keep bounded state; none looks at a clock. Times are
the samples' own (rig) times, so a backtest running at any speed sees the same values.
"""

from __future__ import annotations

import math
from array import array
from typing import Sequence


class Ewma:
    """Exponentially weighted mean with a time constant, for irregular sample times.

    Until `tau_s` of data has been seen it is the plain mean of what came so far, so the
    first sample's noise does not linger for a whole time constant.
    """

    __slots__ = ("tau_s", "value", "seen_s")

    def __init__(self, tau_s: float, value: float | None = None) -> None:
        self.tau_s = tau_s
        self.value = value
        self.seen_s = 0.0 if value is None else tau_s

    def update(self, x: float, dt_s: float) -> float:
        if self.value is None:
            self.value = x
            self.seen_s = max(dt_s, 1e-9)
        elif dt_s > 0:
            self.seen_s += dt_s
            a = max(1.0 - math.exp(-dt_s / self.tau_s), dt_s / self.seen_s)
            self.value += (x - self.value) * a
        return self.value


class TimeWindow:
    """The samples of the last `span_s` seconds, with running sums for the mean, the
    variance and the least-squares slope, so each costs the same however long the window.

    Times and values are kept packed (two `array("d")`, 16 bytes a sample) rather than as
    a deque of tuples (~100 bytes a sample): the predictor's raw-rate windows hold 30 s of
    a 100 Hz feed each, and as tuples they cost ~1 MiB of its resident memory."""

    __slots__ = ("span_s", "ts", "xs", "head", "sum", "sum2", "st", "stt", "stx", "origin")

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.ts = array("d")
        self.xs = array("d")
        self.clear()

    def add(self, t_s: float, x: float) -> None:
        ts, xs = self.ts, self.xs
        head = self.head
        if head == len(ts):
            if head:
                del ts[:], xs[:]
                head = 0
            self.origin = t_s  # sums of times relative to this, for precision
        ts.append(t_s)
        xs.append(x)
        u = t_s - self.origin
        self.sum += x
        self.sum2 += x * x
        self.st += u
        self.stt += u * u
        self.stx += u * x
        cut = t_s - self.span_s
        while ts[head] < cut:
            old = xs[head]
            u = ts[head] - self.origin
            head += 1
            self.sum -= old
            self.sum2 -= old * old
            self.st -= u
            self.stt -= u * u
            self.stx -= u * old
        self.head = _compact(ts, xs, head)

    def clear(self) -> None:
        del self.ts[:], self.xs[:]
        self.head = 0
        self.sum = self.sum2 = self.st = self.stt = self.stx = 0.0
        self.origin = 0.0

    def __len__(self) -> int:
        return len(self.ts) - self.head

    @property
    def covered_s(self) -> float:
        return self.ts[-1] - self.ts[self.head] if len(self.ts) > self.head else 0.0

    def last(self) -> float | None:
        """The newest value, or None when the window is empty."""
        return self.xs[-1] if len(self.ts) > self.head else None

    def mean(self) -> float:
        return self.sum / len(self)

    def std(self) -> float:
        n = len(self)
        if n < 2:
            return 0.0
        m = self.sum / n
        return math.sqrt(max(self.sum2 / n - m * m, 0.0))

    def rate(self) -> float | None:
        """Least-squares slope in units per second, or None with too few samples."""
        n = len(self)
        if n < 3 or self.covered_s <= 0:
            return None
        var_t = self.stt - self.st * self.st / n
        if var_t <= 0:
            return None
        return (self.stx - self.st * self.sum / n) / var_t


class Speed:
    """How fast a value moves: (newest - oldest) / time over the last `span_s` seconds.

    Packed like TimeWindow: the predictor keeps a 60 s one of the hole depth at the feed's
    full rate."""

    __slots__ = ("span_s", "ts", "xs", "head")

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.ts = array("d")
        self.xs = array("d")
        self.head = 0

    def add(self, t_s: float, x: float) -> float | None:
        ts = self.ts
        ts.append(t_s)
        self.xs.append(x)
        cut = t_s - self.span_s
        head = self.head
        end = len(ts) - 2
        while head < end and ts[head + 1] <= cut:
            head += 1
        self.head = head = _compact(ts, self.xs, head)
        t0 = ts[head]
        if t_s - t0 <= 0:
            return None
        return (x - self.xs[head]) / (t_s - t0)


def _compact(ts: array, xs: array, head: int) -> int:
    """Drop the samples before `head` once they are over half of the arrays (each sample is
    moved O(1) times on average); returns the new head."""
    if head > 64 and head * 2 > len(ts):
        del ts[:head], xs[:head]
        return 0
    return head


class Cusum:
    """One-sided cumulative sum of (x - k) * dt, floored at zero: a small, lasting shift
    adds up while noise around zero does not. `value` is in units of x times seconds."""

    __slots__ = ("k", "value")

    def __init__(self, k: float) -> None:
        self.k = k
        self.value = 0.0

    def update(self, x: float, dt_s: float) -> float:
        self.value = max(0.0, self.value + (x - self.k) * dt_s)
        return self.value

    def reset(self) -> None:
        self.value = 0.0


class RobustWindow:
    """Median and MAD-based scale of one channel over a ring buffer, recomputed on demand,
    for robust z-scores that a burst of outliers cannot drag along. Plain Python (a sort
    of a few hundred values every RECOMPUTE_S): the same values as numpy's median, and the
    predictor carries no numpy (~15 MiB of resident memory)."""

    __slots__ = ("buf", "n", "i")

    def __init__(self, size: int) -> None:
        self.buf = array("d", bytes(8 * size))
        self.n = 0
        self.i = 0

    def add(self, x: float) -> None:
        self.buf[self.i] = x
        self.i = (self.i + 1) % len(self.buf)
        self.n = min(self.n + 1, len(self.buf))

    def median_scale(self) -> tuple[float, float]:
        data = self.buf[:self.n] if self.n < len(self.buf) else self.buf
        med = _median(data)
        mad = _median([abs(x - med) for x in data])
        return med, 1.4826 * mad


def _median(data: Sequence[float]) -> float:
    """The median of some floats, NaN if there are none or one of them is NaN: the value
    np.median gives (the middle one, or the mean of the middle two)."""
    n = len(data)
    if n == 0 or any(x != x for x in data):
        return math.nan
    ordered = sorted(data)
    half = n // 2
    if n % 2:
        return float(ordered[half])
    return float((ordered[half - 1] + ordered[half]) / 2)
