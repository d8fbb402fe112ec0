"""Roll-up maths: min/max/sum/count/last per channel and time bucket. Pure, no SQL.

The saver folds each batch into partial aggregates here, then merges them into the
roll-up tables with an upsert (`MERGE_SQL`), so a bucket's row is exact however the data
was split across batches: min of mins, max of maxes, sums and counts added, and the
last value is the one with the latest timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the tables and their widths belong to the schema (readers use them without numpy)
from appliance.store.schema import HOUR_MS, MINUTE_MS, RESOLUTIONS  # noqa: F401


@dataclass(frozen=True, slots=True)
class Aggregate:
    channel_id: int
    bucket: int  # bucket start, epoch ms
    min: float
    max: float
    sum: float
    count: int
    last: float
    last_ts: int


def aggregate(channel_id: int, ts: np.ndarray, values: np.ndarray, width_ms: int) -> list[Aggregate]:
    """Aggregates of one channel's (ts, value) samples per bucket of `width_ms`.

    ts: int64 epoch ms, values: float64, same length, any order.
    """
    n = len(ts)
    if n == 0:
        return []
    if n > 1 and not (ts[1:] >= ts[:-1]).all():  # usually already in time order
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        values = values[order]
    buckets = ts // width_ms
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(buckets[1:], buckets[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    bounds = np.append(starts, n)
    ends = bounds[1:] - 1
    mins = np.minimum.reduceat(values, starts)
    maxs = np.maximum.reduceat(values, starts)
    sums = np.add.reduceat(values, starts)
    counts = np.diff(bounds)
    return [Aggregate(channel_id, b * width_ms, mn, mx, sm, c, last, last_ts)
            for b, mn, mx, sm, c, last, last_ts in zip(
                buckets[starts].tolist(), mins.tolist(), maxs.tolist(), sums.tolist(),
                counts.tolist(), values[ends].tolist(), ts[ends].tolist())]


def merge_sql(table: str) -> str:
    """An upsert that folds a partial aggregate into the stored row of its bucket."""
    return (f"INSERT INTO {table} (channel_id, bucket, min, max, sum, count, last, last_ts) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel_id, bucket) DO UPDATE SET "
            f"min = min({table}.min, excluded.min), max = max({table}.max, excluded.max), "
            f"sum = {table}.sum + excluded.sum, count = {table}.count + excluded.count, "
            f"last = CASE WHEN excluded.last_ts >= {table}.last_ts THEN excluded.last ELSE {table}.last END, "
            f"last_ts = max({table}.last_ts, excluded.last_ts)")


def as_row(a: Aggregate) -> tuple:
    return (a.channel_id, a.bucket, a.min, a.max, a.sum, a.count, a.last, a.last_ts)
