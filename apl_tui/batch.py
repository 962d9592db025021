"""Batch mode: the loop with an automatic oracle, and win-rate evaluation.

Everything resumable reads its position from the store: how many labels this oracle has given,
whether a round is due, which evaluations exist. Rerunning an interrupted command continues.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from apl_tui.engine import Engine
from apl_tui.errors import AplError, check_cancel
from apl_tui.eval_items import EvalItem
from apl_tui.events import EvalFinished, ProgressSink, StepProgressed, ignore


def verdict_outcome(shown: Any, verdict: Any) -> str:
    """Map an oracle verdict about (left, right) to the candidate's a/b; unparseable → skip."""
    if verdict.outcome == "a":
        return shown.outcome_for_side("left")
    if verdict.outcome == "b":
        return shown.outcome_for_side("right")
    if verdict.outcome == "tie":
        return "tie"
    return "skip"


def oracle_labels(engine: Engine, source: str) -> int:
    """Label events by this source that still count (undone ones do not)."""
    return engine.store.effective_label_count(source)


def run_loop(engine: Engine, oracle: Any, *, budget: int, sink: ProgressSink = ignore,
             cancel: threading.Event | None = None) -> dict[str, Any]:
    """Acquire, label with the oracle and train until `budget` labels exist for this oracle.

    Each round acquires until the next round is due (warm-up first, then round_size labels),
    labels them one by one (each committed), then trains. The last round trains on everything.
    """
    source = oracle.name
    desk, learner = engine.desk, engine.learner
    t0 = time.perf_counter()
    rounds = 0
    while True:
        check_cancel(cancel)
        done = oracle_labels(engine, source)
        due, since, need = desk.round_due()
        if due:
            if learner.train(sink, cancel):
                rounds += 1
            continue
        if done >= budget:
            break
        # Up to the next round; if it is overdue yet not due (only ties and skips so far, nothing
        # to learn from), another round's worth.
        batch = min(need - since if need > since else engine.config.loop.round_size, budget - done)
        learner.refill(sink, cancel, target=max(learner.pool_target(), batch))
        learner.score(sink, cancel)
        for i in range(batch):
            check_cancel(cancel)
            shown = desk.next_pair(source)
            if shown is None:
                raise AplError("the pool ran dry: no unlabeled pairs left",
                               hint="import more prompts (apl import) or allow relabeling prompts")
            verdict = oracle.judge(shown.prompt, shown.left_text, shown.right_text)
            desk.record_label(shown, verdict_outcome(shown, verdict), source=source,
                                rationale=verdict.rationale, sink=sink)
            sink(StepProgressed("labeling", done + i + 1, budget))
    # A final round on the last labels, so the budget's adapter exists.
    _, since, _ = desk.round_due()
    if since > 0 and engine.store.training_pairs():
        if learner.train(sink, cancel):
            rounds += 1
    return {"labels": oracle_labels(engine, source), "rounds": rounds, "seconds": time.perf_counter() - t0}


@dataclass(frozen=True)
class EvalSettings:
    """What makes two evaluations comparable (and cacheable)."""

    temperature: float
    max_new_tokens: int
    prompts: int
    seed: int

    def digest(self, prompt_ids: list[int]) -> str:
        raw = json.dumps({**self.__dict__, "ids": prompt_ids}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def evaluate(engine: Engine, oracle: Any, *, adapter_version: int | None = None, prompts: int | None = None,
             sink: ProgressSink = ignore, cancel: threading.Event | None = None, seed: int = 0,
             ref_cache: dict[str, str] | None = None) -> dict[str, Any]:
    """Win-rate of an adapter against the reference on the test split, judged blind by the oracle.

    `ref_cache` (key → text) shares the reference's completions between evaluations with the same
    settings: the reference model never changes, so they are generated once for a whole experiment.
    """
    store, cfg = engine.store, engine.config
    latest = store.latest_adapter()
    version = adapter_version if adapter_version is not None else (latest["version"] if latest else None)
    if version is None:
        raise AplError("no adapter to evaluate yet", hint="train a round first (apl train or apl run)")
    info = store.adapter(version)
    if info is None:
        raise AplError(f"no adapter v{version}", hint="see `apl stats` for the versions that exist")
    if info["retired"]:
        raise AplError(f"adapter v{version} is retired", hint="evaluate another version (see `apl stats`)")
    tests = store.test_prompts(prompts)
    if not tests:
        raise AplError("no test prompts", hint="apl import FILE --split test")
    settings = EvalSettings(cfg.generation.eval_temperature, cfg.generation.max_new_tokens, len(tests), seed)
    digest = settings.digest([i for i, _ in tests])
    cached = store.find_eval(version, oracle.name, digest)
    if cached is not None:
        return cached | {"cached": True}
    t0 = time.perf_counter()
    learner = engine.learner
    # Results judged by an interrupted run of this same evaluation: those chunks are not redone.
    judged = store.eval_results(version, oracle.name, digest)
    with learner.heavy_lock:
        policy = learner.load_policy(sink, cancel)
        policy.load_adapter(store.root / info["path"], version)
        try:
            rng = random.Random(seed)
            bs = cfg.generation.batch_size
            sink(StepProgressed("evaluating", sum(1 for i in range(len(tests)) if i in judged), len(tests)))
            for start in range(0, len(tests), bs):
                check_cancel(cancel)
                chunk = [t for _, t in tests[start:start + bs]]
                if all(start + i in judged for i in range(len(chunk))):
                    for _ in chunk:
                        rng.random()  # the same blind coins as an uninterrupted run
                    continue
                kw = dict(n=1, temperature=settings.temperature, top_p=1.0, min_new_tokens=0,
                          max_new_tokens=settings.max_new_tokens, seed=seed + start, batch_size=bs)
                mine = [g[0].text for g in policy.generate(chunk, adapter=True, **kw)]
                keys = [f"{digest}:{start + i}" for i in range(len(chunk))]
                if ref_cache is not None and all(k in ref_cache for k in keys):
                    ref = [ref_cache[k] for k in keys]
                else:
                    ref = [g[0].text for g in policy.generate(chunk, adapter=False, **kw)]
                    if ref_cache is not None:
                        ref_cache.update(zip(keys, ref))
                items = []
                for i, (prompt, m, r) in enumerate(zip(chunk, mine, ref)):
                    flip = rng.random() < 0.5  # blind: the oracle never knows which side is the policy
                    v = oracle.judge(prompt, r, m) if flip else oracle.judge(prompt, m, r)
                    won = {"a": not flip, "b": flip}.get(v.outcome)
                    result = "tie" if v.outcome == "tie" else "unparseable" if won is None else "win" if won else "loss"
                    items.append(EvalItem(start + i, tests[start + i][0], result, m, r))
                store.add_eval_items(version, oracle.name, digest, items)
                judged.update((it.idx, it.result) for it in items)
                sink(StepProgressed("evaluating", sum(1 for i in range(len(tests)) if i in judged), len(tests)))
        finally:
            learner.sync_adapter()
    results = [judged[i] for i in range(len(tests))]
    wins, losses, ties, bad = (results.count(r) for r in ("win", "loss", "tie", "unparseable"))
    decided = wins + losses
    rate = wins / decided if decided else None
    stderr = math.sqrt(rate * (1 - rate) / decided) if decided else None
    row = {"adapter_version": version, "oracle": oracle.name, "settings_hash": digest,
           "settings": json.dumps(settings.__dict__), "n": len(tests), "wins": wins, "losses": losses,
           "ties": ties, "unparseable": bad, "win_rate": rate, "stderr": stderr,
           "seconds": time.perf_counter() - t0}
    store.add_eval(row)
    if rate is not None:
        sink(EvalFinished(adapter_version=version, win_rate=rate, stderr=stderr or 0.0, n=decided))
    return row | {"cached": False}

