"""The candidate pool: refill it with generated pairs, cache reference log-probs, rescore it.

Each function does its work in chunks; every chunk is committed on its own, so a cancelled or
crashed refill or rescore still leaves usable, consistent rows behind.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from apl_tui import acquisition as acq
from apl_tui.config import AplConfig
from apl_tui.errors import check_cancel
from apl_tui.events import PoolGenerated, PoolScored, ProgressSink, StepProgressed
from apl_tui.head_scoring import score_pool, wrap
from apl_tui.records import NewCandidate
from apl_tui.store import Store

logger = logging.getLogger(__name__)



def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def completion_logps(policy: Any, cands: Sequence[dict], *, adapter: bool, batch_size: int,
                     features: bool = False) -> tuple[list[tuple[float, float]], list[tuple[Any, Any]] | None]:
    """log π(a|x), log π(b|x) per candidate (and φ_a, φ_b with features), each completion ONCE.

    The pairs within a prompt share completions (N completions make N(N−1)/2 pairs): the batched
    pass runs over the distinct (prompt, completion, eos) triples of this call only, so a prompt's
    pairs cost N sequences, not N(N−1). Within one call is enough: a prompt's pairs are inserted
    together and read back in id order, so only a chunk boundary can split them.
    """
    keys: dict[tuple[str, str, bool], int] = {}
    for c in cands:
        for side in ("a", "b"):
            keys.setdefault((c["prompt"], c[f"completion_{side}"], bool(c[f"eos_{side}"])), len(keys))
    uniq = list(keys)
    out = policy.sequence_logps([k[0] for k in uniq], [k[1] for k in uniq], [k[2] for k in uniq],
                                adapter=adapter, batch_size=batch_size, features=features)
    lp, phi = (out[0].tolist(), np.asarray(out[1])) if features else (out.tolist(), None)
    idx = [(keys[(c["prompt"], c["completion_a"], bool(c["eos_a"]))],
            keys[(c["prompt"], c["completion_b"], bool(c["eos_b"]))]) for c in cands]
    logps = [(float(lp[i]), float(lp[j])) for i, j in idx]
    return logps, ([(phi[i], phi[j]) for i, j in idx] if phi is not None else None)


def pair_logps(policy: Any, cands: Sequence[dict], *, adapter: bool, batch_size: int) -> list[tuple[float, float]]:
    """log π(a|x), log π(b|x) for each candidate (each distinct completion scored once)."""
    return completion_logps(policy, cands, adapter=adapter, batch_size=batch_size)[0]


def pairs_per_prompt(completions: int) -> int:
    """Candidates one prompt contributes: every pair of its N completions."""
    return completions * (completions - 1) // 2


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


def ready_prompts(store: Store, cfg: AplConfig) -> int:
    """Labels the pool can serve: its pairs over the pairs per prompt (= its pairs for N = 2)."""
    return store.pool_size() // pairs_per_prompt(cfg.acquisition.completions)


def refill(store: Store, policy: Any, cfg: AplConfig, *, target: int, seed: int,
           sink: ProgressSink, cancel: threading.Event | None, first_chunk: int | None = None) -> int:
    """Generate pairs until the pool can serve `target` labels (or prompts run out); returns pairs added.

    With N completions per prompt a prompt brings N(N−1)/2 pairs but serves one label (its other
    pairs leave the queue once one is labeled), so the target counts prompts, not pairs.

    entropy and hybrid filter prompts first: F_e prompts are scored by predictive entropy for each
    pair made, and only the most uncertain get a pair (the paper's stage 1). The work goes in
    chunks of `generation.batch_size` pairs, each committed at once, so the first pairs are ready
    to label long before the pool is full. `first_chunk` (prompts) starts with a smaller chunk and
    doubles up to a full batch, for a person waiting in front of an empty pool.
    """
    a, gen = cfg.acquisition, cfg.generation
    need = target - ready_prompts(store, cfg)  # prompts: one label each (a label retires its prompt's pairs)
    if need <= 0:
        return 0
    filtered = a.name in ("entropy", "hybrid")
    factor = a.entropy_factor if filtered else 1
    picked = store.sample_prompts(need * factor, seed=seed, exclude_used=not a.allow_relabel_prompts)
    if not picked:
        return 0  # every prompt already has a pair: nothing to generate from
    added = pairs = 0
    # Say at once what is happening: the first chunk can take minutes on a CPU.
    sink(StepProgressed("generating", 0, min(need, len(picked))))
    for i, (start, end) in enumerate(_chunk_bounds(len(picked), gen.batch_size, factor, first_chunk)):
        check_cancel(cancel)
        part = picked[start:end]
        # Each chunk keeps its share; when prompts are scarce the filter relaxes rather than run dry.
        keep = min(need - added, math.ceil(len(part) * need / len(picked)))
        made_prompts, made_pairs = _refill_chunk(store, policy, cfg, part, keep=keep, seed=seed + 7919 * i)
        added += made_prompts
        pairs += made_pairs
        sink(StepProgressed("generating", added, min(need, len(picked))))
        if added >= need:
            break
    sink(PoolGenerated(added=pairs, adapter_version=policy.adapter_version))
    return pairs


def _groups(policy: Any, texts: list[str], cfg: AplConfig, seed: int) -> list[list[Any] | None]:
    """N distinct completions per prompt (None where fewer than two differ); N = 2 as `generate_pairs`."""
    gen, n = cfg.generation, cfg.acquisition.completions
    if n == 2:
        return [list(p) if p is not None else None for p in policy.generate_pairs(texts, gen, seed=seed)]
    out: list[list[Any] | None] = []
    for group in policy.generate(texts, n=n, temperature=gen.temperature, top_p=gen.top_p,
                                 min_new_tokens=gen.min_new_tokens, max_new_tokens=gen.max_new_tokens, seed=seed,
                                 batch_size=gen.batch_size):
        seen: dict[str, Any] = {}
        for sample in group:  # twins teach nothing: keep the first of identical texts
            seen.setdefault(sample.text.strip(), sample)
        out.append(list(seen.values()) if len(seen) >= 2 else None)
    return out


def _refill_chunk(store: Store, policy: Any, cfg: AplConfig, picked: list[tuple[int, str]], *, keep: int,
                  seed: int) -> tuple[int, int]:
    """Entropy-filter a chunk of prompts (if the function asks for it), make pairs, commit them.

    Returns (prompts that got pairs, pairs added).
    """
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
    groups = _groups(policy, [t for _, t in picked], cfg, seed + 1)
    rows, texts = [], []
    made = 0
    for (pid, text), ent_i, group in zip(picked, entropies, groups):
        if group is None:
            continue
        made += 1
        for sa, sb in itertools.combinations(group, 2):
            rows.append(NewCandidate(
                prompt_id=pid, completion_a=sa.text, completion_b=sb.text, adapter_version=policy.adapter_version,
                temperature=gen.temperature, top_p=gen.top_p, max_new_tokens=gen.max_new_tokens,
                tokens_a=len(sa.token_ids), tokens_b=len(sb.token_ids), eos_a=sa.eos, eos_b=sb.eos,
                entropy=ent_i, origin=a.name))
            texts.append(text)
    if not rows:
        return 0, 0
    # Reference log-probs and φ are computed once per completion, here, and cached for every later round.
    cands = [{"prompt": t, "completion_a": r.completion_a, "completion_b": r.completion_b, "eos_a": r.eos_a,
              "eos_b": r.eos_b} for t, r in zip(texts, rows)]
    refs, phis = completion_logps(policy, cands, adapter=False, batch_size=gen.batch_size, features=True)
    store.add_candidates(rows, refs, phis)
    return made, len(rows)


def fill_reference(store: Store, policy: Any, cfg: AplConfig, *, sink: ProgressSink,
                   cancel: threading.Event | None) -> int:
    """Compute and cache reference log-probs for candidates that lack them (e.g. imported pairs)."""
    missing = store.candidates(missing_reference=True)
    done = 0
    if missing:
        sink(StepProgressed("reference", 0, len(missing)))
    for chunk in _chunks(missing, cfg.acquisition.chunk_size):
        check_cancel(cancel)
        refs, phis = completion_logps(policy, chunk, adapter=False, batch_size=cfg.generation.batch_size,
                                      features=True)
        store.set_reference_logps([(c["id"], ra, rb) for c, (ra, rb) in zip(chunk, refs)])
        store.set_features([(c["id"], fa, fb) for c, (fa, fb) in zip(chunk, phis or [])])
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


def fill_features(store: Store, policy: Any, cfg: AplConfig, *, sink: ProgressSink,
                  cancel: threading.Event | None) -> int:
    """Compute φ for candidates the head may read but that lack it (pairs made before migration 8)."""
    missing = store.missing_features()
    done = 0
    for chunk in _chunks(missing, cfg.acquisition.chunk_size):
        check_cancel(cancel)
        _, phis = completion_logps(policy, chunk, adapter=False, batch_size=cfg.generation.batch_size, features=True)
        store.set_features([(c["id"], fa, fb) for c, (fa, fb) in zip(chunk, phis or [])])
        done += len(chunk)
        sink(StepProgressed("features", done, len(missing)))
    return done


def rescore(store: Store, policy: Any, cfg: AplConfig, *, seed: int, sink: ProgressSink,
            cancel: threading.Event | None, limit: int | None = None) -> int:
    """Score unlabeled candidates not yet scored by the current adapter, chunk by chunk."""
    a = cfg.acquisition
    version = policy.adapter_version
    if a.name in acq.HEAD_FUNCTIONS:
        return rescore_head(store, policy, cfg, seed=seed, sink=sink, cancel=cancel)
    ids = store.unscored_ids(version, a.name, limit)
    done = 0
    if ids:
        sink(StepProgressed("scoring", 0, len(ids)))
    for n_chunk, chunk_ids in enumerate(_chunks(ids, a.chunk_size)):
        check_cancel(cancel)
        cands = store.candidates(chunk_ids)
        _cache_missing_reference(store, policy, cands, batch_size=cfg.generation.batch_size)
        policy_logps = None
        entropies = None
        warm = version > 0
        if warm and (a.name in acq.PAIR_FUNCTIONS or (a.predict and a.name in acq.PREDICTING_FUNCTIONS)):
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
        # The batch wrapper works per chunk here (r̂ functions score chunk by chunk).
        keys = wrap([r.score for r in rows], a, batch=cfg.loop.round_size, seed=seed + n_chunk)
        rows = [dataclasses.replace(r, score=k) for r, k in zip(rows, keys)]
        store.add_scores(rows)
        done += len(rows)
        sink(StepProgressed("scoring", done, len(ids)))
    if done:
        sink(PoolScored(scored=done, adapter_version=version, acquisition=a.name))
    return done


def rescore_head(store: Store, policy: Any, cfg: AplConfig, *, seed: int, sink: ProgressSink,
                 cancel: threading.Event | None) -> int:
    """Refit the preference head on every a/b label and score the whole queue with it.

    Missing φ (pairs made before features were stored) is computed first, with the reference.
    The scores are written in chunks, all stamped with the current adapter version (a refit
    rescores under the same version; the queue keeps the newest).
    """
    a = cfg.acquisition
    if store.missing_features():
        fill_features(store, policy, cfg, sink=sink, cancel=cancel)
    labels = store.head_labels()
    rows = score_pool(a.name, store.head_pool(), labels, a, adapter_version=policy.adapter_version,
                      batch=cfg.loop.round_size, seed=seed + len(labels))
    done = 0
    for chunk in _chunks(rows, a.chunk_size):
        check_cancel(cancel)
        store.add_scores(list(chunk))
        done += len(chunk)
        sink(StepProgressed("scoring", done, len(rows)))
    if done:
        sink(PoolScored(scored=done, adapter_version=policy.adapter_version, acquisition=a.name))
    logger.info("head on %d labels scored %d pairs", len(labels), done)
    return done
