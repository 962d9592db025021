"""Prequential accuracy on the tiny model: a consistent scripted labeler is learned, and it shows."""

from __future__ import annotations

import copy
import math
import random

from apl_tui import pool
from apl_tui.config import AplConfig
from apl_tui.engine import Engine
from apl_tui.evidence import evidence
from apl_tui.records import NewCandidate
from apl_tui.store import Store

PHRASES = ["a quiet triumph of a film", "dull and far too long", "the cast shines in every scene",
           "I walked out halfway", "warm funny and wise", "a mess from start to end", "pure joy on the big screen",
           "forgettable noise"]
"""Completions of the pool. A random model samples near-uniform tokens from 49k, which nothing
learns from a few dozen labels; pairs of recurring phrases (as an imported pool would have) give
DPO something to generalise to pairs it has not seen."""


def test_prequential_accuracy_rises_above_chance_for_a_consistent_labeler(tmp_path, tiny_model):
    from apl_tui.policy import Policy

    cfg = AplConfig().replace("model", spec="tiny-random", device="cpu", max_prompt_tokens=24)
    cfg = cfg.replace("acquisition", name="certainty", warmup_labels=8, control_share=0.25, chunk_size=64)
    cfg = cfg.replace("train", epochs=4, batch_size=4, warmup_steps=0)
    cfg = cfg.replace("loop", round_size=8, probe_share=0.0)
    store = Store.create(tmp_path / "s", cfg)
    store.add_prompts([f"The film number {i} was" for i in range(60)], split="train", source="t")
    rng = random.Random(0)
    store.add_candidates([NewCandidate(pid, *rng.sample(PHRASES, 2), adapter_version=0, temperature=0.7,
                                       top_p=1.0, max_new_tokens=24)
                          for pid, _ in store.sample_prompts(60, exclude_used=False)])
    model, tok = tiny_model
    engine = Engine(store, cfg, policy=Policy(copy.deepcopy(model), tok, cfg=cfg.model, device="cpu",
                                              spec="tiny-random"))
    pool.fill_reference(store, engine.learner.policy, cfg, sink=lambda e: None, cancel=None)
    for _ in range(3):  # warm-up, then two rounds whose pairs were ranked by v1 and v2
        engine.learner.score()
        for _ in range(8):
            shown = engine.desk.next_pair()
            c = store.candidates([shown.candidate_id])[0]
            # The scripted labeler's fixed rule: the completion the reference model finds likelier.
            engine.desk.record_label(shown, "a" if c["ref_logp_a"] > c["ref_logp_b"] else "b")
        engine.learner.train()
    ev = evidence(store.cursor())
    assert ev.unpredicted == 8 and ev.predicted == 16  # the warm-up round predicted nothing
    assert sorted(ev.by_adapter) == [1, 2]
    acc = ev.overall.accuracy
    assert acc.value > 0.5, ev.overall.text()
    assert ev.overall.log_loss.value < math.log(2), ev.overall.text()  # better than the warm-up coin
    assert ev.acquired.prequential.accuracy.n + ev.control.prequential.accuracy.n == 16
    store.close()
