"""Settings as frozen dataclasses, loaded from a store's `config.toml`.

Each section validates itself in `__post_init__`, so a bad value fails when the file is read,
with the field's name in the message, not deep inside a training round.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apl_tui.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m"
ACQUISITIONS = ("random", "entropy", "certainty", "uncertainty", "hybrid")
LOSSES = ("sigmoid", "ipo", "robust")
REGIMES = ("reset", "continue")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _check(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"setting {name} {why}", hint="fix it in config.toml or on the command line")


@dataclass(frozen=True)
class ModelConfig:
    """Which model is the policy, and how prompts are shown to it."""

    spec: str = field(default=DEFAULT_MODEL, metadata=_help(
        "Hugging Face id, local folder, 'smollm2-135m' (embedded) or 'tiny-random'"))
    device: str = field(default="auto", metadata=_help("auto, cpu or cuda"))
    system_prompt: str = field(default="", metadata=_help("system turn for chat templates; empty keeps prompts short"))
    use_chat_template: bool = field(default=False, metadata=_help(
        "wrap prompts in the tokenizer's chat template (off: continue the raw text, the IMDB task)"))
    max_prompt_tokens: int = field(default=64, metadata=_help("longer prompts are cut from the left, with a warning"))
    trust_remote_code: bool = field(default=False, metadata=_help("allow model code from the model folder"))
    threads: int = field(default=0, metadata=_help(
        "CPU threads for torch; 0: all cores in batch commands, all but one in the labeling app"))

    def __post_init__(self) -> None:
        _check(self.device in ("auto", "cpu", "cuda"), "model.device", "must be auto, cpu or cuda")
        _check(self.threads >= 0, "model.threads", "must be 0 (auto) or more")
        _check(self.max_prompt_tokens >= 1, "model.max_prompt_tokens", "must be at least 1")


@dataclass(frozen=True)
class GenerationConfig:
    """How pool completions are sampled (the paper: T = 0.7, 16–24 tokens on IMDB)."""

    temperature: float = field(default=0.7, metadata=_help("sampling temperature for pool pairs"))
    top_p: float = field(default=1.0, metadata=_help("nucleus sampling mass"))
    min_new_tokens: int = field(default=16, metadata=_help("shortest completion in tokens"))
    max_new_tokens: int = field(default=24, metadata=_help("longest completion in tokens"))
    batch_size: int = field(default=16, metadata=_help("prompts per generate call"))
    eval_temperature: float = field(default=0.25, metadata=_help("temperature for win-rate evaluation"))

    def __post_init__(self) -> None:
        _check(self.temperature > 0, "generation.temperature", "must be positive")
        _check(0 < self.top_p <= 1, "generation.top_p", "must be in (0, 1]")
        _check(0 <= self.min_new_tokens <= self.max_new_tokens, "generation.min_new_tokens",
               "must be between 0 and max_new_tokens")
        _check(self.batch_size >= 1, "generation.batch_size", "must be at least 1")


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA adapter trained by DPO; target modules default per architecture."""

    r: int = field(default=8, metadata=_help("LoRA rank"))
    alpha: int = field(default=16, metadata=_help("LoRA scaling numerator"))
    dropout: float = field(default=0.0, metadata=_help("LoRA dropout (0 keeps log-probs deterministic)"))
    target_modules: tuple[str, ...] = field(default=(), metadata=_help("empty: q_proj, v_proj or the architecture's equivalent"))

    def __post_init__(self) -> None:
        _check(self.r >= 1, "lora.r", "must be at least 1")
        _check(0 <= self.dropout < 1, "lora.dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """DPO with LoRA. β = 0.1 is TRL's default; the paper used 0.2."""

    beta: float = field(default=0.1, metadata=_help("DPO temperature β"))
    loss: str = field(default="sigmoid", metadata=_help("sigmoid (DPO), ipo or robust"))
    label_smoothing: float = field(default=0.0, metadata=_help("ε for the robust loss"))
    regime: str = field(default="reset", metadata=_help(
        "reset: fresh adapter on all labels each round (the paper); continue: train on new labels plus replay"))
    epochs: int = field(default=4, metadata=_help("epochs over the training labels per round"))
    learning_rate: float = field(default=2e-3, metadata=_help(
        "AdamW learning rate (2e-3 with 4 epochs moved SmolLM2 on IMDB within 64 labels; 5e-4 with 3 did not)"))
    batch_size: int = field(default=8, metadata=_help("pairs per micro-batch"))
    grad_accum: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    warmup_steps: int = field(default=2, metadata=_help("linear learning-rate warm-up steps"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    replay: int = field(default=16, metadata=_help("old labels replayed per round in the continue regime"))
    patience: int = field(default=0, metadata=_help("stop a round when the loss average has not improved for this many epochs (0: off)"))
    seed: int = field(default=0, metadata=_help("seed for adapter init and batch order"))

    def __post_init__(self) -> None:
        _check(self.beta > 0, "train.beta", "must be positive")
        _check(self.loss in LOSSES, "train.loss", f"must be one of {', '.join(LOSSES)}")
        _check(self.regime in REGIMES, "train.regime", f"must be one of {', '.join(REGIMES)}")
        _check(0 <= self.label_smoothing < 0.5, "train.label_smoothing", "must be in [0, 0.5)")
        _check(self.epochs >= 1, "train.epochs", "must be at least 1")
        _check(self.learning_rate > 0, "train.learning_rate", "must be positive")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "train.batch_size", "and grad_accum must be at least 1")


@dataclass(frozen=True)
class AcquisitionConfig:
    """Which pair is worth a label. The paper's IMDB values: F_e = 8, F_c = 32, N = 8."""

    name: str = field(default="hybrid", metadata=_help("random, entropy, certainty, uncertainty or hybrid"))
    entropy_samples: int = field(default=4, metadata=_help("N samples per prompt for the entropy estimate (paper: 8)"))
    entropy_per_token: bool = field(default=False, metadata=_help("normalise entropy by completion length"))
    entropy_max_new_tokens: int = field(default=16, metadata=_help("horizon of the entropy samples"))
    entropy_factor: int = field(default=2, metadata=_help("F_e: prompts scored by entropy per kept prompt (paper: 8)"))
    certainty_factor: int = field(default=2, metadata=_help("F_c: pairs generated per acquired pair (paper: 32)"))
    warmup_labels: int = field(default=16, metadata=_help("labels acquired at random before the first adapter"))
    control_share: float = field(default=0.1, metadata=_help("share of shown pairs drawn at random and flagged"))
    pool_size: int = field(default=32, metadata=_help("unlabeled pairs kept ready"))
    low_water: int = field(default=8, metadata=_help("refill the pool below this many unlabeled pairs"))
    chunk_size: int = field(default=32, metadata=_help("pairs per committed rescoring chunk"))
    allow_relabel_prompts: bool = field(default=False, metadata=_help("acquire prompts that already have a label"))

    def __post_init__(self) -> None:
        _check(self.name in ACQUISITIONS, "acquisition.name", f"must be one of {', '.join(ACQUISITIONS)}")
        _check(self.entropy_samples >= 1, "acquisition.entropy_samples", "must be at least 1")
        _check(self.entropy_factor >= 1 and self.certainty_factor >= 1, "acquisition.entropy_factor",
               "and certainty_factor must be at least 1")
        _check(0 <= self.control_share <= 1, "acquisition.control_share", "must be in [0, 1]")
        _check(self.pool_size >= 1 and 0 <= self.low_water <= self.pool_size, "acquisition.low_water",
               "must be between 0 and pool_size")


@dataclass(frozen=True)
class LoopConfig:
    """The active-learning loop: when rounds happen."""

    round_size: int = field(default=16, metadata=_help("new labels that trigger a training round (paper: 128)"))
    seed: int = field(default=0, metadata=_help("seed for the loop's random choices"))
    reveal: str = field(default="after", metadata=_help("show 'why this pair' after the label or always"))

    def __post_init__(self) -> None:
        _check(self.round_size >= 1, "loop.round_size", "must be at least 1")
        _check(self.reveal in ("after", "always"), "loop.reveal", "must be after or always")


@dataclass(frozen=True)
class AplConfig:
    """All settings of one store."""

    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def replace(self, section: str, **changes: Any) -> AplConfig:
        """A copy with some fields of one section changed (validated again)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), for JSON manifests and TOML files."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AplConfig:
        """Build from nested dicts, rejecting unknown sections and keys by name."""
        sections: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = data.get(f.name, {})
            if not isinstance(raw, dict):
                raise ConfigError(f"[{f.name}] must be a table", hint="see examples/config.toml")
            kind = f.default_factory  # type: ignore[misc]
            known = {g.name for g in dataclasses.fields(kind)}
            unknown = sorted(set(raw) - known)
            if unknown:
                raise ConfigError(f"unknown setting {f.name}.{unknown[0]}",
                                  hint=f"known in [{f.name}]: {', '.join(sorted(known))}")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
            try:
                sections[f.name] = kind(**values)
            except TypeError as e:
                raise ConfigError(f"bad value in [{f.name}]: {e}", hint="see examples/config.toml") from e
        unknown_sections = sorted(set(data) - set(sections))
        if unknown_sections:
            raise ConfigError(f"unknown section [{unknown_sections[0]}]",
                              hint=f"sections: {', '.join(sections)}")
        return cls(**sections)

    @classmethod
    def load(cls, path: Path) -> AplConfig:
        """Read a TOML file; a missing file gives the defaults."""
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: {e}", hint="fix the TOML syntax") from e
        return cls.from_dict(data)

    def dump(self, path: Path) -> None:
        """Write as TOML (flat types only, so a tiny writer suffices)."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        path.write_text("\n".join(lines), encoding="utf-8")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
