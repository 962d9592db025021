"""Timing helpers: warm-up, interleaved repeats, medians with their spread.

These machines are shared and noisy, so every comparison is measured side by side: the
contenders run in turn within each repeat (their order rotating), and only ratios of medians
are read as results.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stat:
    """Summary of repeated measurements of one quantity (seconds unless said otherwise)."""

    median: float
    p25: float
    p75: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Summarise values (at least one).

        >>> Stat.of([3.0, 1.0, 2.0]).median
        2.0
        """
        if not values:
            raise ValueError("no measurements")
        return cls(median=statistics.median(values), p25=percentile(values, 25), p75=percentile(values, 75),
                   lo=min(values), hi=max(values), n=len(values))

    @property
    def spread(self) -> float:
        """Half the interquartile range relative to the median (0.05 = ±5 %)."""
        return (self.p75 - self.p25) / 2 / self.median if self.median else 0.0

    def to_dict(self) -> dict[str, float]:
        """Plain numbers for JSON."""
        return {"median": self.median, "p25": self.p25, "p75": self.p75, "min": self.lo, "max": self.hi,
                "n": self.n}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    pos = (len(data) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def latency_ms(seconds: Sequence[float], prefix: str, suffix: str = "") -> dict[str, float | None]:
    """p50, p99 and max of durations in milliseconds, named `{prefix}_{stat}_ms{suffix}` (None when empty).

    >>> latency_ms([0.001, 0.003], "x", "_1k")
    {'x_p50_ms_1k': 2.0, 'x_p99_ms_1k': 2.98, 'x_max_ms_1k': 3.0}
    """
    ms = [s * 1000 for s in seconds]
    stats = {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms)} if ms else {}
    return {f"{prefix}_{stat}_ms{suffix}": (round(stats[stat], 9) if stats else None) for stat in ("p50", "p99", "max")}


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for queued device work (cuda), so a timer sees it; no-op on the CPU."""
    if not device.startswith("cuda"):
        return lambda: None
    import torch

    return torch.cuda.synchronize


def interleave(contenders: dict[str, Callable[[], Any]], *, warmup: int, repeats: int,
               sync: Callable[[], None] = lambda: None,
               cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Time each contender `repeats` times after `warmup` untimed runs, in turn within each repeat.

    The order rotates every repeat, so none always runs first (right after the other's caches
    and frequency state). Returns the wall-clock seconds of every timed run per name; `cpu`, if
    given, receives the process CPU seconds of the same runs (all threads: a run that waited for
    a core shows in wall time, not in CPU time).
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            started, cpu_started = time.perf_counter(), time.process_time()
            contenders[name]()
            sync()
            times[name].append(time.perf_counter() - started)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - cpu_started)
    return times
