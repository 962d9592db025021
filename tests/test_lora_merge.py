"""Scoring with the LoRA deltas merged into copies of the base weights (`apl_tui.lora_merge`).

Merged scoring must give the unmerged log-probs, and must never leak: not into training (same
gradients and weights as without it), not into the reference pass, not into a saved adapter,
not after an exception, and never by writing the base weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from apl_tui import logps
from apl_tui.config import LoraSettings, TrainConfig
from apl_tui.dpo import train_dpo
from apl_tui.policy import Policy
from apl_tui.records import Pair

PAIRS = [
    Pair("The movie was", " wonderful and moving", " dull"),
    Pair("I think this film", " is a masterpiece", " is a mess of bad ideas"),
    Pair("Bad", " at first, then great", " all the way"),
    Pair("My review:", " loved it", " hated it, do not watch"),
]
PROMPTS = [p.prompt for p in PAIRS for _ in range(2)]
TEXTS = [c for p in PAIRS for c in (p.chosen, p.rejected)]


def perturbed(policy: Policy, seed: int = 1, dropout: float = 0.0) -> Policy:
    """The policy with a LoRA adapter whose B matrices are random (a fresh one scores like the reference)."""
    policy.new_adapter(LoraSettings(r=4, dropout=dropout), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return policy


def scores(policy: Policy, *, merge: bool, **kw: Any) -> torch.Tensor:
    before, policy.merge_lora = policy.merge_lora, merge
    try:
        return policy.sequence_logps(PROMPTS, TEXTS, **kw)
    finally:
        policy.merge_lora = before


def lora_layers(policy: Policy) -> list[Any]:
    from peft.tuners.lora.layer import Linear as LoraLinear

    return [m for m in policy.model.modules() if isinstance(m, LoraLinear)]


def base_weights(policy: Policy) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in policy.model.named_parameters() if "lora_" not in name}


@pytest.mark.parametrize("shared", [None, False])
def test_merged_scoring_gives_the_unmerged_log_probs_and_features(tiny_policy: Policy, shared: bool | None) -> None:
    perturbed(tiny_policy)
    tiny_policy.shared_prefix = shared  # both scoring paths: the shared prompt pass and the padded one
    lp_m, phi_m = scores(tiny_policy, merge=True, features=True)
    lp_u, phi_u = scores(tiny_policy, merge=False, features=True)
    assert tiny_policy._merged.builds == 1
    assert float((lp_m - lp_u).abs().max()) <= 1e-4, (lp_m, lp_u)
    assert float((phi_m - phi_u).abs().max()) <= 1e-4
    # The adapter matters here (a merge that dropped the delta would score like the reference).
    reference = tiny_policy.sequence_logps(PROMPTS, TEXTS, adapter=False)
    assert float((lp_u - reference).abs().max()) > 1e-2


def test_the_reference_pass_never_sees_merged_weights(tiny_policy: Policy) -> None:
    perturbed(tiny_policy)
    before = tiny_policy.sequence_logps(PROMPTS, TEXTS, adapter=False)
    scores(tiny_policy, merge=True)
    after = tiny_policy.sequence_logps(PROMPTS, TEXTS, adapter=False)
    assert torch.equal(before, after)
    # Inside disable_adapter nothing is mergeable: the swap leaves every LoRA layer in place.
    with tiny_policy.model.disable_adapter(), torch.no_grad(), tiny_policy._merged.swapped(tiny_policy.model) as n:
        assert n == 0


def test_base_weights_are_never_written_and_layers_come_back(tiny_policy: Policy) -> None:
    perturbed(tiny_policy)
    weights = base_weights(tiny_policy)
    layers = lora_layers(tiny_policy)
    assert layers
    for _ in range(5):
        scores(tiny_policy, merge=True)
    assert lora_layers(tiny_policy) == layers  # the very same LoRA modules, in place
    after = base_weights(tiny_policy)
    assert all(torch.equal(weights[k], after[k]) for k in weights)  # bit for bit: no merge/unmerge drift
    assert not any(m.merged for m in layers)


def test_an_exception_while_scoring_leaves_the_model_unmerged(tiny_policy: Policy,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    perturbed(tiny_policy)
    layers = lora_layers(tiny_policy)
    want = scores(tiny_policy, merge=False)
    seen: list[int] = []

    def boom(policy: Policy, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(lora_layers(policy)))  # inside the swap: no LoRA layer left
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(logps, "score", boom)
    with pytest.raises(RuntimeError, match="out of memory"):
        tiny_policy.sequence_logps(PROMPTS, TEXTS)
    assert seen == [0]
    monkeypatch.undo()
    assert lora_layers(tiny_policy) == layers
    assert torch.equal(scores(tiny_policy, merge=False), want)


def test_training_after_merged_scoring_sees_the_same_adapter_and_gradients(tiny_policy: Policy,
                                                                           tiny_model: tuple[Any, Any]) -> None:
    """Two identical policies train the same round; one scores merged before, between and after."""
    import copy

    other = Policy(copy.deepcopy(tiny_model[0]), tiny_model[1], cfg=tiny_policy.cfg, device="cpu",
                   spec="tiny-random")
    cfg = TrainConfig(epochs=2, batch_size=2, learning_rate=1e-2, seed=0)
    ref_c, ref_r = [-10.0] * len(PAIRS), [-12.0] * len(PAIRS)
    runs = []
    for policy, merge in ((perturbed(tiny_policy), True), (perturbed(other), False)):
        policy.merge_lora = merge
        scores(policy, merge=merge)
        grads: list[torch.Tensor] = []

        def on_step(step: int, metrics: dict[str, float], policy: Policy = policy, merge: bool = merge) -> None:
            # Scoring between optimizer steps, as the learner does between rounds.
            grads.append(torch.cat([p.grad.flatten() for p in policy.trainable_parameters()]))
            scores(policy, merge=merge)

        history = train_dpo(policy, PAIRS, ref_c, ref_r, cfg, on_step=on_step)
        runs.append((history, grads, [p.detach().clone() for p in policy.trainable_parameters()],
                     scores(policy, merge=merge)))
    (h_m, g_m, w_m, s_m), (h_u, g_u, w_u, s_u) = runs
    assert len(g_m) == len(g_u) > 1
    assert all(torch.equal(a, b) for a, b in zip(g_m, g_u))  # the same gradients, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(w_m, w_u))  # the same trained adapter
    assert [h["loss"] for h in h_m] == [h["loss"] for h in h_u]
    # W' followed the training: rebuilt after the steps changed the adapter, and still right.
    assert tiny_policy._merged.builds > 2
    assert float((s_m - s_u).abs().max()) <= 1e-4


def test_a_saved_adapter_holds_lora_weights_only(tiny_policy: Policy, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    perturbed(tiny_policy)
    scores(tiny_policy, merge=True)
    tiny_policy.save_adapter(tmp_path / "v1", version=1)
    saved = load_file(tmp_path / "v1" / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    from peft import get_peft_model_state_dict

    live = get_peft_model_state_dict(tiny_policy.model)
    assert saved.keys() == live.keys() and all(torch.equal(saved[k], live[k]) for k in saved)
    tiny_policy.load_adapter(tmp_path / "v1", version=1)  # a new adapter object: W' rebuilt, same scores
    assert float((scores(tiny_policy, merge=True) - scores(tiny_policy, merge=False)).abs().max()) <= 1e-4


def test_active_lora_dropout_and_grad_keep_the_lora_layers(tiny_policy: Policy) -> None:
    perturbed(tiny_policy, dropout=0.5)
    tiny_policy.model.train()  # dropout on: a merged layer could not drop out
    with torch.no_grad(), tiny_policy._merged.swapped(tiny_policy.model) as n:
        assert n == 0
    tiny_policy.model.eval()
    layers = len(lora_layers(tiny_policy))
    with torch.no_grad(), tiny_policy._merged.swapped(tiny_policy.model) as n:
        assert n == layers > 0
    with pytest.raises(RuntimeError, match="no_grad"), tiny_policy._merged.swapped(tiny_policy.model):
        pass
    assert tiny_policy.sequence_logps(PROMPTS, TEXTS, grad=True).requires_grad  # training: LoRA layers
