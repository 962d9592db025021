"""Candidate groups (N completions per prompt), stored features, and the head functions in the loop."""

from __future__ import annotations

import numpy as np
import pytest

from apl_tui import pool
from apl_tui.acquisition import HEAD_WARMUP_NOTE
from apl_tui.config import AplConfig
from apl_tui.head_scoring import COVERAGE_NOTE, rank_pool_pairs
from apl_tui.learner import Learner
from apl_tui.store import Store
from tests.fakes import FakePolicy
from tests.helpers import make_store


def _config(name: str = "gap-ucb", completions: int = 4, **acq: object) -> AplConfig:
    cfg = AplConfig().replace("acquisition", name=name, completions=completions, pool_size=3, low_water=2,
                              control_share=0.0, warmup_labels=8, chunk_size=5, head_refit_every=2,
                              certainty_factor=1, **acq)
    return cfg.replace("loop", round_size=8)


def _store(tmp_path, cfg: AplConfig, n: int = 30) -> Store:
    store = Store.create(tmp_path, cfg)
    store.add_prompts([f"train prompt {i}" for i in range(n)], split="train", source="t")
    return store


def test_four_completions_make_six_pairs_each_scored_once_per_completion(tmp_path):
    cfg = _config()
    store, policy = _store(tmp_path, cfg), FakePolicy()
    added = pool.refill(store, policy, cfg, target=2, seed=1, sink=lambda e: None, cancel=None)
    assert added == 12 and store.pool_size() == 12  # 2 prompts (one label each) × C(4, 2) pairs
    assert pool.ready_prompts(store, cfg) == 2
    assert policy.scored == 8  # the reference pass saw each of the 8 completions once, not 24 sides
    rows = store.head_pool()
    by_prompt: dict[int, set] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], set()).update({r["completion_a"], r["completion_b"]})
        assert r["phi_a"] == pytest.approx(FakePolicy.features_of(r["completion_a"]))
    assert sorted(len(v) for v in by_prompt.values()) == [4, 4]
    # r̂ functions: one policy pass per distinct completion of a scoring call
    policy.adapter_version = 1
    policy.scored = 0
    pool.rescore(store, policy, cfg.replace("acquisition", name="certainty", chunk_size=12), seed=0,
                 sink=lambda e: None, cancel=None)
    assert policy.scored == 8


def test_features_survive_a_restart_and_a_label_removes_the_prompts_other_pairs(tmp_path):
    cfg = _config()
    store = _store(tmp_path, cfg)
    pool.refill(store, FakePolicy(), cfg, target=2, seed=1, sink=lambda e: None, cancel=None)
    first = store.head_pool()[0]
    store.record_label(first["id"], "a", source="human")
    assert store.pool_size() == 6
    store.close()
    again = Store(tmp_path)
    assert len(again.head_pool()) == 6 and again.missing_features() == []
    (phi_a, phi_b, won), = again.head_labels()
    assert won and phi_a == pytest.approx(first["phi_a"]) and phi_b == pytest.approx(first["phi_b"])


def test_two_completions_keep_todays_pairs(tmp_path):
    cfg = _config(completions=2)
    store, policy = _store(tmp_path, cfg), FakePolicy()
    assert pool.refill(store, policy, cfg, target=3, seed=1, sink=lambda e: None, cancel=None) == 3
    assert len(policy.generated) == 3  # generate_pairs, as before
    assert all(r["phi_a"] is not None for r in store.head_pool())


def test_gap_ucb_draws_at_random_before_labels_then_uses_the_head(tmp_path):
    cfg = _config()
    store, policy = _store(tmp_path, cfg), FakePolicy()
    learner = Learner(store, cfg, policy=policy)
    assert learner.step() == "generated 48 pairs"  # a round's worth of prompts (8) × 6 pairs
    assert learner.step() == "refit the preference head, scored 48 pairs"  # the queue, scored whole
    assert learner.step() is None  # nothing new: no refit, nothing unscored
    best = store.best_unlabeled("gap-ucb")
    assert best["fallback"] == HEAD_WARMUP_NOTE
    rows = store.head_pool()
    for r in rows[:2]:
        store.record_label(r["id"], "a" if len(r["completion_a"]) > len(r["completion_b"]) else "b", source="oracle")
    assert learner.head_stale()
    assert learner.step().startswith("refit the preference head")
    assert not learner.head_stale()
    best = store.best_unlabeled("gap-ucb")
    assert best["fallback"] is None and 0.0 < best["p_a"] < 1.0
    # within the best pair's prompt, the shown pair has the largest optimistic gap
    scores = dict(store.query("SELECT candidate_id, score FROM queue WHERE prompt_id = "
                              "(SELECT prompt_id FROM candidates WHERE id = ?)", [best["candidate_id"]])[1])
    assert scores[best["candidate_id"]] == max(scores.values())


def test_dopt_covers_before_labels_and_fills_missing_features(tmp_path):
    cfg = _config("dopt", completions=2)
    store = make_store(tmp_path, prompts=5, config=cfg)  # pairs made without φ (an old store)
    assert len(store.missing_features()) == 5
    learner = Learner(store, cfg, policy=FakePolicy())
    learner.score()
    assert store.missing_features() == []
    best = store.best_unlabeled("dopt")
    assert best["fallback"] == COVERAGE_NOTE


def test_softmax_selection_perturbs_any_functions_scores_reproducibly(tmp_path):
    scores = []
    for run, selection in (("plain", "top-k"), ("soft", "softmax"), ("again", "softmax")):
        cfg = _config("random", completions=2, selection=selection)
        store, policy = _store(tmp_path / run, cfg), FakePolicy()
        pool.refill(store, policy, cfg, target=6, seed=1, sink=lambda e: None, cancel=None)
        pool.rescore(store, policy, cfg, seed=0, sink=lambda e: None, cancel=None)
        scores.append([r[0] for r in store.query("SELECT score FROM scores ORDER BY candidate_id")[1]])
    assert scores[1] == scores[2] and scores[0] != scores[1]
    assert np.all((np.asarray(scores[0]) >= 0) & (np.asarray(scores[0]) < 1.0))  # plain random: uniform draws


def test_experiment_ranking_contrasts_the_widest_pair_once_labels_exist():
    # one feature direction decides: completion 2 is best, 0 worst; labels teach that direction
    def comp(x: float) -> dict:
        return {"text": str(x), "eos": True, "phi": [x, 0.0, 1.0]}

    pool = {"prompts": ["p0", "p1", "p2"], "completions": [[comp(0), comp(1), comp(2)] for _ in range(3)]}
    labels = [[0, 2, 0, "a"], [0, 1, 0, "a"], [0, 2, 1, "a"], [0, 0, 1, "tie"]]
    cands = [(p, i, j) for p in (1, 2) for i in range(3) for j in range(i + 1, 3)]
    cfg = AplConfig().acquisition
    ranked = rank_pool_pairs("gap-ucb", pool, cands, labels, cfg, batch=2, seed=0)
    assert ranked[0][1:] == (0, 2) and ranked[1][1:] == (0, 2)  # both prompts' widest pair first
    ranked = rank_pool_pairs("dopt", pool, cands, [], cfg, batch=2, seed=0)
    assert {ranked[0][0], ranked[1][0]} == {1, 2}  # coverage: two prompts, not one twice


@pytest.mark.parametrize("name", ["gap-ucb", "dopt+gap"])
def test_loop_on_the_tiny_model_with_three_completions_and_a_head(tmp_path, tiny_policy, name):
    from apl_tui.batch import run_loop
    from apl_tui.engine import Engine
    from apl_tui.oracles import build_oracle

    cfg = AplConfig().replace("model", spec="tiny-random", device="cpu", max_prompt_tokens=24)
    cfg = cfg.replace("generation", min_new_tokens=2, max_new_tokens=6, batch_size=8)
    cfg = cfg.replace("acquisition", name=name, completions=3, warmup_labels=4, pool_size=6, low_water=2,
                      control_share=0.0, chunk_size=8, head_refit_every=2)
    cfg = cfg.replace("train", epochs=1, batch_size=4, warmup_steps=0).replace("loop", round_size=4)
    store = Store.create(tmp_path, cfg)
    store.add_prompts([f"The film number {i} was" for i in range(30)], split="train", source="t")
    out = run_loop(Engine(store, cfg, policy=tiny_policy), build_oracle("vader"), budget=8)
    assert out["labels"] == 8
    phi_dims = store.query("SELECT DISTINCT len(phi_a) FROM candidates")[1]
    assert phi_dims == [(tiny_policy.model.config.hidden_size,)]
    # every labeled prompt had three completions, so three candidate pairs
    per_prompt = store.query("SELECT count(*) FROM candidates WHERE prompt_id IN "
                             "(SELECT c.prompt_id FROM labels l JOIN candidates c ON c.id = l.candidate_id) "
                             "GROUP BY prompt_id")[1]
    assert per_prompt and all(n == (3,) for n in per_prompt)
    heads = store.query("SELECT count(*) FROM scores WHERE acquisition = ? AND p_a IS NOT NULL", [name])[1][0][0]
    assert heads > 0  # the head scored pairs once labels existed
