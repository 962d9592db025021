"""The vocabulary projection: one packed 2-D head matmul against the model's own sliced head.

`apl_tui.logps.padded_batch` gathers the hidden states of the kept completion positions into one
(N, d) matrix and projects it in one matmul. The model's own forward with `logits_to_keep`
projects a non-contiguous (b, cmax, d) slice instead; with a LoRA adapter loaded, torch then runs
one small matmul per sequence, each repacking the (V, d) head weight. Both paths are timed on the
same policy (`Policy.packed_head` switched per run), interleaved: scoring the pool (no grad) and a
DPO-sized training forward + backward (8 pairs = 16 sequences, gradients into the LoRA weights).
"""

from __future__ import annotations

from typing import Any

from apl_tui.bench.timing import Stat, interleave, synchronizer
from apl_tui.bench.workload import BenchContext, make_pairs


def run(ctx: BenchContext) -> dict[str, Any]:
    """Speed-ups of the packed head over the sliced one, scoring and training, and their agreement."""
    policy, sizes = ctx.policy, ctx.sizes
    pairs = ctx.pairs
    prompts = policy.encode_prompts([p.prompt for p in pairs]) * 2
    completions = policy.encode_completions([p.chosen for p in pairs] + [p.rejected for p in pairs])
    train = make_pairs(policy.tokenizer, 8, seed=ctx.opts.seed + 4)
    t_prompts = policy.encode_prompts([p.prompt for p in train]) * 2
    t_completions = policy.encode_completions([p.chosen for p in train] + [p.rejected for p in train])
    params = policy.trainable_parameters()
    results: dict[str, Any] = {}

    def scoring(packed: bool) -> Any:
        def go() -> None:
            policy.packed_head = packed
            policy.shared_prefix = False  # the padded path in both: the sliced head has no shared one
            results[f"score_{packed}"] = policy.sequence_logps_ids(prompts, completions, batch_size=sizes.batch_size)
        return go

    def training(packed: bool) -> Any:
        def go() -> None:
            policy.packed_head = packed
            policy.shared_prefix = False
            for p in params:
                p.grad = None
            logps = policy.sequence_logps_ids(t_prompts, t_completions, grad=True, batch_size=len(t_prompts))
            logps.sum().backward()
            results[f"grad_{packed}"] = [p.grad.detach().clone() for p in params]
        return go

    ctx.log(f"projection: packed vs sliced head, scoring {len(prompts)} sequences and training 8 pairs")
    try:
        sync = synchronizer(ctx.device)
        score_t = interleave({"packed": scoring(True), "sliced": scoring(False)}, warmup=sizes.warmup,
                             repeats=sizes.repeats, sync=sync)
        train_t = interleave({"packed": training(True), "sliced": training(False)}, warmup=sizes.warmup,
                             repeats=sizes.repeats, sync=sync)
    finally:
        policy.packed_head = policy.shared_prefix = None  # decide again on next use, as a fresh policy would
        for p in params:
            p.grad = None
    grad_diff = max(float((a - b).abs().max()) for a, b in zip(results["grad_True"], results["grad_False"]))
    return {
        "projection_scoring_speedup": Stat.of(score_t["sliced"]).median / Stat.of(score_t["packed"]).median,
        "projection_train_speedup": Stat.of(train_t["sliced"]).median / Stat.of(train_t["packed"]).median,
        "projection_max_abs_diff": float((results["score_True"] - results["score_False"]).abs().max()),
        "projection_max_abs_grad_diff": grad_diff,
        "projection_scoring_time_s": {k: Stat.of(v).to_dict() for k, v in score_t.items()},
        "projection_train_time_s": {k: Stat.of(v).to_dict() for k, v in train_t.items()},
    }
