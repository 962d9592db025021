"""Acquisition: which pairs are worth a label (Muldrew et al., ICML 2024, section 3).

Scoring functions are kept apart from selection: every function turns inputs into one score per
candidate where HIGHER is better, and selection is always "take the top k". The inputs that
explain a score (entropy, r̂_A, r̂_B, p(A≻B)) travel with it into the `scores` table.

- entropy: Ĥ(x) = (1/N) Σ_n −log π_θ(y_n|x), y_n ~ π_θ(·|x) at T = 1 (no top-k/top-p). Each
  prompt's estimate uses its own N samples only (the authors' batched code averaged a window that
  crossed prompts; see tests/test_acquisition.py).
- certainty: |r̂_A − r̂_B| with r̂ = β(log π_θ − log π_ref); the paper keeps the largest.
- uncertainty: −|r̂_A − r̂_B| (the smallest margin first): the Sharpe-ratio rule of Belakaria et
  al. 2025 ranks exactly so.
- hybrid: entropy filter on prompts (F_e), then certainty over the generated pairs (F_c).
- random: a seeded uniform draw.
- gap-ucb, drts, dopt, dopt+gap: the preference head on frozen features, not r̂ (below).
- batch_keys: softmax / mix-random selection over any function's scores.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from apl_tui.records import ScoreRow

PAIR_FUNCTIONS = ("certainty", "uncertainty", "hybrid")
"""Functions that need r̂, so fall back to random while the policy still equals the reference."""
PREDICTING_FUNCTIONS = ("random", "entropy")
"""Functions that rank without r̂; with `acquisition.predict` they still record it, as evidence."""

WARMUP_NOTE = "warm-up: no adapter yet (r̂ = 0), drawn at random"


@dataclass(frozen=True)
class SampledSequence:
    """What the entropy estimator needs from one sample: its raw log-prob and length."""

    logp: float
    tokens: int


Sampler = Callable[[Sequence[str], int, int], list[list[SampledSequence]]]
"""(prompts, n, seed) -> for each prompt, its n samples drawn at T = 1."""


def mc_entropy(samples: Sequence[SampledSequence], *, per_token: bool = False) -> float:
    """Monte-Carlo predictive entropy of ONE prompt from its own samples.

    >>> mc_entropy([SampledSequence(-2.0, 4), SampledSequence(-4.0, 4)])
    3.0
    >>> mc_entropy([SampledSequence(-2.0, 4), SampledSequence(-4.0, 4)], per_token=True)
    0.75
    """
    if not samples:
        raise ValueError("entropy needs at least one sample")
    if per_token:
        return sum(-s.logp / max(s.tokens, 1) for s in samples) / len(samples)
    return sum(-s.logp for s in samples) / len(samples)


def entropy_scores(sampler: Sampler, prompts: Sequence[str], *, n: int, seed: int,
                   per_token: bool = False) -> list[float]:
    """Entropy estimate per prompt; the sampler groups samples by prompt, so no window can cross."""
    grouped = sampler(prompts, n, seed)
    if len(grouped) != len(prompts) or any(len(g) != n for g in grouped):
        raise ValueError("sampler must return n samples for each prompt")
    return [mc_entropy(g, per_token=per_token) for g in grouped]


def policy_sampler(policy: object, *, max_new_tokens: int, batch_size: int = 16) -> Sampler:
    """A Sampler over `Policy.generate` at T = 1 with raw-logit log-probs (no second pass)."""

    def sample(prompts: Sequence[str], n: int, seed: int) -> list[list[SampledSequence]]:
        out = policy.generate(list(prompts), n=n, temperature=1.0, top_p=1.0, min_new_tokens=0,  # type: ignore[attr-defined]
                              max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)
        return [[SampledSequence(s.logp, len(s.token_ids)) for s in group] for group in out]

    return sample


def implicit_rewards(policy_a: float, policy_b: float, ref_a: float, ref_b: float,
                     beta: float) -> tuple[float, float, float]:
    """(r̂_A, r̂_B, p(A≻B)) with r̂ = β(log π_θ − log π_ref) and p = σ(r̂_A − r̂_B)."""
    ra = beta * (policy_a - ref_a)
    rb = beta * (policy_b - ref_b)
    d = ra - rb
    p = 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))
    return ra, rb, p


def pair_score(name: str, reward_a: float, reward_b: float) -> float:
    """Higher is better for every function: certainty keeps large margins, uncertainty small."""
    margin = abs(reward_a - reward_b)
    if name in ("certainty", "hybrid"):
        return margin
    if name == "uncertainty":
        return -margin
    raise ValueError(f"{name} is not a pair-level function")


def random_score(candidate_id: int, adapter_version: int, seed: int) -> float:
    """A reproducible uniform draw in [0, 1) per (candidate, adapter, seed)."""
    digest = hashlib.blake2b(f"{seed}:{adapter_version}:{candidate_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def score_rows(name: str, candidates: Sequence[dict], *, adapter_version: int, beta: float, seed: int,
               policy_logps: Sequence[tuple[float, float]] | None = None,
               entropies: Sequence[float | None] | None = None, warm: bool = True) -> list[ScoreRow]:
    """Score rows for candidates (dicts with id, ref_logp_a, ref_logp_b, entropy).

    `warm` is False while no adapter exists: pair-level functions then draw at random and say so.
    """
    rows = []
    for i, c in enumerate(candidates):
        cid = int(c["id"])
        ent = entropies[i] if entropies is not None else c.get("entropy")
        if name in PREDICTING_FUNCTIONS:
            if name == "entropy" and ent is None:
                raise ValueError("entropy scoring needs an entropy per candidate")
            score = random_score(cid, adapter_version, seed) if name == "random" else float(ent)
            prediction: dict[str, float] = {}
            if warm and policy_logps is not None:  # not used to rank: recorded as the model's prediction
                ra, rb, p = implicit_rewards(*policy_logps[i], float(c["ref_logp_a"]), float(c["ref_logp_b"]), beta)
                prediction = {"reward_a": ra, "reward_b": rb, "p_a": p}
            rows.append(ScoreRow(cid, adapter_version, name, score, entropy=ent, **prediction))
            continue
        if not warm or policy_logps is None:
            rows.append(ScoreRow(cid, adapter_version, name, random_score(cid, adapter_version, seed),
                                 entropy=ent, reward_a=0.0, reward_b=0.0, p_a=0.5, fallback=WARMUP_NOTE))
            continue
        pa, pb = policy_logps[i]
        ra, rb, p = implicit_rewards(pa, pb, float(c["ref_logp_a"]), float(c["ref_logp_b"]), beta)
        rows.append(ScoreRow(cid, adapter_version, name, pair_score(name, ra, rb), entropy=ent,
                             reward_a=ra, reward_b=rb, p_a=p))
    return rows


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k highest scores, best first; ties keep input order (stable)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order[:k]


def choose_left(seed: int, candidate_id: int, impression: int) -> str:
    """Which completion goes on the left: a fair, reproducible coin per shown pair."""
    return "a" if random.Random(f"{seed}:{candidate_id}:{impression}").random() < 0.5 else "b"


# --- functions on the preference head (frozen features), and batch design -------------------------
#
# These read `apl_tui.pref_head.PrefHead` (an ensemble of Bradley–Terry models on the reference
# model's mean-pooled hidden states), never DPO's implicit reward. Candidates are the pairs within
# a prompt's group of N completions: `left`/`right` index completions, `groups` the prompt of a pair.

HEAD_FUNCTIONS = ("gap-ucb", "drts", "dopt", "dopt+gap")
"""Functions that score with the preference head and the features (DPO's r̂ is not used)."""

HEAD_WARMUP_NOTE = "no a/b label yet: the preference head is not fitted, drawn at random"


def center_by_group(util: Any, comp_groups: Sequence[int]) -> Any:
    """Subtract, per member, each prompt's mean utility from its completions' utilities.

    Only differences within a prompt mean anything to a Bradley–Terry model; centering removes the
    part every completion of a prompt shares, whose member-to-member spread would otherwise swamp
    the per-completion uncertainty. `util` is (M, C); returns (M, C).

    >>> import numpy as np
    >>> center_by_group(np.array([[1.0, 3.0, 10.0]]), [0, 0, 1]).tolist()
    [[-1.0, 1.0, 0.0]]
    """
    import numpy as np

    util = np.asarray(util, dtype=np.float64)
    groups = np.asarray(comp_groups)
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((util.shape[0], int(inverse.max(initial=-1)) + 1))
    np.add.at(sums.T, inverse, util.T)
    counts = np.bincount(inverse).astype(np.float64)
    return util - (sums / counts)[:, inverse]


def gap_ucb(util: Any, left: Sequence[int], right: Sequence[int], *, c: float = 1.0) -> list[float]:
    """max(UCB_l − LCB_r, UCB_r − LCB_l) = |μ_l − μ_r| + c(σ_l + σ_r) per pair (the largest optimistic gap).

    μ, σ: mean and standard deviation over the ensemble's (centered) utilities `util` (M, C). Within
    a prompt the top-scored pair is the one DeltaUCB (ActiveUltraFeedback) contrasts.
    """
    import numpy as np

    util = np.asarray(util, dtype=np.float64)
    mu, sd = util.mean(axis=0), util.std(axis=0)
    lft, rgt = np.asarray(left), np.asarray(right)
    return (np.abs(mu[lft] - mu[rgt]) + c * (sd[lft] + sd[rgt])).tolist()


def drts(util: Any, left: Sequence[int], right: Sequence[int], groups: Sequence[int], *, seed: int) -> list[float]:
    """Thompson variant of gap-ucb: per prompt two members m₁ ≠ m₂ are drawn (seeded by prompt).

    Score of pair (l, r): max(u_m₁(l) − u_m₂(r), u_m₁(r) − u_m₂(l)), so the prompt's top pair is the
    best completion under one draw against the worst under the other.
    """
    import numpy as np

    util = np.asarray(util, dtype=np.float64)
    m = util.shape[0]
    out = []
    for g, lft, rgt in zip(groups, left, right):
        rng = random.Random(f"{seed}:drts:{g}")
        m1, m2 = rng.sample(range(m), 2) if m >= 2 else (0, 0)
        out.append(float(max(util[m1, lft] - util[m2, rgt], util[m1, rgt] - util[m2, lft])))
    return out


def dopt(x: Any, groups: Sequence[int], *, batch: int, labeled: Any = None, weights: Sequence[float] | None = None,
         ridge: float = 1.0) -> list[float]:
    """Greedy D-optimal batch over pair features x (P, d): score = w·xᵀH⁻¹x when picked.

    H₀ = λI + Σ_labeled x xᵀ; each pick x_t (at most one per prompt) updates H ← H + w_t x_t x_tᵀ by
    Sherman–Morrison, so later picks favour directions the batch has not covered yet. w = 1 before
    any label (pure coverage); callers pass w = p(1 − p) from the head after. Rows are scaled to
    unit RMS norm (over the candidates and the labeled rows), so λ means the same on any model.
    Picked pairs score their gain at pick time (non-increasing along the batch); the others their
    gain after the whole batch, so top-k (one per prompt) returns exactly the greedy batch.
    """
    import numpy as np

    xs = np.asarray(x, dtype=np.float64)
    lab = np.zeros((0, xs.shape[1])) if labeled is None else np.asarray(labeled, dtype=np.float64)
    w = np.ones(len(xs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(xs) == 0:
        return []
    both = np.concatenate([xs, lab])
    scale = float(np.sqrt((both * both).sum(axis=1).mean())) or 1.0
    xs, lab = xs / scale, lab / scale
    h0inv, q = _h0_inverse(lab, ridge, xs)  # q: (P,) xᵀH₀⁻¹x
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    free = np.ones(len(xs), dtype=bool)
    updates: list[tuple[Any, float]] = []  # (u_s, coefficient) with H_t⁻¹ = H₀⁻¹ − Σ coef u uᵀ
    picked_gain: dict[int, float] = {}
    for _ in range(min(batch, len(xs))):
        if not free.any():
            break
        gains = np.where(free, w * q, -np.inf)
        t = int(np.argmax(gains))  # ties: the lowest index
        picked_gain[t] = float(gains[t])
        free[members[groups[t]]] = False  # one pair per prompt
        u = h0inv(xs[t][:, None])[:, 0]  # (d,) H_t⁻¹ x_t
        for us, coef in updates:
            u = u - coef * us * float(us @ xs[t])
        coef = w[t] / (1.0 + w[t] * float(xs[t] @ u))
        updates.append((u, coef))
        q = q - coef * (xs @ u) ** 2
    return [picked_gain.get(i, float(w[i] * q[i])) for i in range(len(xs))]


def _h0_inverse(lab: Any, ridge: float, xs: Any) -> tuple[Callable[[Any], Any], Any]:
    """(V ↦ H₀⁻¹V, xᵀH₀⁻¹x per row of xs) for H₀ = λI + LᵀL.

    While there are fewer labels than dimensions, Woodbury works in the n×n system:
    H₀⁻¹ = (I − Lᵀ(λI + LLᵀ)⁻¹L)/λ.
    """
    import numpy as np

    n, d = lab.shape
    sq = (xs * xs).sum(axis=1)  # (P,)
    if n == 0:
        return (lambda v: v / ridge), sq / ridge
    if n < d:
        ginv = np.linalg.inv(ridge * np.eye(n) + lab @ lab.T)  # (n, n)
        z = lab @ xs.T  # (n, P)
        q = (sq - (z * (ginv @ z)).sum(axis=0)) / ridge
        return (lambda v: (v - lab.T @ (ginv @ (lab @ v))) / ridge), q
    inv = np.linalg.inv(ridge * np.eye(d) + lab.T @ lab)  # (d, d)
    return (lambda v: inv @ v), ((xs @ inv) * xs).sum(axis=1)


def dopt_gap(x: Any, gaps: Sequence[float] | None, groups: Sequence[int], *, batch: int, labeled: Any = None,
             weights: Sequence[float] | None = None, ridge: float = 1.0) -> list[float]:
    """Prompts by `dopt`, the pair within each prompt by its gap-ucb score.

    Each prompt's highest-gap pair represents it in the D-optimal design (gains ≥ 0); its other
    pairs score −1 − (their gap shortfall), below every representative. Without a head (`gaps`
    None) this is plain `dopt`.
    """
    if gaps is None:
        return dopt(x, groups, batch=batch, labeled=labeled, weights=weights, ridge=ridge)
    best: dict[int, int] = {}
    for i, g in enumerate(groups):
        if g not in best or gaps[i] > gaps[best[g]]:
            best[g] = i
    reps = sorted(best.values())
    rep_w = None if weights is None else [weights[i] for i in reps]
    gains = dopt([x[i] for i in reps], [groups[i] for i in reps], batch=batch, labeled=labeled,
                 weights=rep_w, ridge=ridge)
    out = [-1.0 - (gaps[best[g]] - gaps[i]) for i, g in enumerate(groups)]
    for i, gain in zip(reps, gains):
        out[i] = gain
    return out


SELECTIONS = ("top-k", "softmax")


def batch_keys(scores: Sequence[float], k: int, *, selection: str = "top-k", tau: float = 1.0,
               mix_random: float = 0.0, seed: int = 0) -> list[float]:
    """Keys whose top-k is the wrapped batch: any function's scores, chosen less redundantly.

    softmax: k drawn without replacement with probability ∝ exp(z/τ), z the scores standardised
    over the candidates (so τ is in units of their spread), by the Gumbel-top-k trick (top-k of
    z/τ + Gumbel noise is exactly that sequential draw). mix_random: round(share·k) of the batch
    are uniform draws, placed above the rest; the others follow the (wrapped) scores.
    """
    import numpy as np

    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    keys = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if selection == "softmax" and len(keys):
        sd = float(keys.std()) or 1.0
        keys = (keys - keys.mean()) / sd / tau + rng.gumbel(size=len(keys))
    keys = keys.copy()
    m = min(len(keys), round(mix_random * k))
    if m:
        drawn = rng.choice(len(keys), m, replace=False)
        keys[drawn] = float(keys.max()) + 1.0 + rng.random(m)
    return keys.tolist()
