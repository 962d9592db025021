"""DPO on a LoRA adapter: losses, and a training loop that reads top to bottom.

With Δ the log-ratio margin Δ = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)),
log-probs summed over each completion's tokens, and ε = `label_smoothing`:

- ``sigmoid`` (DPO): −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ). At ε = 0 this is TRL's ``sigmoid``; with
  ε > 0 it is conservative DPO (Mitchell 2023), which TRL 1.16's ``sigmoid`` no longer applies
  (it ignores label_smoothing there).
- ``robust`` (Chowdhury et al. 2024): (−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)) / (1 − 2ε), as TRL's
  ``robust``: an unbiased estimate of the clean-label loss under label-flip rate ε (sigmoid at ε = 0).
- ``ipo``: (Δ̄ − 1/(2β))², Δ̄ the margin of length-normalised log-ratios: each log-ratio divided by
  its completion's token count (EOS included where it counts, at least 1). This is TRL's ``ipo``
  exactly (TRL divides by the completion mask's token count, which includes the EOS it appends).
- ``ipo-sum``: (Δ − 1/(2β))² on the summed log-ratios, IPO's equation 17 read with sequence
  log-probs. Long completions then dominate the squared loss, hence TRL's normalisation.

Both sigmoid forms give ln 2 at Δ = 0; both ipo forms give 1/(4β²). Metric names are TRL's; the
rewards in them are β·(log π − log π_ref) with summed log-probs for every loss, as in TRL.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from apl_tui.config import TrainConfig
from apl_tui.errors import Cancelled, ModelError, TrainingDiverged
from apl_tui.events import ProgressSink, TrainStepDone, WarningRaised, ignore
from apl_tui.records import Pair

if TYPE_CHECKING:
    import torch

    from apl_tui.policy import Policy

# The "stuck at ln 2" warning: a loss within this of its zero-margin value, margins below
# STUCK_MARGIN, after at least STUCK_AFTER steps, means the adapter is not learning.
STUCK_LOSS_TOL = 0.01
STUCK_MARGIN = 1e-3
STUCK_AFTER = 5
# A loss average must improve by more than this to reset the patience counter.
PATIENCE_MIN_DELTA = 1e-4


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             chosen_lengths: torch.Tensor | None = None,
             rejected_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and implicit rewards, all (B,).

    Inputs are sequence log-probs (B,); ``ipo`` also needs each completion's token count (B,)
    (the tokens its log-prob sums over). Returns (losses, chosen_rewards, rejected_rewards) with
    rewards β·(log π − log π_ref), detached (they are metrics and acquisition scores).

    Example: all four inputs 0 (policy = reference) gives losses = ln 2 ≈ 0.6931 for sigmoid.
    """
    import torch.nn.functional as F

    chosen_ratio = policy_chosen - ref_chosen  # (B,)
    rejected_ratio = policy_rejected - ref_rejected  # (B,)
    margin = chosen_ratio - rejected_ratio  # (B,) Δ
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * margin) - eps * F.logsigmoid(-beta * margin)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(beta * margin) + eps * F.logsigmoid(-beta * margin)) / (1 - 2 * eps)
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("the ipo loss needs chosen_lengths and rejected_lengths (completion token counts)")
        # Per-token log-ratios, as TRL: the squared loss no longer grows with completion length.
        normalised = (chosen_ratio / chosen_lengths.clamp(min=1) - rejected_ratio / rejected_lengths.clamp(min=1))
        losses = (normalised - 1 / (2 * beta)) ** 2
    elif loss_type == "ipo-sum":
        losses = (margin - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {loss_type!r}: sigmoid, robust, ipo or ipo-sum")
    return losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


def _stuck_value(cfg: TrainConfig) -> float:
    """The loss at zero margin: what a loss that never moves sits at."""
    return 1 / (4 * cfg.beta**2) if cfg.loss in ("ipo", "ipo-sum") else math.log(2)


def _learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over cfg.warmup_steps (step counts from 1), then constant."""
    if cfg.warmup_steps > 0 and step <= cfg.warmup_steps:
        return cfg.learning_rate * step / (cfg.warmup_steps + 1)
    return cfg.learning_rate


def _micro_batches(n: int, cfg: TrainConfig, epoch: int) -> list[list[list[int]]]:
    """Index groups for one epoch: optimizer steps, each a list of micro-batches of pair indices.

    Shuffled with a seed of (cfg.seed, epoch), so a round is reproducible and epochs differ.
    Example: n = 5, batch_size = 2, grad_accum = 2 → [[[3, 0], [4, 1]], [[2]]].
    """
    order = list(range(n))
    random.Random(cfg.seed * 1_000_003 + epoch).shuffle(order)
    micro = [order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    return [micro[i:i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]


def train_dpo(policy: Policy, pairs: Sequence[Pair], ref_chosen: Sequence[float], ref_rejected: Sequence[float],
              cfg: TrainConfig, *, sink: ProgressSink = ignore, cancel: threading.Event | None = None,
              on_step: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train the policy's CURRENT adapter with DPO; return the metrics of each optimizer step.

    `ref_chosen[i]`, `ref_rejected[i]` are the reference log-probs of pairs[i] (cached by the
    caller: they never change for a fixed base model). The caller calls `policy.new_adapter`
    first for the reset regime. A completion's EOS token counts where `Pair.chosen_eos` /
    `rejected_eos` say so, which must match how the reference log-probs were computed.
    Raises `Cancelled` between steps when `cancel` is set (the adapter is then half-trained:
    the caller discards it). Only LoRA dropout (`lora.dropout`) is active while training; the base
    model's dropout stays off (TRL's default `disable_dropout` turns off LoRA's too); the model is
    back in eval mode however this returns.
    """
    import torch

    if not policy.has_adapter:
        raise ModelError("no adapter to train", hint="call new_adapter before train_dpo")
    if not (len(pairs) == len(ref_chosen) == len(ref_rejected)):
        raise ValueError(f"{len(pairs)} pairs but {len(ref_chosen)}/{len(ref_rejected)} reference log-probs")
    if not pairs:
        return []
    params = policy.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(_micro_batches(len(pairs), cfg, 0))
    total = steps_per_epoch * cfg.epochs
    history: list[dict[str, float]] = []
    warned = False
    best, stale = math.inf, 0
    step = 0
    _train_mode(policy.model, True)
    try:
        for epoch in range(cfg.epochs):
            epoch_losses: list[float] = []
            for group in _micro_batches(len(pairs), cfg, epoch):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("training cancelled", hint="the adapter being trained was discarded")
                step += 1
                lr = _learning_rate(cfg, step)
                for pg in optimizer.param_groups:
                    pg["lr"] = lr
                metrics = _optimizer_step(policy, optimizer, params, pairs, ref_chosen, ref_rejected, group, cfg)
                metrics["learning_rate"] = lr
                metrics["epoch"] = epoch + 1
                if not math.isfinite(metrics["loss"]):
                    # Every later step would stay NaN; stop now and let the caller discard the adapter.
                    raise TrainingDiverged(
                        f"DPO loss became {metrics['loss']} at step {step} of {total}; the round was discarded",
                        hint="lower train.learning_rate or train.beta in config.toml, then run again")
                history.append(metrics)
                epoch_losses.append(metrics["loss"])
                # Only from the second epoch on: in the first, every batch is unseen and LoRA starts
                # at B = 0, so margins near zero are expected until the adapter generalises.
                if (not warned and epoch >= 1 and step >= STUCK_AFTER
                        and abs(metrics["rewards/margins"]) < STUCK_MARGIN
                        and abs(metrics["loss"] - _stuck_value(cfg)) <= STUCK_LOSS_TOL):
                    warned = True
                    sink(WarningRaised(
                        f"DPO loss stuck at {metrics['loss']:.4f} with zero margins after {step} steps: "
                        "the adapter is not learning (raise train.learning_rate or check the labels)"))
                sink(TrainStepDone(step=step, total=total, metrics=dict(metrics)))
                if on_step is not None:
                    on_step(step, dict(metrics))
            if cfg.patience > 0:
                mean = sum(epoch_losses) / len(epoch_losses)
                if mean < best - PATIENCE_MIN_DELTA:
                    best, stale = mean, 0
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
    finally:
        optimizer.zero_grad(set_to_none=True)
        policy.model.eval()
    return history


def adapter_is_finite(policy: Policy) -> bool:
    """True when every trainable (LoRA) weight is finite: the check before an adapter is saved."""
    import torch

    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in policy.trainable_parameters())


def _train_mode(model: torch.nn.Module, on: bool) -> None:
    """Training mode for the LoRA dropout only; the base model's own dropout stays off.

    For the same reason as TRL's `disable_dropout` (which also turns off LoRA's dropout): with
    the base model's dropout in the policy pass, log π and log π_ref of the
    same text would differ by noise at step 0 and the loss would not start at ln 2.
    """
    model.eval()
    for name, module in model.named_modules():
        if "lora_dropout" in name:
            module.train(on)


def _optimizer_step(policy: Policy, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                    pairs: Sequence[Pair], ref_chosen: Sequence[float], ref_rejected: Sequence[float],
                    group: list[list[int]], cfg: TrainConfig) -> dict[str, float]:
    """Accumulate gradients over a group of micro-batches, clip, step; return pair-averaged metrics."""
    import torch

    n_pairs = sum(len(mb) for mb in group)
    sums: dict[str, float] = {}
    optimizer.zero_grad(set_to_none=True)
    for mb in group:
        b = len(mb)
        prompts = [pairs[i].prompt for i in mb]
        # One forward pass over [chosen; rejected], as TRL does: the rows share prompts and padding.
        texts = [pairs[i].chosen for i in mb] + [pairs[i].rejected for i in mb]
        # EOS counts where the completion ended with it, exactly as for the cached reference.
        eos = [pairs[i].chosen_eos for i in mb] + [pairs[i].rejected_eos for i in mb]
        completion_ids = policy.encode_completions(texts, eos)
        logps = policy.sequence_logps_ids(policy.encode_prompts(prompts + prompts), completion_ids, grad=True,
                                          batch_size=2 * b)  # (2b,)
        pc, pr = logps[:b], logps[b:]
        device = logps.device
        rc = torch.tensor([ref_chosen[i] for i in mb], dtype=torch.float32, device=device)  # (b,)
        rr = torch.tensor([ref_rejected[i] for i in mb], dtype=torch.float32, device=device)  # (b,)
        lengths = torch.tensor([len(c) for c in completion_ids], dtype=torch.float32, device=device)  # (2b,)
        losses, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta=cfg.beta, loss_type=cfg.loss,
                                                label_smoothing=cfg.label_smoothing,
                                                chosen_lengths=lengths[:b], rejected_lengths=lengths[b:])
        # Weight by pair count so the step's gradient is the mean over all its pairs.
        (losses.sum() / n_pairs).backward()
        batch = {
            "loss": losses.detach().sum(),
            "rewards/chosen": chosen_r.sum(),
            "rewards/rejected": rejected_r.sum(),
            "rewards/margins": (chosen_r - rejected_r).sum(),
            "rewards/accuracies": (chosen_r > rejected_r).float().sum(),
            "logps/chosen": pc.detach().sum(),
            "logps/rejected": pr.detach().sum(),
        }
        for key, value in batch.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    metrics = {key: value / n_pairs for key, value in sums.items()}
    metrics["grad_norm"] = float(grad_norm)
    return metrics
