"""Scoring throughput: `Policy.sequence_logps` over a pool against two other scorers.

Ours scores the whole pool in length-sorted, left-padded batches, computes logits only at
completion positions (one 2-D head matmul over them), and reads the reference log-probs from
the store's cache (computed once, when the pair was generated). Its contenders:

- naive (paper-style): one forward pass per pair over [prompt + a; prompt + b], right-padded,
  full-vocabulary log-softmax at every position, and the reference recomputed every time (a
  second pass with the adapter disabled). Most of our lead over it is the cached reference.
- batched: what a careful engineer writes without our tricks: the same length-sorted batches
  of `batch_size` sequences, full-vocabulary logits at every position, and the reference cached
  too (so it does the policy pass only, like ours). Our lead over it is the logits alone.

A PeakProbe (machine.py) runs as a fourth contender in the same rotation, so "fraction of peak"
divides by the peak measured alongside, in wall time and in CPU time.
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


def run(ctx: BenchContext) -> dict[str, Any]:
    """Sequences/s of the three scorers, our ratios to each, their agreement, our share of the peak."""
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

    def ours() -> None:
        results["ours"] = pair_logps(policy, cands, adapter=True, batch_size=sizes.batch_size)

    def naive() -> None:
        results["naive"] = naive_pool_scores(policy, prompt_ids, a_ids, b_ids)

    def batched() -> None:
        results["batched"] = batched_full_vocab_logps(policy, prompt_ids * 2, a_ids + b_ids,
                                                      batch_size=sizes.batch_size)

    ctx.log(f"scoring: {len(pairs)} pairs, ours vs naive vs batched full-vocabulary (+ matmul peak), "
            f"{sizes.repeats} repeats")
    cpu: dict[str, list[float]] = {}
    times = interleave({"ours": ours, "naive": naive, "batched": batched, "peak": probe}, warmup=sizes.warmup,
                       repeats=sizes.repeats, sync=synchronizer(ctx.device), cpu=cpu)
    t = {name: Stat.of(v) for name, v in times.items()}
    c = {name: Stat.of(v) for name, v in cpu.items()}
    ours_flat = [a for a, _ in results["ours"]] + [b for _, b in results["ours"]]
    naive_pol, naive_ref = results["naive"]
    ref = pair_logps(policy, cands, adapter=False, batch_size=sizes.batch_size)
    ref_flat = [a for a, _ in ref] + [b for _, b in ref]
    flops = forward_flops(ctx.size(), tokens, completion_tokens)
    return {
        "scoring_pairs": len(pairs),
        "scoring_tokens": tokens,
        "scoring_seqs_per_s": n_seq / t["ours"].median,
        "scoring_tokens_per_s": tokens / t["ours"].median,
        "scoring_naive_seqs_per_s": n_seq / t["naive"].median,
        "scoring_naive_tokens_per_s": tokens / t["naive"].median,
        "scoring_batched_seqs_per_s": n_seq / t["batched"].median,
        "scoring_speedup_vs_naive": t["naive"].median / t["ours"].median,
        "scoring_speedup_vs_batched": t["batched"].median / t["ours"].median,
        "scoring_max_abs_diff_policy": max(abs(x - y) for x, y in zip(ours_flat, naive_pol)),
        "scoring_max_abs_diff_batched": max(abs(x - y) for x, y in zip(ours_flat, results["batched"])),
        "scoring_max_abs_diff_reference": max(abs(x - y) for x, y in zip(ref_flat, naive_ref)),
        "scoring_policy_ref_gap": max(abs(x - y) for x, y in zip(ours_flat, ref_flat)),
        "scoring_flops": flops,
        "scoring_gflops_per_s": flops / t["ours"].median / 1e9,
        "scoring_cpu_gflops": flops / c["ours"].median / 1e9,
        "scoring_peak_gflops": probe.flops / t["peak"].median / 1e9,
        "scoring_peak_cpu_gflops": probe.flops / c["peak"].median / 1e9,
        "scoring_time_s": t["ours"].to_dict(),
        "scoring_naive_time_s": t["naive"].to_dict(),
        "scoring_batched_time_s": t["batched"].to_dict(),
        "scoring_peak_time_s": t["peak"].to_dict(),
    }
