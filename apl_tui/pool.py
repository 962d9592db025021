"""The candidate pool: refill it with generated pairs, cache reference log-probs, rescore it.

Each function does its work in chunks; every chunk is committed on its own, so a cancelled or
crashed refill or rescore still leaves usable, consistent rows behind.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

from apl_tui import acquisition as acq
from apl_tui.config import AplConfig
from apl_tui.errors import check_cancel
from apl_tui.events import PoolGenerated, PoolScored, ProgressSink, StepProgressed
from apl_tui.records import NewCandidate
from apl_tui.store import Store

logger = logging.getLogger(__name__)



def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def pair_logps(policy: Any, cands: Sequence[dict], *, adapter: bool, batch_size: int) -> list[tuple[float, float]]:
    """log π(a|x), log π(b|x) for each candidate in one batched pass over [a; b]."""
    prompts = [c["prompt"] for c in cands] * 2
    texts = [c["completion_a"] for c in cands] + [c["completion_b"] for c in cands]
    eos = [bool(c["eos_a"]) for c in cands] + [bool(c["eos_b"]) for c in cands]
    lp = policy.sequence_logps(prompts, texts, eos, adapter=adapter, batch_size=batch_size).tolist()
    n = len(cands)
    return [(float(lp[i]), float(lp[n + i])) for i in range(n)]


def _chunk_bounds(n: int, batch: int, factor: int, first: int | None) -> list[tuple[int, int]]:
    """[start, end) of each chunk of `n` prompts: `batch` pairs (× `factor` prompts) each, or,
    from a small `first`, doubling up to `batch` (a person waiting gets pairs sooner).

    >>> _chunk_bounds(10, 4, 1, None)
    [(0, 4), (4, 8), (8, 10)]
    >>> _chunk_bounds(20, 8, 1, 2)
    [(0, 2), (2, 6), (6, 14), (14, 20)]
    """
    size = batch if first is None else max(1, min(first, batch))
    bounds, start = [], 0
    while start < n:
        bounds.append((start, min(n, start + size * factor)))
        start += size * factor
        size = min(batch, size * 2)
    return bounds


def refill(store: Store, policy: Any, cfg: AplConfig, *, target: int, seed: int,
           sink: ProgressSink, cancel: threading.Event | None, first_chunk: int | None = None) -> int:
    """Generate pairs until the pool holds `target` unlabeled pairs (or prompts run out).

    entropy and hybrid filter prompts first: F_e prompts are scored by predictive entropy for each
    pair made, and only the most uncertain get a pair (the paper's stage 1). The work goes in
    chunks of `generation.batch_size` pairs, each committed at once, so the first pairs are ready
    to label long before the pool is full. `first_chunk` (pairs) starts with a smaller chunk and
    doubles up to a full batch, for a person waiting in front of an empty pool.
    """
    need = target - store.pool_size()
    if need <= 0:
        return 0
    a, gen = cfg.acquisition, cfg.generation
    filtered = a.name in ("entropy", "hybrid")
    factor = a.entropy_factor if filtered else 1
    picked = store.sample_prompts(need * factor, seed=seed, exclude_used=not a.allow_relabel_prompts)
    if not picked:
        return 0  # every prompt already has a pair: nothing to generate from
    added = 0
    # Say at once what is happening: the first chunk can take minutes on a CPU.
    sink(StepProgressed("generating", 0, min(need, len(picked))))
    for i, (start, end) in enumerate(_chunk_bounds(len(picked), gen.batch_size, factor, first_chunk)):
        check_cancel(cancel)
        part = picked[start:end]
        # Each chunk keeps its share; when prompts are scarce the filter relaxes rather than run dry.
        keep = min(need - added, math.ceil(len(part) * need / len(picked)))
        added += _refill_chunk(store, policy, cfg, part, keep=keep, seed=seed + 7919 * i)
        sink(StepProgressed("generating", added, min(need, len(picked))))
        if added >= need:
            break
    sink(PoolGenerated(added=added, adapter_version=policy.adapter_version))
    return added


def _refill_chunk(store: Store, policy: Any, cfg: AplConfig, picked: list[tuple[int, str]], *, keep: int,
                  seed: int) -> int:
    """Entropy-filter a chunk of prompts (if the function asks for it), make pairs, commit them."""
    a, gen = cfg.acquisition, cfg.generation
    entropies: list[float | None] = [None] * len(picked)
    if a.name in ("entropy", "hybrid"):
        sampler = acq.policy_sampler(policy, max_new_tokens=a.entropy_max_new_tokens, batch_size=gen.batch_size)
        ent = acq.entropy_scores(sampler, [t for _, t in picked], n=a.entropy_samples, seed=seed,
                                 per_token=a.entropy_per_token)
        order = acq.top_k(ent, keep)
        picked = [picked[i] for i in order]
        entropies = [ent[i] for i in order]
    picked, entropies = picked[:keep], entropies[:keep]
    pairs = policy.generate_pairs([t for _, t in picked], gen, seed=seed + 1)
    rows, texts = [], []
    for (pid, text), ent_i, pair in zip(picked, entropies, pairs):
        if pair is None:
            continue
        sa, sb = pair
        rows.append(NewCandidate(
            prompt_id=pid, completion_a=sa.text, completion_b=sb.text, adapter_version=policy.adapter_version,
            temperature=gen.temperature, top_p=gen.top_p, max_new_tokens=gen.max_new_tokens,
            tokens_a=len(sa.token_ids), tokens_b=len(sb.token_ids), eos_a=sa.eos, eos_b=sb.eos,
            entropy=ent_i, origin=a.name))
        texts.append(text)
    if not rows:
        return 0
    # Reference log-probs are computed once, here, and cached for every later round.
    cands = [{"prompt": t, "completion_a": r.completion_a, "completion_b": r.completion_b, "eos_a": r.eos_a,
              "eos_b": r.eos_b} for t, r in zip(texts, rows)]
    store.add_candidates(rows, pair_logps(policy, cands, adapter=False, batch_size=gen.batch_size))
    return len(rows)


def fill_reference(store: Store, policy: Any, cfg: AplConfig, *, sink: ProgressSink,
                   cancel: threading.Event | None) -> int:
    """Compute and cache reference log-probs for candidates that lack them (e.g. imported pairs)."""
    missing = store.candidates(missing_reference=True)
    done = 0
    if missing:
        sink(StepProgressed("reference", 0, len(missing)))
    for chunk in _chunks(missing, cfg.acquisition.chunk_size):
        check_cancel(cancel)
        refs = pair_logps(policy, chunk, adapter=False, batch_size=cfg.generation.batch_size)
        store.set_reference_logps([(c["id"], ra, rb) for c, (ra, rb) in zip(chunk, refs)])
        done += len(chunk)
        sink(StepProgressed("reference", done, len(missing)))
    return done


def _cache_missing_reference(store: Store, policy: Any, cands: list[dict], *, batch_size: int) -> None:
    """Imported pairs arrive without reference log-probs: compute them once, cache them, fill `cands`."""
    missing = [c for c in cands if c["ref_logp_a"] is None]
    if not missing:
        return
    refs = pair_logps(policy, missing, adapter=False, batch_size=batch_size)
    store.set_reference_logps([(c["id"], ra, rb) for c, (ra, rb) in zip(missing, refs)])
    for c, (ra, rb) in zip(missing, refs):
        c["ref_logp_a"], c["ref_logp_b"] = ra, rb


def rescore(store: Store, policy: Any, cfg: AplConfig, *, seed: int, sink: ProgressSink,
            cancel: threading.Event | None, limit: int | None = None) -> int:
    """Score unlabeled candidates not yet scored by the current adapter, chunk by chunk."""
    a = cfg.acquisition
    version = policy.adapter_version
    ids = store.unscored_ids(version, a.name, limit)
    done = 0
    if ids:
        sink(StepProgressed("scoring", 0, len(ids)))
    for chunk_ids in _chunks(ids, a.chunk_size):
        check_cancel(cancel)
        cands = store.candidates(chunk_ids)
        _cache_missing_reference(store, policy, cands, batch_size=cfg.generation.batch_size)
        policy_logps = None
        entropies = None
        warm = version > 0
        if a.name in acq.PAIR_FUNCTIONS and warm:
            policy_logps = pair_logps(policy, cands, adapter=True, batch_size=cfg.generation.batch_size)
        if a.name == "entropy":
            stale = [i for i, c in enumerate(cands) if c["entropy"] is None or c["adapter_version"] != version]
            entropies = [c["entropy"] for c in cands]
            if stale:
                sampler = acq.policy_sampler(policy, max_new_tokens=a.entropy_max_new_tokens,
                                             batch_size=cfg.generation.batch_size)
                fresh = acq.entropy_scores(sampler, [cands[i]["prompt"] for i in stale], n=a.entropy_samples,
                                           seed=seed, per_token=a.entropy_per_token)
                for i, e in zip(stale, fresh):
                    entropies[i] = e
        rows = acq.score_rows(a.name, cands, adapter_version=version, beta=cfg.train.beta, seed=seed,
                              policy_logps=policy_logps, entropies=entropies, warm=warm)
        store.add_scores(rows)
        done += len(rows)
        sink(StepProgressed("scoring", done, len(ids)))
    if done:
        sink(PoolScored(scored=done, adapter_version=version, acquisition=a.name))
    return done
