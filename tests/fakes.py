"""A deterministic stand-in policy for testing the loop's logic without a model.

Entropy of a prompt is the number at its end ("train prompt 7" → 7); φ of a completion counts facts
of its text; the policy's log-prob of a completion is the reference's (−10) plus len(text) % 7
once an adapter exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FakeSample:
    text: str
    token_ids: list[int]
    logp: float
    eos: bool


class FakeList(list):
    def tolist(self) -> list[float]:
        return list(self)


class FakePolicy:
    device = "cpu"

    def __init__(self) -> None:
        self.adapter_version = 0
        self.generated: list[str] = []
        self.entropy_prompts: list[str] = []

    @staticmethod
    def entropy_of(prompt: str) -> float:
        return float(prompt.rsplit(" ", 1)[-1])

    def generate(self, prompts, *, n, temperature, top_p=1.0, min_new_tokens=0, max_new_tokens, seed,
                 adapter=True, batch_size=16):
        self.entropy_prompts += list(prompts)
        return [[FakeSample(f"{p} c{k}" + "!" * k, [1, 2], -self.entropy_of(p), True) for k in range(n)]
                for p in prompts]

    def generate_pairs(self, prompts, gen, *, seed, adapter=True):
        self.generated += list(prompts)
        return [(FakeSample(f"{p} a" + "!" * (int(self.entropy_of(p)) % 6), [1], -1.0, True), FakeSample(f"{p} bb", [1], -1.0, False))
                for p in prompts]

    def sequence_logps(self, prompts, completions, eos=None, *, adapter=True, grad=False, batch_size=16,
                       features=False):
        self.scored = getattr(self, "scored", 0) + len(completions)
        bump = adapter and self.adapter_version > 0
        logps = FakeList(-10.0 + (len(c) % 7 if bump else 0) for c in completions)
        if not features:
            return logps
        return logps, np.array([self.features_of(c) for c in completions], dtype=np.float32)

    @staticmethod
    def features_of(text: str) -> list[float]:
        """φ of a completion: a few countable facts about its text (d = 4)."""
        return [float(len(text) % 5), float(text.count("!")), float(text.count("b")), 1.0]
