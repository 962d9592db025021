"""Entropy scoring: log-probs taken from generation itself against generate-then-rescore.

Ours is `acquisition.entropy_scores` over `policy_sampler`: N samples per prompt at T = 1 whose
log-probs come from the raw logits generation already computed. The naive estimator generates
the same samples (same seed, same settings, so the same tokens) without keeping logits, then runs
a second forward pass over prompt + sample to score them (our efficient `sequence_logps_ids`,
so the naive pays for the extra pass only). Both must give the same entropies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from apl_tui import acquisition as acq
from apl_tui.bench.timing import Stat, interleave, synchronizer
from apl_tui.bench.workload import BenchContext

if TYPE_CHECKING:
    from apl_tui.policy import Policy


def naive_entropies(policy: Policy, prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int,
                    batch_size: int) -> list[float]:
    """Generate n samples per prompt (no logits kept), then score them in a second pass."""
    import torch

    prompt_ids = policy.encode_prompts(prompts)
    eos_id = policy.tokenizer.eos_token_id
    rows_prompt: list[list[int]] = []
    rows_sample: list[list[int]] = []
    with torch.no_grad(), policy._rng(seed):  # the same RNG discipline as Policy.generate
        for start in range(0, len(prompt_ids), batch_size):
            rows = [ids for ids in prompt_ids[start:start + batch_size] for _ in range(n)]
            input_ids, mask = policy._left_pad(rows)
            out = policy.model.generate(
                input_ids=input_ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                repetition_penalty=1.0, min_new_tokens=0, max_new_tokens=max_new_tokens,
                pad_token_id=policy.tokenizer.pad_token_id, eos_token_id=eos_id)
            for row, new in zip(rows, out[:, input_ids.shape[1]:].tolist()):
                cut = new.index(eos_id) + 1 if eos_id in new else len(new)
                rows_prompt.append(row)
                rows_sample.append(new[:cut])
    logps = policy.sequence_logps_ids(rows_prompt, rows_sample, batch_size=batch_size * n).tolist()
    return [-sum(logps[i * n:(i + 1) * n]) / n for i in range(len(prompts))]


def run(ctx: BenchContext) -> dict[str, Any]:
    """Seconds per prompt of both estimators, their ratio and their agreement."""
    sizes, policy = ctx.sizes, ctx.policy
    prompts = [p.prompt for p in ctx.pairs[:sizes.entropy_prompts]]
    n, horizon, seed = sizes.entropy_samples, sizes.entropy_tokens, ctx.opts.seed
    batch = min(sizes.batch_size, len(prompts))
    sampler = acq.policy_sampler(policy, max_new_tokens=horizon, batch_size=batch)
    results: dict[str, list[float]] = {}

    def ours() -> None:
        results["ours"] = acq.entropy_scores(sampler, prompts, n=n, seed=seed)

    def naive() -> None:
        results["naive"] = naive_entropies(policy, prompts, n=n, max_new_tokens=horizon, seed=seed,
                                           batch_size=batch)

    ctx.log(f"entropy: {len(prompts)} prompts × {n} samples, ours vs generate-then-rescore")
    times = interleave({"ours": ours, "naive": naive}, warmup=sizes.warmup, repeats=sizes.repeats,
                       sync=synchronizer(ctx.device))
    t_ours, t_naive = Stat.of(times["ours"]), Stat.of(times["naive"])
    return {
        "entropy_prompts": len(prompts),
        "entropy_samples": n,
        "entropy_s_per_prompt": t_ours.median / len(prompts),
        "entropy_naive_s_per_prompt": t_naive.median / len(prompts),
        "entropy_speedup_vs_naive": t_naive.median / t_ours.median,
        "entropy_max_abs_diff": max(abs(a - b) for a, b in zip(results["ours"], results["naive"])),
        "entropy_time_s": t_ours.to_dict(),
        "entropy_naive_time_s": t_naive.to_dict(),
    }
