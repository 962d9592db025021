"""Acquisition on the preference head: refit cost at 10k labels, selection cost on a 4,096-pair pool.

Self-contained (no model, no store): features are synthetic with the shape of SmolLM2's (d = 576)
and a few strong directions, as mean-pooled hidden states have. Timings cover the pure work the
learner does between labels: `head_scoring.fit_labels` and `head_scoring.head_scores` (+ the
batch wrapper), i.e. everything but reading the queue from DuckDB and writing the scores back.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from apl_tui.bench.timing import Stat
from apl_tui.bench.workload import BenchContext

DIM = 576
COMPLETIONS = 4
SELECT_FUNCTIONS = ("gap-ucb", "drts", "dopt", "dopt+gap")


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, d) features: isotropic noise plus 8 strong directions (hidden states are far from isotropic)."""
    basis = np.random.default_rng(12345).standard_normal((8, DIM)) * 4.0
    return rng.standard_normal((n, DIM)) + rng.standard_normal((n, 8)) @ basis


def _labels(rng: np.random.Generator, n: int) -> list[tuple[Any, Any, bool]]:
    a, b = _features(rng, n), _features(rng, n)
    truth = np.random.default_rng(7).standard_normal(DIM) / np.sqrt(DIM)
    won = rng.random(n) < 1.0 / (1.0 + np.exp(-(a - b) @ truth))
    return list(zip(a, b, won.tolist()))


def _timed(fn: Any, repeats: int) -> Stat:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Stat.of(times)


def run(ctx: BenchContext) -> dict[str, Any]:
    """Seconds: head refit at `acq_labels` labels; each head function on `acq_pool` pairs (batch 64)."""
    from apl_tui.config import AcquisitionConfig
    from apl_tui.head_scoring import fit_labels, head_scores, pair_pool, wrap

    sizes = ctx.sizes
    rng = np.random.default_rng(ctx.opts.seed)
    a = AcquisitionConfig(completions=COMPLETIONS)
    big = _labels(rng, sizes.acq_labels)
    fit = _timed(lambda: fit_labels(big, a, seed=0), max(sizes.repeats, 1))
    # The pool: prompts × 4 completions, every pair of a prompt a candidate, cut to acq_pool pairs.
    per = COMPLETIONS * (COMPLETIONS - 1) // 2
    prompts = -(-sizes.acq_pool // per)
    phi = _features(rng, prompts * COMPLETIONS)
    rows = []
    for p in range(prompts):
        for i in range(COMPLETIONS):
            for j in range(i + 1, COMPLETIONS):
                rows.append({"prompt_id": p, "completion_a": str(i), "completion_b": str(j),
                             "phi_a": phi[p * COMPLETIONS + i], "phi_b": phi[p * COMPLETIONS + j]})
    rows = rows[:sizes.acq_pool]
    small = big[:sizes.acq_head_labels]
    head = fit_labels(small, a, seed=0)
    labeled = np.asarray([x - y for x, y, _ in small])
    out: dict[str, Any] = {"acq_head_fit_s": fit.median, "acq_head_fit_labels": sizes.acq_labels,
                           "acq_pool_pairs": len(rows), "acq_select_labels": sizes.acq_head_labels}
    for name in SELECT_FUNCTIONS:
        def select(name: str = name) -> None:
            pool = pair_pool(rows)
            scores = head_scores(name, pool, head, labeled, a, batch=64, seed=0)[0]
            wrap(scores, a, batch=64, seed=0)
        out[f"acq_select_s_{name}"] = _timed(select, max(sizes.repeats, 1)).median
    soft = AcquisitionConfig(completions=COMPLETIONS, selection="softmax", mix_random=0.25)
    pool = pair_pool(rows)
    scores = head_scores("gap-ucb", pool, head, labeled, a, batch=64, seed=0)[0]
    out["acq_wrap_s_softmax_mix"] = _timed(lambda: wrap(scores, soft, batch=64, seed=0), max(sizes.repeats, 1)).median
    out["acq_select_s_max"] = max(out[f"acq_select_s_{n}"] for n in SELECT_FUNCTIONS)
    return out
