"""Batch mode: the loop with an automatic oracle, and win-rate evaluation.

Everything resumable reads its position from the store: how many labels this oracle has given,
whether a round is due, which evaluations exist. Rerunning an interrupted command continues.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from apl_tui.engine import Engine
from apl_tui.errors import AplError, check_cancel
from apl_tui.eval_items import EvalItem
from apl_tui.eval_report import GUARD_PROMPTS
from apl_tui.events import EvalFinished, ProgressSink, StepProgressed, ignore

logger = logging.getLogger(__name__)


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


KL_SEED_OFFSET = 1_000_003
"""Added to a chunk's sampling seed for its KL sample: apart from every chunk's evaluation seed."""


def evaluate(engine: Engine, oracle: Any, *, adapter_version: int | None = None, prompts: int | None = None,
             guard_prompts: int = GUARD_PROMPTS, sink: ProgressSink = ignore, cancel: threading.Event | None = None,
             seed: int = 0, ref_cache: dict[str, str] | None = None) -> dict[str, Any]:
    """Win-rate of an adapter against the reference on the test split, judged blind by the oracle.

    Beside it, measured as experiments measure them (apl_tui/evaluation.py): KL to the reference
    and prompt relevance (PMI) on the first `guard_prompts` test prompts, and the quality guards on
    every completion. Per-prompt results and measures are saved chunk by chunk, so a rerun
    continues; a finished evaluation without the measures (older rows) gets them on a rerun
    without judging again. `ref_cache` (key → text, and "key:eos" → "1"/"0" for PMI) shares the
    reference's completions between evaluations with the same settings: the reference model never
    changes, so they are generated once for a whole experiment.
    """
    from apl_tui.evaluation import adapter_measures

    if guard_prompts < 0:
        raise AplError(f"guard prompts must be 0 or more (got {guard_prompts})",
                       hint="e.g. --guard-prompts 50, or 0 to skip KL and PMI")
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
    g = min(guard_prompts, len(tests))
    settings = EvalSettings(cfg.generation.eval_temperature, cfg.generation.max_new_tokens, len(tests), seed)
    digest = settings.digest([i for i, _ in tests])
    cached = store.find_eval(version, oracle.name, digest)
    if cached is not None and cached.get("guard_prompts") is not None and g in (0, cached["guard_prompts"]):
        return cached | {"cached": True}
    t0 = time.perf_counter()
    # Items of an interrupted (or older) run of this same evaluation: judged ones are not judged again.
    done = store.eval_items(version, oracle.name, digest)
    bs = cfg.generation.batch_size
    chunks = [list(range(start, min(start + bs, len(tests)))) for start in range(0, len(tests), bs)]
    todo = [c[0] for c in chunks if any(i not in done or (i < g and done[i].kl is None) for i in c)]
    if todo:  # else everything is in the store: no model to load
        _run_chunks(engine, oracle, version, info["path"], tests, chunks, set(todo), done, g=g, settings=settings,
                    digest=digest, seed=seed, sink=sink, cancel=cancel, ref_cache=ref_cache)
    items = [done[i] for i in range(len(tests))]
    results = [it.result for it in items]
    wins, losses, ties, bad = (results.count(r) for r in ("win", "loss", "tie", "unparseable"))
    decided = wins + losses
    rate = wins / decided if decided else None
    stderr = math.sqrt(rate * (1 - rate) / decided) if decided else None
    measures = adapter_measures([t for _, t in tests], [it.policy_text or "" for it in items],
                                [it.reference_text or "" for it in items],
                                kl=[it.kl for it in items[:g] if it.kl is not None],
                                pmi=[it.pmi for it in items[:g] if it.pmi is not None],
                                pmi_ref=[it.pmi_ref for it in items[:g] if it.pmi_ref is not None])
    seconds = time.perf_counter() - t0 + ((cached or {}).get("seconds") or 0.0)
    row = {"adapter_version": version, "oracle": oracle.name, "settings_hash": digest,
           "settings": json.dumps(settings.__dict__), "n": len(tests), "wins": wins, "losses": losses,
           "ties": ties, "unparseable": bad, "win_rate": rate, "stderr": stderr, "seconds": seconds,
           **asdict(measures)}
    store.add_eval(row)
    if rate is not None:
        sink(EvalFinished(adapter_version=version, win_rate=rate, stderr=stderr or 0.0, n=decided))
    return row | {"cached": False}


def _run_chunks(engine: Engine, oracle: Any, version: int, path: str, tests: list[tuple[int, str]],
                chunks: list[list[int]], todo: set[int], done: dict[int, EvalItem], *, g: int,
                settings: EvalSettings, digest: str, seed: int, sink: ProgressSink,
                cancel: threading.Event | None, ref_cache: dict[str, str] | None) -> None:
    """Generate, judge and measure the chunks in `todo`, each chunk saved as it finishes (into `done` too)."""
    from apl_tui.evaluation import kl_to_reference, pmi_under_reference

    store, learner, bs = engine.store, engine.learner, engine.config.generation.batch_size
    with learner.heavy_lock:
        policy = learner.load_policy(sink, cancel)
        policy.load_adapter(store.root / path, version)
        try:
            rng = random.Random(seed)
            sink(StepProgressed("evaluating", sum(1 for i in range(len(tests)) if i in done), len(tests)))
            for idx in chunks:
                check_cancel(cancel)
                # The same blind coins as an uninterrupted run, whichever chunks are skipped.
                flips = [rng.random() < 0.5 for _ in idx]
                start = idx[0]
                if start not in todo:
                    continue
                chunk = [tests[i][1] for i in idx]
                kw = dict(n=1, temperature=settings.temperature, top_p=1.0, min_new_tokens=0,
                          max_new_tokens=settings.max_new_tokens, seed=seed + start, batch_size=bs)
                mine = [(s[0].text, s[0].eos) for s in policy.generate(chunk, adapter=True, **kw)]
                keys = [f"{digest}:{i}" for i in idx]
                need = keys + [f"{k}:eos" for k in keys] if start < g else keys
                if ref_cache is not None and all(k in ref_cache for k in need):
                    ref = [(ref_cache[k], ref_cache.get(f"{k}:eos") == "1") for k in keys]
                else:
                    ref = [(s[0].text, s[0].eos) for s in policy.generate(chunk, adapter=False, **kw)]
                    if ref_cache is not None:
                        ref_cache.update(zip(keys, (t for t, _ in ref)))
                        ref_cache.update((f"{k}:eos", "1" if e else "0") for k, (_, e) in zip(keys, ref))
                m = sum(1 for i in idx if i < g)  # the first g prompts get KL and PMI
                kl = kl_to_reference(policy, chunk[:m], max_new_tokens=settings.max_new_tokens,
                                     seed=seed + start + KL_SEED_OFFSET, batch_size=bs) if m else []
                pmi = pmi_under_reference(policy, chunk[:m], [t for t, _ in mine[:m]], [e for _, e in mine[:m]],
                                          batch_size=bs) if m else []
                pmi_ref = pmi_under_reference(policy, chunk[:m], [t for t, _ in ref[:m]], [e for _, e in ref[:m]],
                                              batch_size=bs) if m else []
                items = []
                for k, (i, prompt, (mt, _), (rt, _), flip) in enumerate(zip(idx, chunk, mine, ref, flips)):
                    if i in done:  # judged before (only the measures were missing): keep its verdict and texts
                        if (mt, rt) != (done[i].policy_text, done[i].reference_text):
                            logger.warning("evaluation item %d came out differently this time (another library "
                                           "version?): its KL and PMI describe the new completions", i)
                        result, mt, rt = done[i].result, done[i].policy_text, done[i].reference_text
                    else:
                        v = oracle.judge(prompt, rt, mt) if flip else oracle.judge(prompt, mt, rt)
                        won = {"a": not flip, "b": flip}.get(v.outcome)
                        result = ("tie" if v.outcome == "tie" else "unparseable" if won is None
                                  else "win" if won else "loss")
                    items.append(EvalItem(i, tests[i][0], result, mt, rt, *((kl[k], pmi[k], pmi_ref[k]) if k < m
                                                                             else (None, None, None))))
                store.add_eval_items(version, oracle.name, digest, items)
                done.update((it.idx, it) for it in items)
                sink(StepProgressed("evaluating", sum(1 for i in range(len(tests)) if i in done), len(tests)))
        finally:
            learner.sync_adapter()
