"""DPO step: our `train_dpo` against TRL's `DPOTrainer`, same model, pairs, LoRA and batch size.

All train LoRA r=8 (α=16, no dropout) on the architecture's q/v projections, 8 pairs per
optimizer step, AdamW at a constant 5e-4, gradients clipped at 1. Ours reads the reference
log-probs from a cache (computed once, as the store does when a pair is generated). Two TRL
contenders: `trl` with its defaults, which with PEFT recompute the reference every step (a
second forward with the adapter disabled), and `trl-precomputed` with
`precompute_ref_log_probs=True`, which computes them once when the trainer is built (untimed,
like our cache), so it does the same work per step as ours. TRL's own defaults that would only
slow it down here are turned off: gradient checkpointing, and bf16 on the CPU. Steps are timed
between consecutive optimizer-step callbacks, the first step of each block dropped, the trainers
taking turns block by block with a block of matmul-peak runs (machine.PeakProbe) among them.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

from apl_tui.bench.machine import TRAIN_FLOPS_FACTOR, PeakProbe
from apl_tui.bench.timing import Stat, synchronizer
from apl_tui.bench.workload import BenchContext, forward_flops, make_pairs
from apl_tui.records import Pair

BATCH = 8
"""Pairs per optimizer step (the project's default train.batch_size)."""
TRL_MISSING = "n/a (pip install 'apl-tui[bench]')"


def _intervals(stamps: list[float]) -> list[float]:
    """Seconds between consecutive step ends: the first step of a block (warm-up) is dropped."""
    return [b - a for a, b in zip(stamps, stamps[1:])]


class _Ours:
    """Blocks of `train_dpo` steps on the bench policy's adapter (restored afterwards)."""

    def __init__(self, ctx: BenchContext, pairs: list[Pair]) -> None:
        from apl_tui.config import TrainConfig

        self.policy = ctx.policy
        self.pairs = pairs
        self.sync = synchronizer(ctx.device)
        prompts = [p.prompt for p in pairs]
        self.ref_c = self.policy.reference_logps(prompts, [p.chosen for p in pairs], [True] * len(pairs)).tolist()
        self.ref_r = self.policy.reference_logps(prompts, [p.rejected for p in pairs], [True] * len(pairs)).tolist()
        self.cfg = TrainConfig(epochs=1, batch_size=BATCH, learning_rate=5e-4, warmup_steps=0, seed=ctx.opts.seed)
        self.cpu: list[float] = []
        """CPU seconds of the timed steps so far."""

    def block(self) -> list[float]:
        """Wall seconds of each step but the block's first; their CPU seconds go to `self.cpu`."""
        from apl_tui.dpo import train_dpo

        stamps: list[float] = []
        cpu_stamps: list[float] = []

        def on_step(step: int, metrics: dict[str, float]) -> None:
            self.sync()
            stamps.append(time.perf_counter())
            cpu_stamps.append(time.process_time())

        train_dpo(self.policy, self.pairs, self.ref_c, self.ref_r, self.cfg, on_step=on_step)
        self.cpu += _intervals(cpu_stamps)
        return _intervals(stamps)


def _trl_runner(ctx: BenchContext, pairs: list[Pair], folder: str, *,
                precompute: bool) -> Callable[[], list[float]] | None:
    """A function running one block of TRL steps, or None when TRL is not installed."""
    try:
        import datasets
        from peft import LoraConfig
        from transformers import PrinterCallback, TrainerCallback
        from trl import DPOConfig, DPOTrainer
    except ImportError:
        return None
    datasets.disable_progress_bars()  # stderr is for the bench's own progress lines
    import torch

    from apl_tui.models import default_target_modules, load_model

    model, tokenizer = load_model(ctx.opts.model, ctx.device, ctx.opts.cache_dir, seed=ctx.opts.seed)
    sync = synchronizer(ctx.device)
    stamps: list[float] = []

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            stamps.append(time.perf_counter())

    gpu = ctx.device.startswith("cuda")
    # transformers 5 renames gradient checkpointing; TRL 1.16 still uses the old names (not ours to fix).
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
    args = DPOConfig(
        output_dir=folder, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        max_steps=len(pairs) // BATCH, learning_rate=5e-4, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=1.0, beta=0.1, report_to=[], logging_steps=10**6, save_strategy="no", eval_strategy="no",
        disable_tqdm=True, use_cpu=not gpu, bf16=gpu and torch.cuda.is_bf16_supported(), fp16=False,
        gradient_checkpointing=False, dataloader_num_workers=0, dataloader_pin_memory=gpu, seed=ctx.opts.seed,
        precompute_ref_log_probs=precompute)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=default_target_modules(model),
                      bias="none", task_type="CAUSAL_LM")
    data = datasets.Dataset.from_dict({"prompt": [p.prompt for p in pairs], "chosen": [p.chosen for p in pairs],
                                       "rejected": [p.rejected for p in pairs]})
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora, callbacks=[StepTimer()])
    trainer.remove_callback(PrinterCallback)  # it prints each run's summary to stdout, where the table goes

    def block() -> list[float]:
        stamps.clear()
        trainer.train()
        return _intervals(stamps)

    return block


def _peak_block(probe: PeakProbe, sync: Callable[[], None], runs: int, cpu: list[float]) -> list[float]:
    """`runs` timed PeakProbe calls (wall seconds; CPU seconds appended to `cpu`)."""
    wall = []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        probe()
        sync()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return wall


def run(ctx: BenchContext) -> dict[str, Any]:
    """Pairs/s of each trainer, our ratio to each TRL, and our step's FLOP/s beside the peak's."""
    import torch

    sizes = ctx.sizes
    pairs = make_pairs(ctx.policy.tokenizer, sizes.dpo_steps * BATCH, seed=ctx.opts.seed + 1)
    pairs = [Pair(p.prompt, p.chosen, p.rejected, chosen_eos=True, rejected_eos=True) for p in pairs]
    saved = {n: p.detach().clone() for n, p in ctx.policy.model.named_parameters() if p.requires_grad}
    ours = _Ours(ctx, pairs)
    sync = synchronizer(ctx.device)
    probe = PeakProbe(ctx.device, next(ctx.policy.base.parameters()).dtype)
    peak_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="apl-bench-trl-") as folder:
        ctx.log(f"dpo: {sizes.dpo_rounds} blocks of {sizes.dpo_steps} steps, ours vs TRL (reference recomputed) "
                "vs TRL (reference precomputed), + matmul peak")

        contenders: dict[str, Callable[[], list[float]]] = {
            "ours": ours.block, "peak": lambda: _peak_block(probe, sync, 3, peak_cpu)}
        for name, precompute in (("trl", False), ("trl-precomputed", True)):
            runner = _trl_runner(ctx, pairs, f"{folder}/{name}", precompute=precompute)
            if runner is not None:
                contenders[name] = runner
        times: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for r in range(sizes.dpo_rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name] += contenders[name]()
    with torch.no_grad():
        for n, p in ctx.policy.model.named_parameters():
            if n in saved:
                p.copy_(saved[n])
    t_ours = Stat.of(times["ours"])
    # Per step: the policy pass over 8 chosen + 8 rejected sequences (reference cached).
    policy = ctx.policy
    prompt_ids = policy.encode_prompts([p.prompt for p in pairs])
    comp = policy.encode_completions([p.chosen for p in pairs] + [p.rejected for p in pairs], [True] * 2 * len(pairs))
    completion_tokens = sum(len(c) for c in comp)
    tokens = 2 * sum(len(p) for p in prompt_ids) + completion_tokens
    steps = len(pairs) // BATCH
    flops = TRAIN_FLOPS_FACTOR * forward_flops(ctx.size(), tokens, completion_tokens) / steps
    out: dict[str, Any] = {
        "dpo_pairs_per_s": BATCH / t_ours.median,
        "dpo_step_s": t_ours.to_dict(),
        "dpo_step_flops": flops,
        "dpo_step_gflops_per_s": flops / t_ours.median / 1e9,
        "dpo_step_cpu_gflops": flops / Stat.of(ours.cpu).median / 1e9,
        "dpo_peak_gflops": probe.flops / Stat.of(times["peak"]).median / 1e9,
        "dpo_peak_cpu_gflops": probe.flops / Stat.of(peak_cpu).median / 1e9,
        "dpo_trl_pairs_per_s": None,
        "dpo_step_speedup_vs_trl": None,
        "dpo_trl_precomputed_pairs_per_s": None,
        "dpo_step_speedup_vs_trl_precomputed": None,
    }
    if "trl" in times:
        import trl as trl_module

        out["dpo_trl_version"] = trl_module.__version__
        for name, key in (("trl", "trl"), ("trl-precomputed", "trl_precomputed")):
            t_trl = Stat.of(times[name])
            out.update({f"dpo_{key}_pairs_per_s": BATCH / t_trl.median, f"dpo_{key}_step_s": t_trl.to_dict(),
                        f"dpo_step_speedup_vs_{key}": t_trl.median / t_ours.median})
    else:
        out["dpo_trl_note"] = TRL_MISSING
    return out
