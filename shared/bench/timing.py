"""Small timing helpers: a synchronising clock, medians and percentiles."""

from __future__ import annotations

import math
import statistics
import time


def sync(device: str) -> None:
    """Wait for queued GPU work, so a clock reading covers it."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn, *args, device: str = "cpu", **kwargs):
    """(seconds, result) of one call."""
    sync(device)
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    sync(device)
    return time.perf_counter() - t0, out


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values, q: float) -> float | None:
    """The q-th percentile (0-100), nearest-rank, of a non-empty list."""
    values = sorted(values)
    if not values:
        return None
    rank = max(1, min(len(values), math.ceil(q / 100 * len(values))))
    return values[rank - 1]
