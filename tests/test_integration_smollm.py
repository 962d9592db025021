"""The embedded SmolLM2-135M end to end (run with `-m integration`).

Deselected by default (slow: a one-off GGUF conversion, then seconds per step on 2 CPU cores).
Speed is measured by `apl bench`, not here.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from apl_tui.config import LoraSettings, ModelConfig, TrainConfig
from apl_tui.dpo import train_dpo
from apl_tui.events import Event, StepProgressed
from apl_tui.policy import Policy
from apl_tui.records import Pair

pytestmark = pytest.mark.integration

PROMPTS = [
    "This movie was", "I went to see this film because", "The acting in this picture",
    "Honestly, the plot of", "My kids and I watched", "What a waste of", "The director clearly",
    "I have never laughed so much at", "The special effects", "After twenty minutes I",
    "This is the best", "The soundtrack alone", "I expected more from", "The ending of this movie",
    "Few films manage to", "The cast includes",
]


@pytest.fixture(scope="module")
def smol_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache, so the first load below really converts the GGUF."""
    return tmp_path_factory.mktemp("smol-cache")


@pytest.fixture(scope="module")
def smol(smol_cache: Path) -> Policy:
    return Policy.load(ModelConfig(spec="smollm2-135m", device="cpu"), smol_cache)


def test_first_load_converts_then_loads_from_the_cache(smol_cache: Path) -> None:
    events: list[Event] = []
    cfg = ModelConfig(spec="smollm2-135m", device="cpu")
    started = time.perf_counter()
    first = Policy.load(cfg, smol_cache, sink=events.append)
    convert_s = time.perf_counter() - started
    assert [e.done for e in events if isinstance(e, StepProgressed) and e.phase == "converting"] == [0, 1, 2, 3]
    assert (smol_cache / "models" / "smollm2-135m" / "model.safetensors").is_file()
    events.clear()
    started = time.perf_counter()
    second = Policy.load(cfg, smol_cache, sink=events.append)
    cached_s = time.perf_counter() - started
    assert not any(isinstance(e, StepProgressed) for e in events)
    ids = first.tokenizer("The movie was", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(first.model(**ids).logits, second.model(**ids).logits)
    assert second.model.config.num_hidden_layers == 30 and second.tokenizer.eos_token_id == 2
    print(f"\nsmollm2-135m: first load (conversion) {convert_s:.1f} s, cached load {cached_s:.2f} s")


def test_generates_coherent_text(smol: Policy) -> None:
    chat = Policy(smol.model, smol.tokenizer, device="cpu", spec=smol.spec,
                  cfg=ModelConfig(spec="smollm2-135m", device="cpu", use_chat_template=True))
    [[answer]] = chat.generate(["What is the capital of France?"], n=1, temperature=0.25,
                               max_new_tokens=24, seed=0)
    print(f"\nchat answer: {answer.text!r}")
    assert "Paris" in answer.text
    samples = smol.generate(PROMPTS[:4], n=1, temperature=0.7, min_new_tokens=16, max_new_tokens=24, seed=0)
    for prompt, [s] in zip(PROMPTS, samples):
        print(f"{prompt!r} -> {s.text!r}")
        words = s.text.split()
        # Mostly real words made of letters: random token soup fails this.
        assert len(words) >= 8 and sum(w.strip(".,!?'\"").isalpha() for w in words) >= 0.7 * len(words)
        assert math.isfinite(s.logp) and s.logp < 0


def test_one_dpo_step_runs(smol: Policy) -> None:
    pairs = [Pair(p, " was wonderful, moving and beautifully made.", " was a boring waste of time.")
             for p in PROMPTS[:8]]
    prompts = [p.prompt for p in pairs]
    ref_c = smol.reference_logps(prompts, [p.chosen for p in pairs]).tolist()
    ref_r = smol.reference_logps(prompts, [p.rejected for p in pairs]).tolist()
    smol.new_adapter(LoraSettings(), seed=0)
    try:
        history = train_dpo(smol, pairs, ref_c, ref_r, TrainConfig(epochs=2, batch_size=8, warmup_steps=0))
        assert len(history) == 2 and all(math.isfinite(m["loss"]) for m in history)
        assert history[1]["rewards/margins"] > history[0]["rewards/margins"]
    finally:
        smol.drop_adapter()
