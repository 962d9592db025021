"""Paired statistics for experiments: arm − random per seed, t intervals, Holm, AUC, labels-to-reach.

Seeds are the replicates: under common random numbers an arm and random share everything but the
selection at a seed, so the per-seed difference is the paired observation. Pure Python (no scipy):
the t distribution comes from the regularised incomplete beta function.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The q-quantile (q > ½) of Student's t, by bisection on the CDF.

    >>> round(t_quantile(0.975, 2), 4)
    4.3027
    """
    target = 2.0 * (1.0 - q)  # two-sided tail probability
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_two_sided_p(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class PairedResult:
    """Mean paired difference over seeds with its t interval and two-sided p-value."""

    mean: float
    low: float
    high: float
    p: float
    n: int
    sd: float


def paired_interval(diffs: Sequence[float], level: float = 0.95) -> PairedResult:
    """Student-t interval for the mean of per-seed differences (n ≥ 2).

    >>> r = paired_interval([0.1, 0.2, 0.3]); (round(r.low, 4), round(r.high, 4))
    (-0.0484, 0.4484)
    """
    n = len(diffs)
    if n < 2:
        raise ValueError("a paired interval needs at least two seeds")
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs)
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    p = 1.0 if se == 0 and mean == 0 else (0.0 if se == 0 else t_two_sided_p(mean / se, n - 1))
    return PairedResult(mean, mean - half, mean + half, p, n, sd)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    >>> holm({"a": 0.01, "b": 0.04, "c": 0.03})
    {'a': 0.03, 'c': 0.06, 'b': 0.06}
    """
    order = sorted(pvalues, key=lambda k: pvalues[k])
    m = len(order)
    out: dict[str, float] = {}
    running = 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[key]))
        out[key] = round(running, 12)
    return out


def auc(curve: Sequence[tuple[float, float]]) -> float:
    """Area under a learning curve (labels, score) by trapezoids, divided by its label range.

    The result is the curve's mean height, comparable across schedules:
    >>> auc([(16, 0.5), (32, 0.7)])
    0.6
    """
    pts = sorted(curve)
    if len(pts) == 1:
        return pts[0][1]
    area = sum((x1 - x0) * (y0 + y1) / 2.0 for (x0, y0), (x1, y1) in itertools.pairwise(pts))
    return area / (pts[-1][0] - pts[0][0])


def labels_to_reach(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """Labels at which a mean curve first reaches `target` (linear interpolation); None if never."""
    prev = None
    for x, y in sorted(curve):
        if y >= target - 1e-12:
            if prev is None or y == prev[1]:
                return float(x)
            return prev[0] + (target - prev[1]) / (y - prev[1]) * (x - prev[0])
        prev = (x, y)
    return None


def labels_to_reach_interval(arm: Mapping[int, Mapping[float, float]], base: Mapping[int, Mapping[float, float]],
                             *, draws: int = 2000, seed: int = 0,
                             level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """Labels the arm needs to reach the baseline's final mean score, with a seed-bootstrap interval.

    `arm[seed][labels]` and `base[seed][labels]` are scores; seeds are resampled in pairs. A draw
    where the arm never reaches the target counts as beyond the schedule (+∞), so the upper end
    of the interval is None ("not reached") when that happens in more than the tail share.
    """
    seeds = sorted(set(arm) & set(base))
    if not seeds:
        return None, None, None

    def estimate(sample: Sequence[int]) -> float:
        xs = sorted(arm[seeds[0]])
        target = statistics.fmean(base[s][max(base[s])] for s in sample)
        curve = [(x, statistics.fmean(arm[s][x] for s in sample)) for x in xs]
        value = labels_to_reach(curve, target)
        return math.inf if value is None else value

    point = estimate(seeds)
    rng = random.Random(seed)
    boot = sorted(estimate([rng.choice(seeds) for _ in seeds]) for _ in range(draws))
    lo = boot[int((1 - level) / 2 * draws)]
    hi = boot[min(draws - 1, int((1 + level) / 2 * draws))]

    def finite(v: float) -> float | None:
        return None if math.isinf(v) else v

    return finite(point), finite(lo), finite(hi)
