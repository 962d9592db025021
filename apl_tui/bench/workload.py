"""What the benchmark runs on: sizes, the loaded policy, IMDB-shaped pairs, FLOP counts.

The pairs are built in code (no data set needed) with the shape of the paper's IMDB task:
prompts of 8–16 words, completions of 16–24 tokens. The words are movie-review words drawn
with a seeded RNG, so every run scores the same texts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apl_tui.records import Pair

if TYPE_CHECKING:
    from apl_tui.policy import Policy

WORDS = (
    "the film was a movie story plot acting actor actress director scene scenes script character characters "
    "great good bad terrible wonderful boring slow funny moving beautiful awful brilliant dull long short "
    "i really loved hated this one it and but with without every minute of its at end by far best worst "
    "ever seen made watch watching again never would recommend to anyone who likes horror comedy drama "
    "music score camera work ending twist performance performances cast lead role young old family love"
).split()


@dataclass(frozen=True)
class BenchSizes:
    """How much work each measurement does (presets: `full`, `quick`; tests use tiny ones)."""

    warmup: int = field(default=1, metadata={"help": "untimed runs before the timed ones"})
    repeats: int = field(default=3, metadata={"help": "timed runs per contender"})
    scoring_pairs: int = field(default=32, metadata={"help": "pairs in the scored pool"})
    batch_size: int = field(default=16, metadata={"help": "sequences per forward pass (ours)"})
    dpo_steps: int = field(default=4, metadata={"help": "optimizer steps per timed block (first dropped)"})
    dpo_rounds: int = field(default=3, metadata={"help": "timed blocks per trainer, alternating"})
    # No warm-up block for DPO: the first step of every block is dropped already.
    entropy_prompts: int = field(default=16, metadata={"help": "prompts per entropy estimate"})
    entropy_samples: int = field(default=4, metadata={"help": "N samples per prompt"})
    entropy_tokens: int = field(default=16, metadata={"help": "sample horizon in tokens"})
    ui_labels: int = field(default=200, metadata={"help": "labels per UI session (after 10 warm-up ones)"})
    store_sizes: tuple[int, ...] = field(default=(10_000, 100_000, 1_000_000),
                                         metadata={"help": "candidate counts of the store measurements"})
    store_repeats: int = field(default=30, metadata={"help": "next-pair + label cycles per store size"})
    export_labels: int = field(default=100_000, metadata={"help": "labels exported"})
    process_runs: int = field(default=5, metadata={"help": "subprocess timings (help, first frame)"})
    memory_steps: int = field(default=3, metadata={"help": "DPO steps in the memory subprocess"})
    keypath_labels: tuple[int, ...] = field(default=(1_000, 100_000, 1_000_000),
                                            metadata={"help": "label-log sizes of the key-path measurements"})
    keypath_pool: int = field(default=1_000_000, metadata={"help": "unlabeled candidates beside each label log"})
    keypath_cycles: int = field(default=60, metadata={"help": "labels per desk timing, with and without read-ahead"})
    keypath_training_labels: int = field(default=100_000,
                                         metadata={"help": "the label-log size also measured while training"})
    acq_labels: int = field(default=10_000, metadata={"help": "a/b labels the preference head is refitted on"})
    acq_pool: int = field(default=4096, metadata={"help": "candidate pairs one head selection ranks"})
    acq_head_labels: int = field(default=256, metadata={"help": "labels behind the head and dopt's H₀ when selecting"})

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.scoring_pairs < 1 or self.dpo_steps < 2 or self.dpo_rounds < 1:
            raise ValueError("repeats, scoring_pairs, dpo_rounds must be ≥ 1 and dpo_steps ≥ 2")

    @classmethod
    def full(cls) -> BenchSizes:
        """The sizes behind the numbers in README's Performance section."""
        return cls()

    @classmethod
    def quick(cls) -> BenchSizes:
        """Under two minutes on tiny-random: fewer pairs and repeats, 60 labels (the 1M store builds in ≈ 5 s)."""
        return cls(warmup=1, repeats=3, scoring_pairs=8, dpo_steps=2, dpo_rounds=2, entropy_prompts=4,
                   entropy_tokens=8, ui_labels=60, store_repeats=20, process_runs=3, memory_steps=2,
                   keypath_labels=(1_000, 10_000), keypath_pool=20_000, keypath_cycles=20,
                   keypath_training_labels=10_000)


@dataclass(frozen=True)
class BenchOptions:
    """What `apl bench` was asked for."""

    model: str = field(default="tiny-random", metadata={"help": "model spec (see apl_tui.models)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    cache_dir: Path = field(default=Path("store/cache"), metadata={"help": "converted models and tokenizers"})
    only: tuple[str, ...] = field(default=(), metadata={"help": "families to run; empty: all"})
    sizes: BenchSizes = field(default_factory=BenchSizes.full)
    seed: int = field(default=0, metadata={"help": "seed of the pairs, the adapter and sampling"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads; None: torch's default"})
    quick: bool = field(default=False, metadata={"help": "whether `sizes` is the quick preset (reported)"})

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")


def make_pairs(tokenizer: Any, n: int, *, seed: int) -> list[Pair]:
    """n IMDB-shaped pairs: a prompt of 8–16 words, two completions of 16–24 tokens each."""
    rng = random.Random(seed)

    def completion() -> str:
        words = [rng.choice(WORDS) for _ in range(40)]
        ids = tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"]
        return str(tokenizer.decode(ids[:rng.randint(16, 24)]))

    pairs = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize()
        pairs.append(Pair(prompt=prompt, chosen=completion(), rejected=completion()))
    return pairs


def load_policy(opts: BenchOptions) -> Policy:
    """The model under test, with a LoRA adapter made to differ from the reference (see below)."""
    from apl_tui.config import ModelConfig
    from apl_tui.policy import Policy

    policy = Policy.load(ModelConfig(spec=opts.model, device=opts.device), opts.cache_dir, seed=opts.seed)
    perturbed_adapter(policy, seed=opts.seed)
    return policy


def perturbed_adapter(policy: Policy, *, seed: int) -> None:
    """Give the policy a fresh LoRA adapter (r=8, α=16, q/v) whose B weights are small and random.

    A fresh adapter has B = 0 and scores exactly like the reference, which would hide a
    policy/reference mix-up in the comparisons; random B weights make the two differ.
    """
    import torch

    from apl_tui.config import LoraSettings

    policy.new_adapter(LoraSettings(r=8, alpha=16, dropout=0.0), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts that FLOP estimates need."""

    body: int
    """Parameters every token passes through (all but the embedding table and the LM head)."""
    head: int
    """LM-head parameters (vocab × hidden), applied only where logits are needed."""
    weights_bytes: int
    """Bytes of the base weights in memory (tied tensors counted once)."""


def model_size(base: Any) -> ModelSize:
    """Count a base model's parameters, leaving out LoRA layers and counting tied weights once."""
    seen: set[int] = set()
    total, nbytes = 0, 0
    for name, p in base.named_parameters(remove_duplicate=False):
        if id(p) in seen or "lora_" in name:
            continue
        seen.add(id(p))
        total += p.numel()
        nbytes += p.numel() * p.element_size()
    embed = base.get_input_embeddings().weight
    head = base.get_output_embeddings().weight
    body = total - embed.numel() - (0 if head is embed else head.numel())
    return ModelSize(body=body, head=head.numel(), weights_bytes=nbytes)


def forward_flops(size: ModelSize, tokens: int, logit_positions: int) -> float:
    """Useful FLOPs of one forward pass: 2·params per token through the body, 2·V·d per logit row.

    Counts the work any implementation must do (attention scores, O(T²), are ignored: sequences
    here are ~40 tokens); extra work such as logits nobody reads does not count.
    Example: body 1000 params, head 500, 10 tokens, 4 logit rows → 2·1000·10 + 2·500·4 = 24 000.
    """
    return 2.0 * size.body * tokens + 2.0 * size.head * logit_positions


class BenchContext:
    """Shared state of one bench run: options, and the policy and pairs, built on first use."""

    def __init__(self, opts: BenchOptions, *, log: Any = None) -> None:
        self.opts = opts
        self.sizes = opts.sizes
        self.log = log or (lambda message: None)
        """Progress lines (the CLI prints them to stderr)."""
        self._policy: Policy | None = None
        self._pairs: list[Pair] | None = None

    @property
    def policy(self) -> Policy:
        """The model under test (see `load_policy`); loaded once per run."""
        if self._policy is None:
            self.log(f"loading {self.opts.model} on {self.opts.device}")
            self._policy = load_policy(self.opts)
        return self._policy

    @property
    def device(self) -> str:
        """The torch device the policy runs on."""
        return self.policy.device

    @property
    def pairs(self) -> list[Pair]:
        """The benchmark's pool: `sizes.scoring_pairs` IMDB-shaped pairs."""
        if self._pairs is None:
            self._pairs = make_pairs(self.policy.tokenizer, self.sizes.scoring_pairs, seed=self.opts.seed)
        return self._pairs

    def size(self) -> ModelSize:
        """Parameter counts of the base model."""
        return model_size(self.policy.base)
