"""Scoring with the preference head: fit it from the store's labels, rank the whole queue with it.

Head functions (`acquisition.HEAD_FUNCTIONS`) look at every pair of a prompt at once (which two
completions to contrast) and at the whole pool at once (a D-optimal batch), so unlike the r̂
functions they score the queue in one piece rather than chunk by chunk; they need no model pass
(φ is stored with each candidate), so a refit and a rescore take well under a second and the
learner repeats them every `head_refit_every` labels, between DPO rounds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from apl_tui import acquisition as acq
from apl_tui.config import AcquisitionConfig
from apl_tui.pref_head import PrefHead, fit_head
from apl_tui.records import ScoreRow

logger = logging.getLogger(__name__)

COVERAGE_NOTE = "no a/b label yet: pure coverage (D-optimal with w = 1)"


@dataclass(frozen=True)
class PairPool:
    """Candidates as pairs of completions: completions deduplicated per prompt.

    Example: one prompt with pairs (y1, y2), (y1, y3), (y2, y3) → phi has 3 rows, left = [0, 0, 1],
    right = [1, 2, 2], groups = comp_groups' entries = that prompt.
    """

    phi: np.ndarray  # (C, d) one row per distinct completion
    comp_groups: list[int]  # (C,) prompt of each completion
    left: list[int]  # (P,) completion index of side A
    right: list[int]  # (P,) completion index of side B
    groups: list[int]  # (P,) prompt of each pair

    @property
    def diffs(self) -> np.ndarray:
        """(P, d) φ(a) − φ(b) per pair."""
        return self.phi[self.left] - self.phi[self.right]


def pair_pool(rows: Sequence[dict[str, Any]]) -> PairPool:
    """Build a PairPool from rows with prompt_id, completion_a/b and phi_a/b."""
    index: dict[tuple[int, str], int] = {}
    phis: list[Any] = []
    comp_groups: list[int] = []
    left, right, groups = [], [], []
    for r in rows:
        pid = int(r["prompt_id"])
        ends = []
        for side in ("a", "b"):
            key = (pid, r[f"completion_{side}"])
            if key not in index:
                index[key] = len(phis)
                phis.append(r[f"phi_{side}"])
                comp_groups.append(pid)
            ends.append(index[key])
        left.append(ends[0])
        right.append(ends[1])
        groups.append(pid)
    phi = np.asarray(phis, dtype=np.float64) if phis else np.zeros((0, 0))
    return PairPool(phi=phi, comp_groups=comp_groups, left=left, right=right, groups=groups)


def fit_labels(labels: Sequence[tuple[Any, Any, bool]], a: AcquisitionConfig, *, seed: int) -> PrefHead | None:
    """The head fitted on (φ_a, φ_b, A won) rows; None before the first a/b label."""
    if not labels:
        return None
    diffs = np.asarray([np.asarray(pa, dtype=np.float64) - np.asarray(pb, dtype=np.float64) for pa, pb, _ in labels])
    won = np.asarray([w for _, _, w in labels])
    return fit_head(diffs, won, members=a.head_members, ridge=a.head_ridge, seed=seed)


def head_scores(name: str, pool: PairPool, head: PrefHead | None, labeled: np.ndarray | None,
                a: AcquisitionConfig, *, batch: int, seed: int) -> tuple[list[float], list[float | None],
                                                                     list[tuple[float, float] | None], str | None]:
    """(scores, p(A≻B) or None, (u_A, u_B) or None, fallback note) per pair for a head function.

    Before the first label there is no head: gap-ucb and drts draw at random (seeded), dopt and
    dopt+gap design for coverage alone (w = 1).
    """
    n = len(pool.groups)
    if name not in acq.HEAD_FUNCTIONS:
        raise ValueError(f"{name} is not a head function")
    if n == 0:
        return [], [], [], None
    if head is None:
        if name in ("dopt", "dopt+gap"):
            return (acq.dopt(pool.diffs, pool.groups, batch=batch, labeled=labeled, ridge=a.head_ridge),
                    [None] * n, [None] * n, COVERAGE_NOTE)
        rng = np.random.default_rng(seed)
        return rng.random(n).tolist(), [None] * n, [None] * n, acq.HEAD_WARMUP_NOTE
    util = acq.center_by_group(head.utilities(pool.phi), pool.comp_groups)  # (M, C)
    mean_util = util.mean(axis=0)
    p, _ = head.prefer(pool.phi[pool.left], pool.phi[pool.right])
    rewards: list[tuple[float, float] | None] = [(float(mean_util[i]), float(mean_util[j]))
                                                 for i, j in zip(pool.left, pool.right)]
    probs: list[float | None] = [float(x) for x in p]
    if name == "gap-ucb":
        scores = acq.gap_ucb(util, pool.left, pool.right, c=a.ucb_c)
    elif name == "drts":
        scores = acq.drts(util, pool.left, pool.right, pool.groups, seed=seed)
    else:
        w = (p * (1.0 - p)).tolist()
        gaps = acq.gap_ucb(util, pool.left, pool.right, c=a.ucb_c) if name == "dopt+gap" else None
        scores = acq.dopt_gap(pool.diffs, gaps, pool.groups, batch=batch, labeled=labeled, weights=w,
                              ridge=a.head_ridge)
    return scores, probs, rewards, None


def score_pool(name: str, rows: Sequence[dict[str, Any]], labels: Sequence[tuple[Any, Any, bool]],
               a: AcquisitionConfig, *, adapter_version: int, batch: int, seed: int) -> list[ScoreRow]:
    """Fit the head on `labels` and score every row (the queue) with head function `name`.

    The batch wrapper (`selection`, `mix_random`) then turns the scores into selection keys.
    """
    head = fit_labels(labels, a, seed=seed)
    pool = pair_pool(rows)
    labeled = (np.asarray([np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64) for x, y, _ in labels])
               if labels else None)
    scores, probs, rewards, note = head_scores(name, pool, head, labeled, a, batch=batch, seed=seed)
    keys = wrap(scores, a, batch=batch, seed=seed)
    return [ScoreRow(int(r["id"]), adapter_version, name, float(k), reward_a=rw[0] if rw else None,
                     reward_b=rw[1] if rw else None, p_a=pr, fallback=note)
            for r, k, pr, rw in zip(rows, keys, probs, rewards)]


def wrap(scores: Sequence[float], a: AcquisitionConfig, *, batch: int, seed: int) -> list[float]:
    """The batch wrapper of any function's scores (identity for plain top-k)."""
    if a.selection == "top-k" and a.mix_random == 0:
        return list(scores)
    return acq.batch_keys(scores, batch, selection=a.selection, tau=a.softmax_temperature,
                          mix_random=a.mix_random, seed=seed)


def rank_pool_pairs(name: str, pool: dict[str, Any], cands: Sequence[tuple[int, int, int]],
                    labels: Sequence[Sequence[Any]], a: AcquisitionConfig, *, batch: int,
                    seed: int) -> list[tuple[int, int, int]]:
    """Experiments (shared-pool mode): `cands` (prompt, i, j) best first under head function `name`.

    `pool["completions"][p][i]["phi"]` holds φ; `labels` are [prompt, i, j, outcome] rows (outcome
    "a": completion i won; ties and unparseable verdicts are not a/b labels and are skipped).
    """
    comps = pool["completions"]
    rows = [{"id": n, "prompt_id": p, "completion_a": str(i), "completion_b": str(j),
             "phi_a": comps[p][i]["phi"], "phi_b": comps[p][j]["phi"]} for n, (p, i, j) in enumerate(cands)]
    ab = [(comps[p][i]["phi"], comps[p][j]["phi"], outcome == "a") for p, i, j, outcome in labels
          if outcome in ("a", "b")]
    scored = score_pool(name, rows, ab, a, adapter_version=0, batch=batch, seed=seed)
    order = sorted(range(len(cands)), key=lambda n: (-scored[n].score, n))
    return [cands[n] for n in order]
