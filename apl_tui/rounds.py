"""One training round: pick the labels, train DPO on the adapter, save version N atomically.

A round either finishes completely (adapter files renamed into place, then one transaction
recording the version and its step metrics) or leaves no trace, so an interrupted round is
simply redone on the next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import random
import shutil
import threading
from collections.abc import Callable
from typing import Any

from apl_tui.config import AplConfig
from apl_tui.errors import Cancelled, TrainingDiverged
from apl_tui.events import ProgressSink, RoundTrained, TrainStepDone
from apl_tui.records import AdapterInfo, Pair
from apl_tui.store import Store

logger = logging.getLogger(__name__)


def label_hash(label_ids: list[int]) -> str:
    """A stable fingerprint of the label set a round trained on."""
    return hashlib.sha256(",".join(map(str, sorted(label_ids))).encode()).hexdigest()[:16]


def _as_pair(row: dict[str, Any]) -> tuple[Pair, float, float]:
    a_wins = row["outcome"] == "a"
    pair = Pair(prompt=row["prompt"],
                chosen=row["completion_a"] if a_wins else row["completion_b"],
                rejected=row["completion_b"] if a_wins else row["completion_a"],
                candidate_id=int(row["candidate_id"]),
                chosen_eos=bool(row["eos_a"] if a_wins else row["eos_b"]),
                rejected_eos=bool(row["eos_b"] if a_wins else row["eos_a"]))
    ref_c = row["ref_logp_a"] if a_wins else row["ref_logp_b"]
    ref_r = row["ref_logp_b"] if a_wins else row["ref_logp_a"]
    return pair, float(ref_c), float(ref_r)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("apl-tui", "torch", "transformers", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def train_round(store: Store, policy: Any, cfg: AplConfig, *, label_clock: int, sink: ProgressSink,
                cancel: threading.Event | None,
                between_steps: Callable[[], None] | None = None) -> AdapterInfo | None:
    """Train the next adapter version on the store's labels; None when there is nothing to learn.

    `between_steps` runs after every optimizer step (the labeling app tops up the pool there).
    The manifest records the newest label id at the start (`label_watermark`): labels after it
    count toward the next round.
    """
    from apl_tui.dpo import adapter_is_finite, train_dpo

    label_watermark = store.label_watermark()

    rows = store.training_pairs()
    if not rows:
        return None
    latest = store.latest_adapter()
    t = cfg.train
    version = store.next_adapter_version()
    regime = t.regime if latest is not None else "reset"
    if regime == "continue":
        seen = set(json.loads(latest["manifest"]).get("label_ids", []))  # type: ignore[index]
        new = [r for r in rows if r["label_id"] not in seen]
        old = [r for r in rows if r["label_id"] in seen]
        replay = random.Random(t.seed + version).sample(old, min(t.replay, len(old)))
        used = new + replay
        sync_adapter(store, policy)  # train the latest version further
    else:
        used = rows
        policy.new_adapter(cfg.lora, seed=t.seed + version)
    pairs, ref_c, ref_r = zip(*(_as_pair(r) for r in used))
    # Say at once that a round started: building the adapter and the first step take seconds.
    per_epoch = math.ceil(len(pairs) / (t.batch_size * t.grad_accum))
    sink(TrainStepDone(step=0, total=per_epoch * t.epochs))
    try:
        steps = train_dpo(policy, list(pairs), list(ref_c), list(ref_r), t, sink=sink, cancel=cancel,
                          on_step=None if between_steps is None else lambda _step, _metrics: between_steps())
    except (Cancelled, KeyboardInterrupt, TrainingDiverged):
        policy.drop_adapter()  # the half-trained one; the recorded one comes back
        sync_adapter(store, policy)
        raise
    final = {k: float(v) for k, v in steps[-1].items()} if steps else {}
    if not adapter_is_finite(policy):
        # A NaN adapter recorded as the latest would break every later run: never save one.
        policy.drop_adapter()
        sync_adapter(store, policy)
        raise TrainingDiverged(f"round v{version} diverged: the adapter's weights are not finite "
                               f"(final loss {final.get('loss', float('nan')):.4g}); nothing was saved",
                               hint="lower train.learning_rate or train.beta in config.toml, then run again")
    rel = f"adapters/v{version}"
    target = store.root / rel
    shutil.rmtree(target, ignore_errors=True)  # a leftover of a crashed save, never recorded
    try:
        policy.save_adapter(target, version=version)
    except BaseException:  # e.g. a full disk: the unsaved adapter must not pass for the recorded one
        policy.drop_adapter()
        sync_adapter(store, policy)
        raise
    ids = [int(r["label_id"]) for r in rows]
    manifest = {"label_ids": sorted(ids), "trained_on": sorted(int(r["label_id"]) for r in used),
                "label_clock": label_clock, "label_watermark": label_watermark, "seed": t.seed + version,
                "model": cfg.model.spec,
                "versions": _versions()}
    info = AdapterInfo(version=version, parent=latest["version"] if latest else None, labels_used=len(used),
                       label_hash=label_hash(ids), path=rel, metrics=final)
    store.add_adapter(version=version, parent=info.parent, labels_used=len(used), label_hash=info.label_hash,
                      regime=regime, path=rel, config=cfg.to_dict(), metrics=final, manifest=manifest,
                      steps=steps)
    sink(RoundTrained(adapter_version=version, labels_used=len(used), metrics=final))
    logger.info("trained adapter v%d on %d pairs", version, len(used))
    return info


def sync_adapter(store: Store, policy: Any) -> None:
    """Make the policy carry the store's latest recorded adapter, or none.

    Used on load, by experiments sharing one policy across stores, after an evaluation of an older
    version, and after a cancelled round (whose half-trained adapter is dropped).
    """
    latest = store.latest_adapter()
    if latest is None:
        policy.drop_adapter()
    elif policy.adapter_version != latest["version"] or not policy.has_adapter:
        policy.load_adapter(store.root / latest["path"], int(latest["version"]))
