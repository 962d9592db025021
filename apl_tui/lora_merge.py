"""LoRA merged into copies of the base weights, for scoring without gradients.

A LoRA layer computes W x + s · B (A x): per wrapped Linear and per call that is two extra thin
matmuls, a scale and an add. For no-grad scoring the same numbers (to float rounding) come from
one matmul with W' = W + s · B A. `MergedLora` keeps W' for each wrapped Linear in a NEW tensor,
computed once per adapter state, and for the length of one scoring call swaps a plain Linear
holding W' in for the LoRA layer; on leaving (also on an exception) the LoRA layer is put back.

Why not peft's `merge_adapter()` / `unmerge_adapter()`: they add s · B A into the base weights in
place and subtract it again, so every round leaves float rounding in the base weights (which are
also the reference model), and an exception between the two leaves the model merged. Here the
base weights are never written; the price is memory for the merged copies of the targeted
weights (q and v projections by default: ≈ 10 % of SmolLM2's body).

The cache is keyed on the LoRA tensors themselves and their version counters (bumped by every
in-place update, e.g. an optimizer step), so training between two scoring calls, or another
adapter loaded, rebuilds W' before it is used. The swap is visible to anything else running the
same modules at the same time: scoring and training run on one learner thread.

torch and peft are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


def _lora_linears(model: Any) -> list[tuple[Any, str, Any, str]]:
    """(parent, attribute, LoRA layer, adapter name) for each LoRA layer that can be merged.

    Mergeable: a plain peft LoRA Linear over a float32 `torch.nn.Linear`, not merged by peft,
    adapters enabled, exactly one active adapter with no variant (DoRA and the like), and its
    dropout inactive (a merged layer cannot drop out). The others stay as they are: each layer's
    merge is independent of the others'.
    """
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear

    found = []
    for name, module in model.named_modules():
        if type(module) is not LoraLinear or module.merged or module.disable_adapters:
            continue
        active = [a for a in module.active_adapters if a in module.lora_A]
        if len(active) != 1 or active[0] in module.lora_variant:
            continue
        adapter = active[0]
        base = module.get_base_layer()
        dropout = module.lora_dropout[adapter]
        if (type(base) is not torch.nn.Linear or base.weight.dtype != torch.float32
                or (dropout.training and not isinstance(dropout, torch.nn.Identity))):
            continue
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if getattr(parent, attribute, None) is module:
            found.append((parent, attribute, module, adapter))
    return found


def _state(layers: list[tuple[Any, str, Any, str]]) -> list[tuple[Any, ...]]:
    """What W' depends on, per layer: the objects (compared by identity) and their version counters."""
    state = []
    for _, _, module, adapter in layers:
        a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
        w = module.get_base_layer().weight
        state.append((module, a, b, w, a._version, b._version, w._version, float(module.scaling[adapter])))
    return state


def _same(old: list[tuple[Any, ...]], new: list[tuple[Any, ...]]) -> bool:
    """Whether two `_state`s are equal: the same objects (by identity) at the same versions."""
    if len(old) != len(new):
        return False
    for x, y in zip(old, new):
        if any(p is not q for p, q in zip(x[:4], y[:4])) or x[4:] != y[4:]:
            return False
    return True


class MergedLora:
    """Merged copies of a model's LoRA Linear layers, swapped in for the length of a `with` block."""

    def __init__(self) -> None:
        self._state: list[tuple[Any, ...]] = []
        self._merged: list[Any] = []  # one plain Linear holding W' per entry of `_state`
        self.builds = 0
        """How many times W' was (re)computed: once per adapter state (tests read it)."""

    def clear(self) -> None:
        """Drop the merged copies (and the references that keep the old adapter's tensors alive)."""
        self._state, self._merged = [], []

    @contextlib.contextmanager
    def swapped(self, model: Any) -> Iterator[int]:
        """Within the block, `model`'s mergeable LoRA layers are plain Linears with W' = W + s·B·A.

        Yields how many layers were swapped (0: nothing to merge, the block runs as it is).
        Only for no-grad use: W' is a detached copy, so nothing would reach the LoRA weights.
        Whatever happens inside, every LoRA layer is back in place when the block ends.
        """
        import torch

        if torch.is_grad_enabled():
            raise RuntimeError("merged LoRA layers carry no gradient: use them under torch.no_grad()")
        layers = _lora_linears(model)
        state = _state(layers)
        if not _same(self._state, state):
            self._state, self._merged = state, [self._merge(module, adapter) for _, _, module, adapter in layers]
            self.builds += 1
        swapped: list[tuple[Any, str, Any]] = []
        try:
            for (parent, attribute, module, _), merged in zip(layers, self._merged):
                setattr(parent, attribute, merged)
                swapped.append((parent, attribute, module))
            yield len(swapped)
        finally:
            for parent, attribute, module in reversed(swapped):
                setattr(parent, attribute, module)

    @staticmethod
    def _merge(module: Any, adapter: str) -> Any:
        """A frozen `torch.nn.Linear` with W + s·B·A (a new tensor) and the base layer's own bias."""
        import torch

        base = module.get_base_layer()
        with torch.no_grad():
            weight = base.weight + module.get_delta_weight(adapter).to(base.weight.dtype)  # (out, in)
        merged = torch.nn.Linear(base.in_features, base.out_features, bias=False,
                                 device="meta")  # no throwaway init of a weight replaced below
        merged.weight = torch.nn.Parameter(weight, requires_grad=False)
        merged.bias = base.bias  # shared, not copied: scoring never writes it
        merged.eval()
        return merged
