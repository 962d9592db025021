"""Acquisition: which pairs are worth a label (Muldrew et al., ICML 2024, section 3).

Scoring functions are kept apart from selection: every function turns inputs into one score per
candidate where HIGHER is better, and selection is always "take the top k". The inputs that
explain a score (entropy, r̂_A, r̂_B, p(A≻B)) travel with it into the `scores` table.

- entropy: Ĥ(x) = (1/N) Σ_n −log π_θ(y_n|x), y_n ~ π_θ(·|x) at T = 1 (no top-k/top-p). Each
  prompt's estimate uses its own N samples only (the authors' batched code averaged a window that
  crossed prompts; see tests/test_acquisition.py).
- certainty: |r̂_A − r̂_B| with r̂ = β(log π_θ − log π_ref); the paper keeps the largest.
- uncertainty: −|r̂_A − r̂_B| (the smallest margin first).
- hybrid: entropy filter on prompts (F_e), then certainty over the generated pairs (F_c).
- random: a seeded uniform draw.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from apl_tui.records import ScoreRow

PAIR_FUNCTIONS = ("certainty", "uncertainty", "hybrid")
"""Functions that need r̂, so fall back to random while the policy still equals the reference."""

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
        if name == "random":
            rows.append(ScoreRow(cid, adapter_version, name, random_score(cid, adapter_version, seed), entropy=ent))
            continue
        if name == "entropy":
            if ent is None:
                raise ValueError("entropy scoring needs an entropy per candidate")
            rows.append(ScoreRow(cid, adapter_version, name, float(ent), entropy=ent))
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
