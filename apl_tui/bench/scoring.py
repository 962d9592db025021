"""Scoring throughput: `Policy.sequence_logps` over a pool against three other scorers.

Ours scores the whole pool with each prompt's body pass run once and its key/value cache shared
by that prompt's completions (`apl_tui.logps`; the pass's last output predicts every completion's
first token), batched by length with the least padding, computes logits only at completion
positions (the head in vocabulary blocks, each block's log-sum-exp taken while it is in the
cache), and reads the reference log-probs from the store's cache (computed once, when the pair
was generated). Its contenders:

- unshared: ours with the prompt sharing switched off (`Policy.shared_prefix = False`): every
  (prompt, completion) row left-padded on its own, as before issue 17. The sharing alone.
- naive (paper-style): one forward pass per pair over [prompt + a; prompt + b], right-padded,
  full-vocabulary log-softmax at every position, and the reference recomputed every time (a
  second pass with the adapter disabled). Most of our lead over it is the cached reference.
- batched: what a careful engineer writes without our tricks: the same length-sorted batches
  of `batch_size` sequences, full-vocabulary logits at every position, and the reference cached
  too (so it does the policy pass only, like ours).

A PeakProbe (machine.py) runs as one more contender in the same rotation, so "fraction of peak"
divides by the peak measured alongside, in wall time and in CPU time. A second rotation scores
N = 4 completions per prompt (`acquisition.completions = 4`: 6 candidate pairs per prompt), ours
against unshared and naive, where a prompt is shared by four completions instead of two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from apl_tui.bench.machine import PeakProbe
from apl_tui.bench.timing import Stat, interleave, synchronizer
from apl_tui.bench.workload import BenchContext, forward_flops
from apl_tui.pool import pair_logps

if TYPE_CHECKING:
    import torch

    from apl_tui.policy import Policy


def naive_sequence_logps(policy: Policy, prompt: Sequence[int], completions: Sequence[Sequence[int]]) -> torch.Tensor:
    """Σ log p(completion | prompt) for completions of ONE prompt, the straightforward way.

    Right-padded [prompt + c] rows, logits for the whole vocabulary at every position, log-softmax
    over all of them, then the completion tokens picked out. Shape (len(completions),).
    """
    import torch

    rows = [list(prompt) + list(c) for c in completions]
    width = max(len(r) for r in rows)
    pad = policy.tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    ids, mask = ids.to(policy.device), mask.to(policy.device)
    logits = policy.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()  # (b, L, V)
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (b, L-1)
    # Token t+1 is a completion token when len(prompt) ≤ t+1 < len(row).
    pos = torch.arange(1, width, device=ids.device)  # (L-1,)
    ends = torch.tensor([len(r) for r in rows], device=ids.device).unsqueeze(1)  # (b, 1)
    keep = (pos >= len(prompt)) & (pos < ends)  # (b, L-1)
    return torch.where(keep, logps, torch.zeros_like(logps)).sum(-1).cpu()


def naive_pool_scores(policy: Policy, prompts: Sequence[Sequence[int]], a: Sequence[Sequence[int]],
                      b: Sequence[Sequence[int]]) -> tuple[list[float], list[float]]:
    """Policy and reference log-probs of [a…; b…], each pair scored on its own, reference recomputed."""
    import torch

    pol_a, pol_b, ref_a, ref_b = [], [], [], []
    with torch.no_grad():
        for p, ca, cb in zip(prompts, a, b):
            pa, pb = naive_sequence_logps(policy, p, [ca, cb]).tolist()
            with policy.model.disable_adapter():
                ra, rb = naive_sequence_logps(policy, p, [ca, cb]).tolist()
            pol_a.append(pa)
            pol_b.append(pb)
            ref_a.append(ra)
            ref_b.append(rb)
    return pol_a + pol_b, ref_a + ref_b


def batched_full_vocab_logps(policy: Policy, prompts: Sequence[Sequence[int]],
                             completions: Sequence[Sequence[int]], *, batch_size: int) -> list[float]:
    """Σ log p(completion | prompt) per row: length-sorted right-padded batches, full logits everywhere.

    The policy pass only (the reference is cached, as ours). Returns the caller's order.
    """
    import torch

    rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out = [0.0] * len(rows)
    pad = policy.tokenizer.pad_token_id
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(rows[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, :len(rows[i])] = torch.tensor(rows[i])
                mask[j, :len(rows[i])] = 1
            ids, mask = ids.to(policy.device), mask.to(policy.device)
            logits = policy.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()  # (b, L, V)
            logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            pos = torch.arange(1, width, device=ids.device)  # (L-1,) index of the predicted token
            starts = torch.tensor([len(prompts[i]) for i in idx], device=ids.device).unsqueeze(1)  # (b, 1)
            ends = torch.tensor([len(rows[i]) for i in idx], device=ids.device).unsqueeze(1)  # (b, 1)
            keep = (pos >= starts) & (pos < ends)  # (b, L-1)
            sums = torch.where(keep, logps, torch.zeros_like(logps)).sum(-1).cpu().tolist()
            for i, v in zip(idx, sums):
                out[i] = v
    return out


def _time_unshared(policy: Policy, fn: Any) -> Any:
    """`fn` run with the prompt sharing switched off, then back as it was."""
    def go() -> None:
        before, policy.shared_prefix = policy.shared_prefix, False
        try:
            fn()
        finally:
            policy.shared_prefix = before
    return go


def _contenders(policy: Policy, cands: list[dict[str, Any]], prompt_ids: Any, a_ids: Any, b_ids: Any,
                batch_size: int, results: dict[str, Any]) -> dict[str, Any]:
    """The three timed ways to score the same pairs; each stores its scores in `results`."""
    def ours() -> None:
        results["ours"] = pair_logps(policy, cands, adapter=True, batch_size=batch_size)

    def unshared() -> None:
        results["unshared"] = pair_logps(policy, cands, adapter=True, batch_size=batch_size)

    def naive() -> None:
        results["naive"] = naive_pool_scores(policy, prompt_ids, a_ids, b_ids)

    return {"ours": ours, "unshared": _time_unshared(policy, unshared), "naive": naive}


def _flat(scores: Sequence[tuple[float, float]]) -> list[float]:
    return [a for a, _ in scores] + [b for _, b in scores]


def _max_diff(xs: Sequence[float], ys: Sequence[float]) -> float:
    return max(abs(x - y) for x, y in zip(xs, ys))


def run(ctx: BenchContext) -> dict[str, Any]:
    """Sequences/s of the scorers, our ratios to each, their agreement, our share of the peak; then groups."""
    policy, pairs, sizes = ctx.policy, ctx.pairs, ctx.sizes
    cands = [{"prompt": p.prompt, "completion_a": p.chosen, "completion_b": p.rejected, "eos_a": False,
              "eos_b": False} for p in pairs]
    prompt_ids = policy.encode_prompts([p.prompt for p in pairs])
    a_ids = policy.encode_completions([p.chosen for p in pairs])
    b_ids = policy.encode_completions([p.rejected for p in pairs])
    n_seq = 2 * len(pairs)
    completion_tokens = sum(len(c) for c in a_ids + b_ids)
    tokens = 2 * sum(len(p) for p in prompt_ids) + completion_tokens
    probe = PeakProbe(ctx.device, next(policy.base.parameters()).dtype)

    results: dict[str, Any] = {}

    contenders = _contenders(policy, cands, prompt_ids, a_ids, b_ids, sizes.batch_size, results)

    def batched() -> None:
        results["batched"] = batched_full_vocab_logps(policy, prompt_ids * 2, a_ids + b_ids,
                                                      batch_size=sizes.batch_size)

    ctx.log(f"scoring: {len(pairs)} pairs, ours vs unshared vs naive vs batched full-vocabulary (+ matmul peak), "
            f"{sizes.repeats} repeats")
    cpu: dict[str, list[float]] = {}
    times = interleave({**contenders, "batched": batched, "peak": probe}, warmup=sizes.warmup,
                       repeats=sizes.repeats, sync=synchronizer(ctx.device), cpu=cpu)
    t = {name: Stat.of(v) for name, v in times.items()}
    c = {name: Stat.of(v) for name, v in cpu.items()}
    ours_flat = _flat(results["ours"])
    naive_pol, naive_ref = results["naive"]
    ref_flat = _flat(pair_logps(policy, cands, adapter=False, batch_size=sizes.batch_size))
    # Useful work: each prompt through the body once (its pass is shared by both sides), and its
    # last output predicts both sides' first tokens (one head row per prompt); then every
    # completion token but the last through the body and the head.
    rest = completion_tokens - n_seq
    flops = forward_flops(ctx.size(), sum(len(p) for p in prompt_ids) + rest, len(prompt_ids) + rest)
    return {
        "scoring_pairs": len(pairs),
        "scoring_tokens": tokens,
        "scoring_seqs_per_s": n_seq / t["ours"].median,
        "scoring_tokens_per_s": tokens / t["ours"].median,
        "scoring_unshared_seqs_per_s": n_seq / t["unshared"].median,
        "scoring_naive_seqs_per_s": n_seq / t["naive"].median,
        "scoring_naive_tokens_per_s": tokens / t["naive"].median,
        "scoring_batched_seqs_per_s": n_seq / t["batched"].median,
        "scoring_speedup_vs_naive": t["naive"].median / t["ours"].median,
        "scoring_speedup_vs_unshared": t["unshared"].median / t["ours"].median,
        "scoring_unshared_speedup_vs_naive": t["naive"].median / t["unshared"].median,
        "scoring_speedup_vs_batched": t["batched"].median / t["ours"].median,
        "scoring_max_abs_diff_policy": _max_diff(ours_flat, naive_pol),
        "scoring_max_abs_diff_unshared": _max_diff(ours_flat, _flat(results["unshared"])),
        "scoring_max_abs_diff_batched": _max_diff(ours_flat, results["batched"]),
        "scoring_max_abs_diff_reference": _max_diff(ref_flat, naive_ref),
        "scoring_policy_ref_gap": _max_diff(ours_flat, ref_flat),
        "scoring_flops": flops,
        "scoring_gflops_per_s": flops / t["ours"].median / 1e9,
        "scoring_cpu_gflops": flops / c["ours"].median / 1e9,
        "scoring_peak_gflops": probe.flops / t["peak"].median / 1e9,
        "scoring_peak_cpu_gflops": probe.flops / c["peak"].median / 1e9,
        "scoring_time_s": t["ours"].to_dict(),
        "scoring_unshared_time_s": t["unshared"].to_dict(),
        "scoring_naive_time_s": t["naive"].to_dict(),
        "scoring_batched_time_s": t["batched"].to_dict(),
        "scoring_peak_time_s": t["peak"].to_dict(),
        **_groups(ctx),
    }


GROUP_SIZE = 4
"""Completions per prompt in the group rotation (`acquisition.completions = 4`)."""


def _groups(ctx: BenchContext) -> dict[str, Any]:
    """N = 4 completions per prompt, every pair of them a candidate: ours vs unshared vs naive.

    Group g is the prompt of pair 2g with the completions of pairs 2g and 2g+1; a quarter of the
    pool's pairs make the groups (so naive, which scores the 6 pairs of each prompt one by one,
    stays affordable).
    """
    import itertools

    policy, pairs, sizes = ctx.policy, ctx.pairs, ctx.sizes
    n_groups = max(1, len(pairs) // 4)
    groups = [(pairs[2 * g].prompt, [pairs[2 * g].chosen, pairs[2 * g].rejected,
                                     pairs[(2 * g + 1) % len(pairs)].chosen, pairs[(2 * g + 1) % len(pairs)].rejected])
              for g in range(n_groups)]
    cands = [{"prompt": prompt, "completion_a": a, "completion_b": b, "eos_a": False, "eos_b": False}
             for prompt, texts in groups for a, b in itertools.combinations(texts, 2)]
    prompt_ids = policy.encode_prompts([c["prompt"] for c in cands])
    a_ids = policy.encode_completions([c["completion_a"] for c in cands])
    b_ids = policy.encode_completions([c["completion_b"] for c in cands])
    results: dict[str, Any] = {}

    contenders = _contenders(policy, cands, prompt_ids, a_ids, b_ids, sizes.batch_size, results)

    ctx.log(f"scoring groups: {n_groups} prompts × {GROUP_SIZE} completions ({len(cands)} pairs), "
            "ours vs unshared vs naive")
    times = interleave(contenders,
                       warmup=sizes.warmup, repeats=sizes.repeats, sync=synchronizer(ctx.device))
    t = {name: Stat.of(v) for name, v in times.items()}
    ours_flat = _flat(results["ours"])
    return {
        "scoring_group_prompts": n_groups,
        "scoring_group_pairs": len(cands),
        "scoring_group_speedup_vs_naive": t["naive"].median / t["ours"].median,
        "scoring_group_speedup_vs_unshared": t["unshared"].median / t["ours"].median,
        "scoring_group_max_abs_diff_policy": _max_diff(ours_flat, results["naive"][0]),
        "scoring_group_max_abs_diff_unshared": _max_diff(ours_flat, _flat(results["unshared"])),
        "scoring_group_time_s": {k: v.to_dict() for k, v in t.items()},
    }
