"""The policy: one causal LM, its tokenizer and (at most) one LoRA adapter.

The reference model π_ref is the same base weights with the adapter disabled, so there is only
ever one copy of the base weights. Every log-probability in the project (DPO training, certainty
scores, evaluation) comes from `Policy.sequence_logps_ids`, so they all agree on tokenization,
masking and EOS handling.

torch, transformers and peft are imported inside methods: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apl_tui.atomic import atomic_folder
from apl_tui.chat import decode_messages, render_chat
from apl_tui.config import GenerationConfig, LoraSettings, ModelConfig
from apl_tui.errors import ModelError, StoreError
from apl_tui.events import ModelLoaded, ProgressSink, ignore
from apl_tui.models import default_target_modules, load_model, resolve_device

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Seed offset between resampling attempts of identical twins in `generate_pairs`.
_RESAMPLE_SEED_STEP = 1_000_003


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
"""The weights file peft writes (safetensors) or may have written (older pickles)."""


def _looks_damaged(e: BaseException) -> bool:
    """Whether a load error says the files are cut or corrupt (rather than from another model)."""
    import json

    from safetensors import SafetensorError

    return isinstance(e, (SafetensorError, json.JSONDecodeError, EOFError)) or any(
        w in str(e).lower() for w in ("header", "incomplete", "truncat", "invalid load key", "unexpected end"))


def _strip_tuner_layers(model: Any) -> None:
    """Put the original modules back wherever peft wrapped one (after a failed load)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if getattr(parent, child, None) is module:
                setattr(parent, child, module.get_base_layer())
    model.__dict__.pop("peft_config", None)


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """Silence peft 0.21's use of transformers 5's deprecated `is_gradient_checkpointing` (not ours)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@dataclass(frozen=True)
class Sample:
    """One sampled completion.

    `token_ids` are the generated ids, including the final EOS id when `eos` is True (padding
    after EOS excluded). `logp` is Σ log p(token | prefix) over `token_ids` under the raw
    (temperature 1, unprocessed) distribution of the model that sampled it. `text` is the
    decoded completion without the EOS token.
    """

    text: str
    token_ids: list[int]
    logp: float
    eos: bool


class Policy:
    """A causal LM plus an optional LoRA adapter; adapter off is the reference model."""

    def __init__(self, model: Any, tokenizer: Any, *, cfg: ModelConfig, device: str, spec: str) -> None:
        self.base = model  # the transformers model; never wrapped twice
        self.model = model  # `base`, or a peft model wrapping it while an adapter is loaded
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = device
        self.spec = spec
        self.adapter_version = 0
        """The stored version of the loaded adapter; 0 = none (the reference) or not yet saved."""
        self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.packed_head: bool | None = None
        """Project only the completion positions, packed into one 2-D matmul (see `apl_tui.logps.padded_batch`).
        None: decide on first use (the packed path must match the model's own logits); False: the
        model's forward with `logits_to_keep` (the bench sets it to compare the two)."""
        self.shared_prefix: bool | None = None
        """Score the completions of one prompt on one prompt pass's key/value cache (`apl_tui.logps`).
        None: decide on first use; False: every row padded on its own (the bench compares the two)."""
        self._warned_long: set[str] = set()  # prompts already reported as cut: warn once each

    @classmethod
    def load(cls, cfg: ModelConfig, cache_dir: Path, *, seed: int = 0, sink: ProgressSink = ignore) -> Policy:
        """Load the model named by `cfg.spec` (see `apl_tui.models.load_model`)."""
        started = time.perf_counter()
        if cfg.threads > 0:
            import torch

            # torch's threads spin while waiting: more threads than free cores collapses
            # throughput (measured 60× on a tiny model with the other core busy).
            torch.set_num_threads(cfg.threads)
        device = resolve_device(cfg.device)
        model, tokenizer = load_model(cfg.spec, device, cache_dir, trust_remote_code=cfg.trust_remote_code,
                                      allow_download=cfg.allow_download,
                                      seed=seed, sink=sink)
        sink(ModelLoaded(spec=cfg.spec, device=device, seconds=time.perf_counter() - started))
        return cls(model, tokenizer, cfg=cfg, device=device, spec=cfg.spec)

    # --- tokenization -----------------------------------------------------------------------------

    def encode_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of prompts as the model sees them: chat template or raw text, cut from the left.

        Raw prompts get the tokenizer's special tokens (a BOS for Llama-likes). A prompt longer
        than `cfg.max_prompt_tokens` keeps its last tokens, with a logged warning (once per prompt:
        training and rescoring encode the same prompts again and again).
        """
        if not texts:
            return []
        template = getattr(self.tokenizer, "chat_template", None)
        conversations = [decode_messages(t) for t in texts]
        if any(c is not None for c in conversations) and not template:
            raise ModelError(f"chat prompts need a chat template, and {self.spec}'s tokenizer has none",
                             hint="use a chat (instruct) model, or import plain-text prompts")
        wrap = bool(self.cfg.use_chat_template and template)
        # Chat prompts always go through the template; plain ones only when the config asks.
        templated = [i for i, c in enumerate(conversations) if c is not None or wrap]
        raw = [i for i, c in enumerate(conversations) if not (c is not None or wrap)]
        encoded: list[list[int]] = [[] for _ in texts]
        if templated:
            rendered = [render_chat(self.tokenizer, conversations[i] or [{"role": "user", "content": texts[i]}],
                                    system_prompt=self.cfg.system_prompt) for i in templated]
            for i, ids in zip(templated, self.tokenizer(rendered, add_special_tokens=False)["input_ids"]):
                encoded[i] = ids
        if raw:  # one batched call each: tokenizing thousands of prompts one by one is slow
            for i, ids in zip(raw, self.tokenizer([texts[i] for i in raw])["input_ids"]):
                encoded[i] = ids
        limit = self.cfg.max_prompt_tokens
        out: list[list[int]] = []
        for text, ids in zip(texts, encoded):
            ids = list(ids)
            if not ids:
                # The first completion token needs something to condition on.
                start = self.tokenizer.bos_token_id
                ids = [start if start is not None else self.tokenizer.eos_token_id]
            if len(ids) > limit:
                if text not in self._warned_long:
                    self._warned_long.add(text)
                    logger.warning("prompt of %d tokens cut to its last %d (model.max_prompt_tokens): %.40r",
                                   len(ids), limit, text)
                ids = ids[-limit:]
            out.append(ids)
        return out

    def encode_completions(self, completions: Sequence[str], eos: Sequence[bool] | None = None) -> list[list[int]]:
        """Completion ids: `tokenizer(text, add_special_tokens=False)`, plus the EOS id where eos[i]."""
        if not completions:
            return []
        if eos is not None and len(eos) != len(completions):
            raise ValueError(f"{len(eos)} eos flags for {len(completions)} completions")
        encoded = self.tokenizer(list(completions), add_special_tokens=False)["input_ids"]
        flags = eos if eos is not None else [False] * len(completions)
        return [list(ids) + ([self.tokenizer.eos_token_id] if flag else []) for ids, flag in zip(encoded, flags)]

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad id lists: (input_ids, attention_mask), both (B, L) on the policy's device."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
                mask[i, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    # --- adapters ---------------------------------------------------------------------------------

    @property
    def has_adapter(self) -> bool:
        """True while a LoRA adapter is loaded (trained or not)."""
        return self.model is not self.base

    def _adapter(self, enabled: bool) -> contextlib.AbstractContextManager[Any]:
        """Context in which the model is the policy (enabled) or the reference (adapter off)."""
        if enabled or not self.has_adapter:
            return contextlib.nullcontext()
        return self.model.disable_adapter()

    def _rng(self, seed: int) -> contextlib.AbstractContextManager[Any]:
        """Seed torch inside a forked RNG, so the caller's global random state is untouched."""
        import torch

        @contextlib.contextmanager
        def forked() -> Iterator[None]:
            devices = [torch.cuda.current_device()] if self.device.startswith("cuda") else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                yield

        return forked()

    def new_adapter(self, lora: LoraSettings, *, seed: int) -> None:
        """Replace any adapter by a fresh LoRA one (B = 0, so it starts equal to the reference).

        `adapter_version` becomes 0 until the caller saves it with a version.
        """
        from peft import LoraConfig, get_peft_model

        self.drop_adapter()
        targets = list(lora.target_modules) or default_target_modules(self.base)
        # GPT-2's projections are Conv1D (weights stored transposed); peft wants to be told.
        conv1d = any(type(m).__name__ == "Conv1D" and name.rsplit(".", 1)[-1] in targets
                     for name, m in self.base.named_modules())
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=targets, bias="none", task_type="CAUSAL_LM", fan_in_fan_out=conv1d)
        with self._rng(seed), _quiet_peft():
            self.model = get_peft_model(self.base, config)
        self.model.eval()
        self.adapter_version = 0

    def drop_adapter(self) -> None:
        """Remove the adapter: the policy becomes the reference again (base weights untouched)."""
        if self.has_adapter:
            # unload() swaps the LoRA layers back for the original modules without merging.
            self.base = self.model.unload()
            # peft leaves its config on the base model; a later get_peft_model would warn about it.
            self.base.__dict__.pop("peft_config", None)
            self.model = self.base
        self.model.eval()
        self.adapter_version = 0

    def save_adapter(self, path: Path, version: int | None = None) -> None:
        """Write the adapter (peft safetensors) to `path` atomically; set `adapter_version` if given.

        The files go to a temporary sibling folder that is renamed into place, so a crash never
        leaves a half-written version (a `kill -9` leaves the hidden temporary folder, which the
        next `Store` open removes). A full disk or an unwritable folder is a StoreError.
        """
        if not self.has_adapter:
            raise ModelError("no adapter to save", hint="train a round first")
        try:
            with atomic_folder(Path(path)) as tmp:
                self.model.save_pretrained(tmp)
        except OSError as e:
            raise StoreError(f"cannot save adapter {path}: {e.strerror or e}",
                             hint="free some disk space (or fix the folder's permissions); "
                                  "nothing was recorded, and the round is redone on the next start") from e
        if version is not None:
            self.adapter_version = version

    def load_adapter(self, path: Path, version: int) -> None:
        """Load a saved adapter (trainable, for the continue regime) as `version`."""
        from peft import PeftModel

        path = Path(path)
        damaged = (f"restore adapters/v{version}, or retire it (apl adapter retire {version}) so the "
                   "previous version becomes current")
        if not (path / "adapter_config.json").is_file():
            raise ModelError(f"cannot load adapter v{version}: no adapter_config.json in {path}",
                             hint=f"the folder was moved or deleted: {damaged}")
        # Without a weights file peft would take the folder for a model-hub id and fail with
        # "Repo id must be in the form …": say what is actually wrong.
        if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
            raise ModelError(f"cannot load adapter v{version}: no weights file ({ADAPTER_WEIGHTS[0]}) in {path}",
                             hint=damaged)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self.drop_adapter()
        try:
            weights = path / ADAPTER_WEIGHTS[0]
            if weights.is_file():
                load_file(weights)  # a cut file fails here, before peft rewires the base model
            with _quiet_peft():
                self.model = PeftModel.from_pretrained(self.base, str(path), is_trainable=True)
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
            # peft injects the LoRA layers before it loads their weights: take them out again,
            # or the reference model would carry them from now on.
            _strip_tuner_layers(self.base)
            hint = (damaged if _looks_damaged(e)
                    else "was it trained on another base model? (model.spec in config.toml)")
            raise ModelError(f"cannot load adapter v{version} from {path}: {type(e).__name__}: {e}".splitlines()[0],
                             hint=hint) from e
        self.model.eval()
        self.adapter_version = version

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The adapter's parameters (the base weights are frozen by peft)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    # --- generation -------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], *, n: int, temperature: float, top_p: float = 1.0,
                 min_new_tokens: int = 0, max_new_tokens: int, seed: int, adapter: bool = True,
                 batch_size: int = 16) -> list[list[Sample]]:
        """Sample `n` completions per prompt; result[i] holds prompt i's n samples.

        Prompts go `batch_size` at a time (so `batch_size * n` sequences per call), left-padded.
        No top-k (HF would otherwise default to 50). `Sample.logp` comes from the raw logits of
        generation itself at temperature 1 (the entropy estimator's input), whatever `temperature`
        sampled the tokens. Deterministic for a given seed, batch_size and model.
        """
        import torch

        prompt_ids = self.encode_prompts(prompts)
        eos_id = self.tokenizer.eos_token_id
        results: list[list[Sample]] = []
        with self._adapter(adapter), torch.no_grad(), self._rng(seed):
            for start in range(0, len(prompt_ids), batch_size):
                rows = [ids for ids in prompt_ids[start:start + batch_size] for _ in range(n)]
                input_ids, mask = self._left_pad(rows)
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=mask, do_sample=True,
                    temperature=temperature, top_p=top_p, top_k=0, repetition_penalty=1.0,
                    min_new_tokens=min_new_tokens, max_new_tokens=max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos_id,
                    output_logits=True, return_dict_in_generate=True)
                new = out.sequences[:, input_ids.shape[1]:]  # (R, T)
                # Raw logits (out.logits), not processed scores: log-probs at T = 1. One step at a
                # time keeps memory at (R, V) instead of (R, T, V).
                step_logps = torch.stack([
                    torch.log_softmax(logits.float(), dim=-1).gather(-1, new[:, t:t + 1]).squeeze(-1)
                    for t, logits in enumerate(out.logits)], dim=1)  # (R, T)
                for r in range(0, len(rows), n):
                    results.append([self._sample(new[r + k], step_logps[r + k], eos_id) for k in range(n)])
        return results

    def _sample(self, tokens: torch.Tensor, logps: torch.Tensor, eos_id: int) -> Sample:
        """Cut one generated row at its first EOS (kept) and drop the padding after it."""
        ids = tokens.tolist()
        eos = eos_id in ids
        length = ids.index(eos_id) + 1 if eos else len(ids)
        ids = ids[:length]
        text = self.tokenizer.decode(ids[:-1] if eos else ids, skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)
        return Sample(text=text, token_ids=ids, logp=float(logps[:length].sum()), eos=eos)

    def generate_pairs(self, prompts: Sequence[str], gen: GenerationConfig, *, seed: int,
                       adapter: bool = True) -> list[tuple[Sample, Sample] | None]:
        """Two completions per prompt at `gen`'s settings; identical twins resampled twice, then None."""
        results: list[tuple[Sample, Sample] | None] = [None] * len(prompts)
        todo = list(range(len(prompts)))
        for attempt in range(3):
            if not todo:
                break
            samples = self.generate([prompts[i] for i in todo], n=2, temperature=gen.temperature,
                                    top_p=gen.top_p, min_new_tokens=gen.min_new_tokens,
                                    max_new_tokens=gen.max_new_tokens, seed=seed + attempt * _RESAMPLE_SEED_STEP,
                                    adapter=adapter, batch_size=gen.batch_size)
            again = []
            for i, (a, b) in zip(todo, samples):
                if a.text.strip() == b.text.strip():
                    again.append(i)  # a pair of twins teaches DPO nothing
                else:
                    results[i] = (a, b)
            todo = again
        if todo:
            logger.info("dropped %d prompts whose two completions stayed identical", len(todo))
        return results

    # --- log-probabilities ------------------------------------------------------------------------

    def sequence_logps(self, prompts: Sequence[str], completions: Sequence[str], eos: Sequence[bool] | None = None,
                       *, adapter: bool = True, grad: bool = False, batch_size: int = 16,
                       features: bool = False) -> Any:
        """log π(completion | prompt) per pair, shape (B,): see `sequence_logps_ids`.

        Prompts are encoded by `encode_prompts`; completions by `encode_completions` (EOS id
        appended where eos[i] is True, so its probability counts). features=True returns
        (logps (B,), φ (B, d)) from the same pass, φ as in `sequence_logps_ids`.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        return self.sequence_logps_ids(self.encode_prompts(prompts), self.encode_completions(completions, eos),
                                       adapter=adapter, grad=grad, batch_size=batch_size, features=features)

    def reference_logps(self, prompts: Sequence[str], completions: Sequence[str], eos: Sequence[bool] | None = None,
                        *, batch_size: int = 16) -> torch.Tensor:
        """`sequence_logps` under the reference model (adapter disabled)."""
        return self.sequence_logps(prompts, completions, eos, adapter=False, batch_size=batch_size)

    def sequence_logps_ids(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                           *, adapter: bool = True, grad: bool = False, batch_size: int = 16,
                           features: bool = False) -> Any:
        """Σ log p(c_t | prompt, c_<t) over each completion's tokens, shape (B,).

        features=True also returns φ (B, d): the last hidden state mean-pooled over the positions
        whose outputs predict the completion's tokens (those the log-prob sums over), taken from
        the same forward pass; zeros for an empty completion. The acquisition head's features.

        Prompt tokens and padding are excluded; no length normalisation; an empty completion
        scores 0. Without grad, rows that share a prompt with other rows run that prompt's body
        pass once and reuse its key/value cache; the rest (and every row with grad) are
        left-padded; both batch by length (less padding), see `apl_tui.logps`. Returned in the
        caller's order. grad=False: float32 on the CPU; grad=True: float32 on the model's device,
        attached to the graph (DPO).

        Example: prompt [5, 6], completion [7, 2] → log p(7 | 5 6) + log p(2 | 5 6 7).
        """
        import torch

        from apl_tui.logps import score

        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts for {len(completion_ids)} completions")
        if not prompt_ids:
            return (torch.zeros(0), torch.zeros(0, 0)) if features else torch.zeros(0)
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        with self._adapter(adapter), (torch.enable_grad() if grad else torch.no_grad()):
            return score(self, prompt_ids, completion_ids, grad=grad, batch_size=batch_size, features=features)

    def _use_packed_head(self) -> bool:
        """Whether the body + head split reproduces this model's logits (checked once, on a probe).

        Models that post-process logits (soft-capping, scaling) or have no `get_decoder` keep the
        model's own forward: the packed path would silently compute something else for them.
        """
        from apl_tui.logps import packed_head_works

        if self.packed_head is None:
            self.packed_head = packed_head_works(self)
        return self.packed_head
