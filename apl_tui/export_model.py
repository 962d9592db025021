"""Take a trained adapter out of the store: a PEFT folder, or a merged full model folder.

- PEFT: the adapter's own files (``adapter_config.json``, ``adapter_model.safetensors``), the
  tokenizer (with its chat template) and ``apl_adapter.json`` (version, base model, labels used).
  Load it with ``PeftModel.from_pretrained(base_model, DIR)``.
- merged (``--merge``): the base model with the LoRA update folded into its weights
  (``merge_and_unload``), saved with the tokenizer, so ``AutoModelForCausalLM.from_pretrained(DIR)``
  and ``AutoTokenizer.from_pretrained(DIR)`` load it with no peft and no apl-tui.

Both are written to a temporary sibling folder and renamed into place: a failure leaves nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from apl_tui.atomic import atomic_folder
from apl_tui.errors import AplError
from apl_tui.events import ProgressSink, ignore

logger = logging.getLogger(__name__)

INFO_FILE = "apl_adapter.json"


def _adapter_row(store: Any, version: int) -> dict[str, Any]:
    row = store.adapter(version)
    if row is None:
        versions = store.adapter_versions()
        raise AplError(f"no adapter v{version} in {store.root}",
                       hint=f"this store has {', '.join(f'v{v}' for v in versions)} (apl stats lists them)"
                       if versions else "train a round first: apl train")
    if not (store.root / row["path"] / "adapter_config.json").is_file():
        raise AplError(f"adapter v{version}'s files are missing at {store.root / row['path']}",
                       hint="the adapters folder was moved or deleted")
    return row


def _check_dest(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AplError(f"{dest} exists and is not an empty folder", hint="give a new folder")


def base_model_reference(spec: str, cache_dir: Path) -> str:
    """What `base_model_name_or_path` should say: a folder or hub id another tool can load.

    The embedded SmolLM2 points at its converted safetensors cache; the tiny random test model is
    built in code and has no folder, so it keeps its spec.
    """
    from apl_tui.models import SMOLLM2_SPEC, TINY_SPEC

    if spec == SMOLLM2_SPEC:
        return str((Path(cache_dir) / "models" / SMOLLM2_SPEC).resolve())
    if spec == TINY_SPEC:
        return spec
    local = Path(spec).expanduser()
    return str(local.resolve()) if local.is_dir() else spec


def export_adapter(store: Any, version: int, dest: Path, *, merge: bool, cache_dir: Path,
                   sink: ProgressSink = ignore) -> dict[str, Any]:
    """Write adapter `version` of `store` to `dest` (PEFT, or merged with `merge`); returns its info.

    Raises AplError, before writing anything, for a version that does not exist or a `dest` that
    is not a new or empty folder.
    """
    dest = Path(dest)
    row = _adapter_row(store, version)
    _check_dest(dest)
    cfg = store.load_config()
    src = store.root / row["path"]
    info = {"version": version, "base_model": cfg.model.spec,
            "base_model_name_or_path": base_model_reference(cfg.model.spec, cache_dir),
            "merged": merge, "retired": bool(row.get("retired")), "parent": row["parent"],
            "labels_used": row["labels_used"],
            "label_hash": row["label_hash"], "regime": row["regime"],
            "metrics": json.loads(row["metrics"]) if isinstance(row["metrics"], str) else row["metrics"],
            "created_at": str(row["created_at"])}
    with atomic_folder(dest) as tmp:  # an empty `dest` is replaced; anything else was refused above
        if merge:
            _write_merged(cfg, src, version, tmp, cache_dir, sink)
        else:
            _write_peft(cfg, src, tmp, cache_dir, info["base_model_name_or_path"])
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    logger.info("exported adapter v%d to %s (%s)", version, dest, "merged" if merge else "peft")
    return info


def _write_peft(cfg: Any, src: Path, tmp: Path, cache_dir: Path, base_ref: str) -> None:
    from apl_tui.models import load_tokenizer

    for item in src.iterdir():
        if item.is_file():
            shutil.copy2(item, tmp / item.name)
    config_path = tmp / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # peft records whatever path the base was loaded from (a cache, or nothing for a model built
    # in code); point it at something another process can load.
    config["base_model_name_or_path"] = base_ref
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tokenizer, _ = load_tokenizer(cfg.model.spec, cache_dir, trust_remote_code=cfg.model.trust_remote_code)
    tokenizer.save_pretrained(tmp)


def _write_merged(cfg: Any, src: Path, version: int, tmp: Path, cache_dir: Path, sink: ProgressSink) -> None:
    from apl_tui.policy import Policy

    # The same seed the engine loads with: the tiny random base is rebuilt from it.
    policy = Policy.load(cfg.model, cache_dir, seed=cfg.train.seed, sink=sink)
    policy.load_adapter(src, version)
    merged = policy.model.merge_and_unload()
    merged.save_pretrained(tmp)
    policy.tokenizer.save_pretrained(tmp)
