"""Latency histograms shared by the load benchmarks (fan-out load, loadgen).

Log-linear buckets on integer microseconds, HDR style: values below 64 have a
bucket each, above that every power of two is split into 64 sub-buckets
(about 1.6 % resolution). A histogram is a ``{bucket index: count}`` dict, so
client processes send theirs as JSON or pickles and the orchestrator merges
them by adding counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


__all__ = [
    "SUB_BITS",
    "bucket_index",
    "bucket_value",
    "merge",
    "percentiles",
    "summary_ms",
]

SUB_BITS = 6


def bucket_index(us: int) -> int:
    """Bucket of a value in microseconds (negative values count as 0)."""
    if us < (1 << SUB_BITS):
        return max(us, 0)
    shift = us.bit_length() - SUB_BITS
    return (shift << SUB_BITS) + (us >> shift)


def bucket_value(idx: int) -> float:
    """Representative microseconds of a bucket (its middle)."""
    shift, mantissa = idx >> SUB_BITS, idx & ((1 << SUB_BITS) - 1)
    if shift == 0:
        return float(mantissa)
    return (mantissa << shift) + (1 << shift) / 2


def merge(hists: Iterable[Mapping[int | str, int]]) -> dict[int, int]:
    """Sum of histograms (keys may be strings, as after a JSON round trip)."""
    out: dict[int, int] = {}
    for hist in hists:
        for idx, n in hist.items():
            key = int(idx)
            out[key] = out.get(key, 0) + n
    return out


def percentiles(hist: Mapping[int, int], points: list[float]) -> list[float]:
    """Microseconds at each of ``points`` (fractions: 0.5, 0.99, 1.0); NaN when empty."""
    total = sum(hist.values())
    if not total:
        return [math.nan for _ in points]
    out = []
    items = sorted(hist.items())
    for p in points:
        rank = max(1, math.ceil(total * p))
        seen = 0
        for idx, n in items:
            seen += n
            if seen >= rank:
                out.append(bucket_value(idx))
                break
    return out


def summary_ms(hist: Mapping[int, int]) -> dict[str, float | int]:
    """``count``, ``p50``, ``p90``, ``p99``, ``p999`` and ``max`` in milliseconds.

    An empty histogram gives ``{"count": 0}`` (no NaN: the results are strict JSON).
    """
    if not any(hist.values()):
        return {"count": 0}
    p50, p90, p99, p999, top = percentiles(hist, [0.5, 0.9, 0.99, 0.999, 1.0])
    return {
        "count": sum(hist.values()),
        "p50": round(p50 / 1000, 3),
        "p90": round(p90 / 1000, 3),
        "p99": round(p99 / 1000, 3),
        "p999": round(p999 / 1000, 3),
        "max": round(top / 1000, 3),
    }
