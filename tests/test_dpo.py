"""DPO: hand-computed losses, and LoRA training on the tiny model."""

from __future__ import annotations

import dataclasses
import math
import threading

import pytest
import torch

from apl_tui.config import LoraSettings, TrainConfig
from apl_tui.dpo import _learning_rate, _micro_batches, dpo_loss, train_dpo
from apl_tui.errors import Cancelled, ModelError
from apl_tui.events import Event, TrainStepDone, WarningRaised
from apl_tui.policy import Policy
from apl_tui.records import Pair

PAIRS = [
    Pair("The movie was", " wonderful and moving", " dull"),
    Pair("I think this film", " is a masterpiece", " is a mess of bad ideas"),
    Pair("Bad", " at first, then great", " all the way"),
    Pair("My review:", " loved it", " hated it, do not watch"),
]
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
           "logps/chosen", "logps/rejected", "grad_norm", "learning_rate")


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- losses, by hand ----------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type, eps", [("sigmoid", 0.0), ("sigmoid", 0.2), ("robust", 0.2)])
def test_zero_margin_loss_is_ln2(loss_type: str, eps: float) -> None:
    losses, rc, rr = dpo_loss(t(-3.0, -1.0), t(-5.0, -2.0), t(-3.0, -1.0), t(-5.0, -2.0),
                              beta=0.1, loss_type=loss_type, label_smoothing=eps)
    assert torch.allclose(losses, torch.full((2,), math.log(2)), atol=1e-6)
    assert torch.equal(rc, torch.zeros(2)) and torch.equal(rr, torch.zeros(2))


def test_losses_and_rewards_against_hand_computation() -> None:
    # chosen ratio +1, rejected ratio −1: Δ = 2; β = 0.5 → βΔ = 1.
    args = (t(-1.0), t(-3.0), t(-2.0), t(-2.0))
    ls1 = math.log(1 + math.exp(-1))  # −log σ(1)
    ls_1 = math.log(1 + math.exp(1))  # −log σ(−1)
    sigmoid, rc, rr = dpo_loss(*args, beta=0.5)
    assert abs(float(sigmoid) - ls1) < 1e-6
    assert float(rc) == pytest.approx(0.5) and float(rr) == pytest.approx(-0.5)
    cdpo, _, _ = dpo_loss(*args, beta=0.5, label_smoothing=0.2)
    assert abs(float(cdpo) - (0.8 * ls1 + 0.2 * ls_1)) < 1e-6
    robust, _, _ = dpo_loss(*args, beta=0.5, loss_type="robust", label_smoothing=0.2)
    assert abs(float(robust) - (0.8 * ls1 - 0.2 * ls_1) / 0.6) < 1e-6
    ipo_sum, _, _ = dpo_loss(*args, beta=0.5, loss_type="ipo-sum")
    assert abs(float(ipo_sum) - (2.0 - 1.0) ** 2) < 1e-6  # (Δ − 1/(2β))²
    with pytest.raises(ValueError):
        dpo_loss(*args, beta=0.5, loss_type="hinge")


def test_ipo_divides_each_log_ratio_by_its_completion_length_as_trl() -> None:
    # Pair 1: chosen ratio +1 over 2 tokens, rejected ratio −1 over 4: Δ̄ = 1/2 + 1/4 = 0.75.
    # Pair 2: ratios +3 (3 tokens) and +2 (0 tokens: counted as 1): Δ̄ = 1 − 2 = −1.
    args = (t(-1.0, 0.0), t(-3.0, 0.0), t(-2.0, -3.0), t(-2.0, -2.0))
    lengths = {"chosen_lengths": t(2, 3), "rejected_lengths": t(4, 0)}
    ipo, rc, rr = dpo_loss(*args, beta=0.5, loss_type="ipo", **lengths)  # 1/(2β) = 1
    assert ipo.tolist() == pytest.approx([(0.75 - 1) ** 2, (-1 - 1) ** 2], abs=1e-6)
    # Rewards stay β·(summed log-ratio), as in TRL's metrics.
    assert rc.tolist() == pytest.approx([0.5, 1.5]) and rr.tolist() == pytest.approx([-0.5, 1.0])
    summed, _, _ = dpo_loss(*args, beta=0.5, loss_type="ipo-sum", **lengths)
    assert summed.tolist() == pytest.approx([(2 - 1) ** 2, (1 - 1) ** 2], abs=1e-6)  # lengths ignored
    zero, _, _ = dpo_loss(t(-4.0), t(-9.0), t(-4.0), t(-9.0), beta=0.1, loss_type="ipo",
                          chosen_lengths=t(7), rejected_lengths=t(20))
    assert float(zero) == pytest.approx(1 / (4 * 0.1**2))  # zero margin: 1/(4β²), as ipo-sum
    with pytest.raises(ValueError, match="lengths"):
        dpo_loss(*args, beta=0.5, loss_type="ipo")


@pytest.mark.parametrize("loss", ["ipo", "ipo-sum"])
def test_training_feeds_ipo_the_token_counts_it_summed(tiny_policy: Policy, loss: str) -> None:
    """First step (adapter B = 0, so log π = true reference): offset the cached reference by known
    amounts and the loss is computable by hand from the completions' token counts (EOS included)."""
    pairs = [dataclasses.replace(PAIRS[0], chosen_eos=True), PAIRS[1], PAIRS[2],
             dataclasses.replace(PAIRS[3], rejected_eos=True)]
    true_c = tiny_policy.reference_logps([p.prompt for p in pairs], [p.chosen for p in pairs],
                                         [p.chosen_eos for p in pairs]).tolist()
    true_r = tiny_policy.reference_logps([p.prompt for p in pairs], [p.rejected for p in pairs],
                                         [p.rejected_eos for p in pairs]).tolist()
    a, b = 2.0, -3.0  # chosen log-ratio a, rejected log-ratio b at step 1
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    cfg = TrainConfig(epochs=1, batch_size=4, warmup_steps=0, beta=0.25, loss=loss)
    first = train_dpo(tiny_policy, pairs, [c - a for c in true_c], [r - b for r in true_r], cfg)[0]
    n_c = [len(ids) for ids in tiny_policy.encode_completions([p.chosen for p in pairs],
                                                                 [p.chosen_eos for p in pairs])]
    n_r = [len(ids) for ids in tiny_policy.encode_completions([p.rejected for p in pairs],
                                                                 [p.rejected_eos for p in pairs])]
    assert len(set(zip(n_c, n_r))) > 1  # different lengths, so the two forms differ
    if loss == "ipo":
        want = sum((a / lc - b / lr - 2.0) ** 2 for lc, lr in zip(n_c, n_r)) / len(pairs)
    else:
        want = (a - b - 2.0) ** 2
    assert first["loss"] == pytest.approx(want, rel=1e-4)
    assert first["rewards/margins"] == pytest.approx(0.25 * (a - b), rel=1e-4)


def test_one_sgd_step_moves_chosen_up_and_rejected_down() -> None:
    pc = t(-2.0).requires_grad_()
    pr = t(-2.0).requires_grad_()
    losses, _, _ = dpo_loss(pc, pr, t(-2.0), t(-2.0), beta=0.1)
    losses.sum().backward()
    assert pc.grad is not None and pr.grad is not None
    assert float(pc.grad) == pytest.approx(-0.05) and float(pr.grad) == pytest.approx(0.05)  # ∓β·σ(0)
    with torch.no_grad():
        pc -= 1.0 * pc.grad
        pr -= 1.0 * pr.grad
    assert float(pc.detach()) > -2.0 and float(pr.detach()) < -2.0
    after, _, _ = dpo_loss(pc, pr, t(-2.0), t(-2.0), beta=0.1)
    assert float(after.detach()) < math.log(2)


# --- schedule and batching ------------------------------------------------------------------------


def test_micro_batches_cover_every_pair_once_per_epoch() -> None:
    cfg = TrainConfig(batch_size=2, grad_accum=2, seed=3)
    groups = _micro_batches(5, cfg, epoch=0)
    assert [[len(mb) for mb in g] for g in groups] == [[2, 2], [1]]
    assert sorted(i for g in groups for mb in g for i in mb) == [0, 1, 2, 3, 4]
    assert groups == _micro_batches(5, cfg, epoch=0)
    assert groups != _micro_batches(5, cfg, epoch=1)


def test_learning_rate_warms_up_linearly() -> None:
    cfg = TrainConfig(learning_rate=1e-3, warmup_steps=3)
    assert [_learning_rate(cfg, s) for s in (1, 2, 3, 4, 10)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


# --- training the tiny model ----------------------------------------------------------------------


def ref_logps(policy: Policy, pairs: list[Pair]) -> tuple[list[float], list[float]]:
    prompts = [p.prompt for p in pairs]
    chosen = policy.reference_logps(prompts, [p.chosen for p in pairs]).tolist()
    rejected = policy.reference_logps(prompts, [p.rejected for p in pairs]).tolist()
    return chosen, rejected


def test_lora_steps_train_the_adapter_only(tiny_policy: Policy) -> None:
    base_before = {n: p.detach().clone() for n, p in tiny_policy.model.named_parameters()}
    ref_c, ref_r = ref_logps(tiny_policy, PAIRS)
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    lora_before = {n: p.detach().clone() for n, p in tiny_policy.model.named_parameters() if "lora_" in n}
    events: list[Event] = []
    seen: list[int] = []
    cfg = TrainConfig(epochs=6, batch_size=4, learning_rate=5e-3, warmup_steps=1)
    history = train_dpo(tiny_policy, PAIRS, ref_c, ref_r, cfg, sink=events.append,
                        on_step=lambda step, m: seen.append(step))
    assert len(history) == 6 and seen == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events if isinstance(e, TrainStepDone)] == seen
    assert all(isinstance(e, TrainStepDone) and e.total == 6 for e in events)  # no stuck warning
    assert all(set(METRICS) <= set(m) for m in history)
    first, last = history[0], history[-1]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5) and abs(first["rewards/margins"]) < 1e-5
    assert last["rewards/margins"] > first["rewards/margins"] + 0.1
    assert last["rewards/accuracies"] > first["rewards/accuracies"] and last["loss"] < first["loss"]
    assert not tiny_policy.model.training
    # Base weights bit-identical (peft names them base_layer.* inside wrapped modules).
    params = dict(tiny_policy.model.named_parameters())
    for name, before in base_before.items():
        wrapped = [n for n in params if n.endswith(name.replace("q_proj.", "q_proj.base_layer.")
                                                   .replace("v_proj.", "v_proj.base_layer."))]
        assert len(wrapped) == 1 and torch.equal(params[wrapped[0]], before), name
    changed = [n for n, p in params.items() if "lora_" in n and not torch.equal(p, lora_before[n])]
    assert len(changed) == len(lora_before)
    # The reference (adapter off) is untouched; the policy moved towards the chosen completions.
    assert ref_logps(tiny_policy, PAIRS) == (ref_c, ref_r)
    prompts = [p.prompt for p in PAIRS]
    pol_c = tiny_policy.sequence_logps(prompts, [p.chosen for p in PAIRS])
    pol_r = tiny_policy.sequence_logps(prompts, [p.rejected for p in PAIRS])
    assert bool(((pol_c - t(*ref_c)) - (pol_r - t(*ref_r)) > 0).all())


def test_grad_accumulation_matches_a_big_batch(tiny_policy: Policy) -> None:
    ref_c, ref_r = ref_logps(tiny_policy, PAIRS)
    cfg = TrainConfig(epochs=1, batch_size=4, learning_rate=1e-3, warmup_steps=0, max_grad_norm=1e9)
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    perturb = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(9)) * 0.3
               for n, p in tiny_policy.model.named_parameters() if "lora_B" in n}

    def run(batch_size: int, accum: int) -> dict[str, float]:
        tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
        with torch.no_grad():  # a non-zero B, so the first step's margins are not all zero
            for n, p in tiny_policy.model.named_parameters():
                if n in perturb:
                    p.copy_(perturb[n])
        step = dataclasses.replace(cfg, batch_size=batch_size, grad_accum=accum)
        return train_dpo(tiny_policy, PAIRS, ref_c, ref_r, step)[0]

    big, accumulated = run(4, 1), run(2, 2)
    for key in ("loss", "grad_norm", "rewards/margins", "logps/chosen"):
        assert accumulated[key] == pytest.approx(big[key], rel=1e-4, abs=1e-5), key
    assert big["grad_norm"] > 0


def test_cancel_between_steps_raises(tiny_policy: Policy) -> None:
    ref_c, ref_r = ref_logps(tiny_policy, PAIRS)
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    cancel = threading.Event()
    steps: list[int] = []

    def on_step(step: int, metrics: dict[str, float]) -> None:
        steps.append(step)
        if step == 2:
            cancel.set()

    cfg = TrainConfig(epochs=5, batch_size=2)
    with pytest.raises(Cancelled):
        train_dpo(tiny_policy, PAIRS, ref_c, ref_r, cfg, cancel=cancel, on_step=on_step)
    assert steps == [1, 2] and not tiny_policy.model.training


def test_stuck_loss_warns_once(tiny_policy: Policy) -> None:
    ref_c, ref_r = ref_logps(tiny_policy, PAIRS)
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    events: list[Event] = []
    cfg = TrainConfig(epochs=8, batch_size=4, learning_rate=1e-12)
    train_dpo(tiny_policy, PAIRS, ref_c, ref_r, cfg, sink=events.append)
    warnings = [e for e in events if isinstance(e, WarningRaised)]
    assert len(warnings) == 1 and "stuck" in warnings[0].message


def test_patience_stops_a_round_that_does_not_improve(tiny_policy: Policy) -> None:
    ref_c, ref_r = ref_logps(tiny_policy, PAIRS)
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    cfg = TrainConfig(epochs=10, batch_size=2, learning_rate=1e-12, patience=1)
    history = train_dpo(tiny_policy, PAIRS, ref_c, ref_r, cfg)
    assert len(history) == 4  # 2 steps per epoch; epoch 2 did not improve on epoch 1


def test_training_needs_an_adapter(tiny_policy: Policy) -> None:
    with pytest.raises(ModelError):
        train_dpo(tiny_policy, PAIRS, [0.0] * 4, [0.0] * 4, TrainConfig())


def test_eos_flags_of_pairs_match_the_reference(tiny_policy: Policy) -> None:
    pairs = [dataclasses.replace(p, chosen_eos=True) for p in PAIRS]
    prompts = [p.prompt for p in pairs]
    ref_c = tiny_policy.reference_logps(prompts, [p.chosen for p in pairs], [True] * 4).tolist()
    ref_r = tiny_policy.reference_logps(prompts, [p.rejected for p in pairs], [False] * 4).tolist()
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    [first] = train_dpo(tiny_policy, pairs, ref_c, ref_r, TrainConfig(epochs=1, batch_size=4))
    # Policy = reference at step 1: zero rewards only if the EOS token was scored on both sides.
    assert abs(first["rewards/chosen"]) < 1e-5 and first["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_only_lora_dropout_trains(tiny_policy: Policy) -> None:
    ref_c, ref_r = ref_logps(tiny_policy, PAIRS)
    tiny_policy.new_adapter(LoraSettings(r=4, dropout=0.5), seed=0)
    modes: list[tuple[bool, bool]] = []

    def on_step(step: int, metrics: dict[str, float]) -> None:
        named = list(tiny_policy.model.named_modules())
        modes.append((all(m.training for n, m in named if n.endswith("lora_dropout.default")),
                      any(m.training for n, m in named if "lora_dropout" not in n)))

    train_dpo(tiny_policy, PAIRS, ref_c, ref_r, TrainConfig(epochs=1, batch_size=4), on_step=on_step)
    assert modes == [(True, False)]
    assert not any(m.training for m in tiny_policy.model.modules())
