"""The loop's logic with a fake policy: hybrid selection, warm start, staleness, control arm."""

from __future__ import annotations

import pytest

from apl_tui import pool
from apl_tui.config import AplConfig
from apl_tui.engine import Engine
from apl_tui.events import PoolGenerated
from apl_tui.store import Store
from tests.fakes import FakePolicy


def _config(**acq) -> AplConfig:
    cfg = AplConfig().replace("acquisition", **({"name": "hybrid", "entropy_factor": 3, "certainty_factor": 2,
                                                  "pool_size": 4, "low_water": 1, "control_share": 0.0} | acq))
    return cfg.replace("loop", round_size=4)


def _store(tmp_path, n=30) -> Store:
    store = Store.create(tmp_path)
    store.add_prompts([f"train prompt {i}" for i in range(n)], split="train", source="t")
    return store


def test_hybrid_keeps_the_highest_entropy_prompts(tmp_path):
    store, policy = _store(tmp_path), FakePolicy()
    cfg = _config()
    events = []
    added = pool.refill(store, policy, cfg, target=4, seed=1, sink=events.append, cancel=None)
    assert added == 4 and any(isinstance(e, PoolGenerated) for e in events)
    scored = sorted(policy.entropy_prompts, key=FakePolicy.entropy_of, reverse=True)
    assert len(scored) == 12  # F_e × needed prompts were entropy-scored
    assert sorted(policy.generated) == sorted(scored[:4])
    entropies = [c["entropy"] for c in store.candidates()]
    assert sorted(entropies, reverse=True) == [FakePolicy.entropy_of(p) for p in scored[:4]]


def test_warm_start_then_certainty_picks_the_largest_margin(tmp_path):
    store, policy = _store(tmp_path), FakePolicy()
    engine = Engine(store, _config(), policy=policy)
    engine.learner.refill(target=6)
    engine.learner.score()
    rows = store.query("SELECT DISTINCT fallback FROM scores")[1]
    assert rows and all(r[0] and r[0].startswith("warm-up") for r in rows)
    # pretend a round happened: adapter v1 exists; the next rescore is real certainty
    policy.adapter_version = 1
    engine.learner.score()
    cands = store.candidates()
    beta = engine.config.train.beta
    margin = {c["id"]: beta * abs(len(c["completion_a"]) % 7 - len(c["completion_b"]) % 7) for c in cands}
    best = engine.desk.next_pair()
    assert best.scored_by == 1 and best.fallback is None
    assert len(set(margin.values())) > 2
    assert best.score == pytest.approx(max(margin.values()))
    assert margin[best.candidate_id] == pytest.approx(best.score)


def test_next_pair_resumes_the_pending_pair_and_records_position(tmp_path):
    store, policy = _store(tmp_path), FakePolicy()
    engine = Engine(store, _config(), policy=policy)
    engine.learner.refill(target=4)
    engine.learner.score()
    first = engine.desk.next_pair()
    again = Engine(store, _config(), policy=policy).desk.next_pair()
    assert again == first  # shown but unlabeled: the same pair, same side
    engine.desk.record_label(first, first.outcome_for_side("left"), latency_ms=900)
    row = store.query("SELECT outcome, shown_left, latency_ms FROM labels")[1][0]
    assert row == (first.left, first.left, 900)
    assert engine.desk.next_pair().candidate_id != first.candidate_id


def test_control_arm_share_and_flag(tmp_path):
    store, policy = _store(tmp_path, n=200), FakePolicy()
    engine = Engine(store, _config(control_share=0.3, pool_size=120), policy=policy)
    engine.learner.refill(target=120)
    engine.learner.score()
    flags = []
    for _ in range(100):
        shown = engine.desk.next_pair()
        flags.append(shown.control)
        engine.desk.record_label(shown, "skip")
    assert 15 <= sum(flags) <= 45
    assert store.query("SELECT count(*) FROM labels WHERE control")[1][0][0] == sum(flags)


def test_round_is_due_after_warmup_then_every_round_size(tmp_path):
    store, policy = _store(tmp_path), FakePolicy()
    cfg = _config(warmup_labels=3)
    engine = Engine(store, cfg, policy=policy)
    engine.learner.refill(target=10)
    for _ in range(3):
        engine.desk.record_label(engine.desk.next_pair(), "a")
    assert engine.desk.round_due() == (True, 3, 3)
    # a finished round records the newest label id: the next is due round_size labels later
    store.add_adapter(version=1, parent=None, labels_used=3, label_hash="x", regime="reset", path="adapters/v1",
                      config={}, metrics={}, manifest={"label_watermark": store.label_watermark()}, steps=[])
    assert engine.desk.round_due() == (False, 0, 4)
    # skips and undone labels never count toward a round; ties and a/b do
    for outcome in ("skip", "tie", "a"):
        engine.desk.record_label(engine.desk.next_pair(), outcome)
    assert engine.desk.round_due() == (False, 2, 4)
    engine.desk.undo()
    assert engine.desk.round_due() == (False, 1, 4)
    # undoing a label the adapter trained on does not make the counter negative
    for _ in range(4):
        engine.desk.undo()
    assert engine.desk.round_due() == (False, 0, 4)
    # an adapter from before the watermark existed counts from its newest trained label
    store.add_adapter(version=2, parent=1, labels_used=3, label_hash="y", regime="reset", path="adapters/v2",
                      config={}, metrics={}, manifest={"label_ids": []}, steps=[])
    assert engine.desk.round_due() == (False, 1, 4)
