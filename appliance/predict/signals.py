"""Small streaming estimators, each fed one sample at a time with its time in seconds.

All of them are deterministic and keep bounded state; none looks at a clock. Times are
the samples' own (rig) times, so a backtest running at any speed sees the same values.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


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
    variance and the least-squares slope, so each costs the same however long the window."""

    __slots__ = ("span_s", "items", "sum", "sum2", "st", "stt", "stx", "origin")

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.items: deque[tuple[float, float]] = deque()
        self.clear()

    def add(self, t_s: float, x: float) -> None:
        items = self.items
        if not items:
            self.origin = t_s  # sums of times relative to this, for precision
        items.append((t_s, x))
        u = t_s - self.origin
        self.sum += x
        self.sum2 += x * x
        self.st += u
        self.stt += u * u
        self.stx += u * x
        cut = t_s - self.span_s
        while items[0][0] < cut:
            t_old, old = items.popleft()
            u = t_old - self.origin
            self.sum -= old
            self.sum2 -= old * old
            self.st -= u
            self.stt -= u * u
            self.stx -= u * old

    def clear(self) -> None:
        self.items.clear()
        self.sum = self.sum2 = self.st = self.stt = self.stx = 0.0
        self.origin = 0.0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def covered_s(self) -> float:
        return self.items[-1][0] - self.items[0][0] if self.items else 0.0

    def mean(self) -> float:
        return self.sum / len(self.items)

    def std(self) -> float:
        n = len(self.items)
        if n < 2:
            return 0.0
        m = self.sum / n
        return math.sqrt(max(self.sum2 / n - m * m, 0.0))

    def rate(self) -> float | None:
        """Least-squares slope in units per second, or None with too few samples."""
        n = len(self.items)
        if n < 3 or self.covered_s <= 0:
            return None
        var_t = self.stt - self.st * self.st / n
        if var_t <= 0:
            return None
        return (self.stx - self.st * self.sum / n) / var_t


class Speed:
    """How fast a value moves: (newest - oldest) / time over the last `span_s` seconds."""

    __slots__ = ("span_s", "items")

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.items: deque[tuple[float, float]] = deque()

    def add(self, t_s: float, x: float) -> float | None:
        items = self.items
        items.append((t_s, x))
        cut = t_s - self.span_s
        while len(items) > 2 and items[1][0] <= cut:
            items.popleft()
        t0, x0 = items[0]
        if t_s - t0 <= 0:
            return None
        return (x - x0) / (t_s - t0)


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
    """Median and MAD-based scale of one channel over a ring buffer, recomputed on demand
    (numpy), for robust z-scores that a burst of outliers cannot drag along."""

    __slots__ = ("buf", "n", "i")

    def __init__(self, size: int) -> None:
        self.buf = np.empty(size)
        self.n = 0
        self.i = 0

    def add(self, x: float) -> None:
        self.buf[self.i] = x
        self.i = (self.i + 1) % len(self.buf)
        self.n = min(self.n + 1, len(self.buf))

    def median_scale(self) -> tuple[float, float]:
        data = self.buf[:self.n] if self.n < len(self.buf) else self.buf
        med = _median(data)
        mad = _median(np.abs(data - med))
        return med, 1.4826 * mad


def _median(data: np.ndarray) -> float:
    """np.median of a 1-D float array, the same value, without what np.median loads on first
    use (numpy.ma and more: ~1.7 MiB of the predictor's resident memory)."""
    n = len(data)
    if n == 0 or np.isnan(data).any():
        return math.nan
    half = n // 2
    if n % 2:
        return float(np.partition(data, half)[half])
    low, high = np.partition(data, (half - 1, half))[half - 1:half + 1]
    return float((low + high) / 2)
