"""Roll-up maths: min/max/sum/count/last per channel and time bucket. Pure, no SQL.

The saver folds each batch into partial aggregates here, then merges them into the
roll-up tables with an upsert (`MERGE_SQL`), so a bucket's row is exact however the data
was split across batches: min of mins, max of maxes, sums and counts added, and the
last value is the one with the latest timestamp.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import islice
from operator import le
from typing import NamedTuple, Sequence

# the tables and their widths belong to the schema
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


class Buckets(NamedTuple):
    """Where a series of timestamps falls in buckets of one width. Every channel of a group of
    frames shares its timestamps, so this is worked out once for all of them."""

    order: list[int] | None  # indices putting the samples in time order; None: they are
    spans: list[tuple[int, int, int, int]]  # (bucket start ms, first index, end index, last ts)


def buckets(ts: Sequence[int], width_ms: int) -> Buckets:
    """The buckets of `width_ms` that the epoch-ms timestamps `ts` (any order) fall in."""
    n = len(ts)
    if n == 0:
        return Buckets(None, [])
    order = None
    if n > 1 and not all(map(le, ts, islice(ts, 1, None))):  # usually already in time order
        order = sorted(range(n), key=ts.__getitem__)  # stable: of equal stamps the later is last
        ts = [ts[i] for i in order]
    first = ts[0] // width_ms
    if first == ts[-1] // width_ms:  # a batch (100 ms of data) mostly falls in one bucket
        return Buckets(order, [(first * width_ms, 0, n, ts[-1])])
    spans = []
    start = 0
    while start < n:
        bucket = ts[start] // width_ms
        stop = bisect_left(ts, (bucket + 1) * width_ms, start)
        spans.append((bucket * width_ms, start, stop, ts[stop - 1]))
        start = stop
    return Buckets(order, spans)


def aggregate_in(channel_id: int, where: Buckets, values: Sequence[float]) -> list[Aggregate]:
    """Aggregates of one channel's values, sampled at the timestamps `where` was made from.

    Plain Python, no numpy: the saver is resident and numpy costs it ~15 MB; min, max and
    sum of a list are C loops, and most batches are one bucket.
    """
    if where.order is not None:
        values = [values[i] for i in where.order]
    out = []
    for bucket, start, stop, last_ts in where.spans:
        chunk = values if stop - start == len(values) else values[start:stop]
        out.append(Aggregate(channel_id, bucket, min(chunk), max(chunk), sum(chunk), stop - start,
                             chunk[-1], last_ts))
    return out


def coarser(aggregates: list[Aggregate], width_ms: int) -> list[Aggregate]:
    """Aggregates over buckets of `width_ms` folded from finer ones in time order (whose
    width divides `width_ms`): an hour from its minutes, with no second pass over the samples."""
    out: list[Aggregate] = []
    for a in aggregates:
        bucket = a.bucket // width_ms * width_ms
        if out and out[-1].bucket == bucket:
            p = out[-1]  # a is the later of the two
            out[-1] = Aggregate(a.channel_id, bucket, a.min if a.min < p.min else p.min,
                                a.max if a.max > p.max else p.max, p.sum + a.sum, p.count + a.count,
                                a.last, a.last_ts)
        else:
            out.append(Aggregate(a.channel_id, bucket, a.min, a.max, a.sum, a.count, a.last, a.last_ts))
    return out


def by_table(channel_id: int, finest: Buckets, values: Sequence[float]) -> list[tuple[str, list[Aggregate]]]:
    """(table, aggregates) for every roll-up resolution: the finest (`finest`, the buckets
    of the first entry of RESOLUTIONS) from the values, each coarser one folded from it."""
    (table, _), *others = RESOLUTIONS.values()
    aggregates = aggregate_in(channel_id, finest, values)
    out = [(table, aggregates)]
    for table, width in others:
        aggregates = coarser(aggregates, width)
        out.append((table, aggregates))
    return out


def aggregate(channel_id: int, ts: Sequence[int], values: Sequence[float], width_ms: int) -> list[Aggregate]:
    """Aggregates of one channel's (ts, value) samples per bucket of `width_ms`.

    ts: epoch ms (int), values: float, same length, any order.
    """
    return aggregate_in(channel_id, buckets(ts, width_ms), values)


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
