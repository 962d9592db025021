"""Adapters that must never brick a store: non-finite rounds are refused, bad versions retired."""

from __future__ import annotations

import copy
import math

import pytest
from typer.testing import CliRunner

from apl_tui.batch import evaluate, run_loop
from apl_tui.cli import app
from apl_tui.engine import Engine
from apl_tui.errors import AplError, StoreError, TrainingDiverged
from apl_tui.oracles import build_oracle
from apl_tui.queries import stats
from apl_tui.store import Store
from tests.helpers import score_all
from tests.test_loop import make_store, small_config


@pytest.fixture
def fresh_policy(tiny_model):
    from apl_tui.policy import Policy

    def make():
        model, tok = tiny_model
        return Policy(copy.deepcopy(model), tok, cfg=small_config().model, device="cpu", spec="tiny-random")

    return make


def _bypassing_validation(cfg, **train):
    """A config as an older apl-tui would have accepted it (validation now refuses these values)."""
    for key, value in train.items():
        object.__setattr__(cfg.train, key, value)
    return cfg


def _label(engine, n):
    engine.learner.refill(lambda e: None, None, target=n)
    for i in range(n):
        engine.desk.record_label(engine.desk.next_pair("test"), "ab"[i % 2], source="test")


# One step (the loss is still ln 2, the weights are already NaN) and several (the loss turns NaN).
@pytest.mark.parametrize(("epochs", "batch_size"), [(1, 64), (3, 2)], ids=["weights", "loss"])
def test_non_finite_round_is_refused_and_nothing_is_written(tmp_path, fresh_policy, epochs, batch_size):
    cfg = _bypassing_validation(small_config(), learning_rate=math.inf, epochs=epochs, batch_size=batch_size)
    store = make_store(tmp_path / "s", cfg)
    engine = Engine(store, cfg, policy=fresh_policy())
    _label(engine, 6)
    with pytest.raises(TrainingDiverged) as err:
        engine.learner.train(lambda e: None, None)
    assert "\n" not in err.value.message and err.value.hint
    assert ("nothing was saved" if epochs == 1 else "the round was discarded") in err.value.message
    assert store.query("SELECT count(*) FROM adapters")[1] == [(0,)]
    assert store.query("SELECT count(*) FROM train_metrics")[1] == [(0,)]
    assert not [p for p in (store.root / "adapters").iterdir() if p.name.startswith("v")]
    assert not engine.learner.policy.has_adapter
    # The same store trains fine once the setting is sane again.
    good = small_config()
    engine = Engine(store, good, policy=fresh_policy())
    assert engine.learner.train(lambda e: None, None).version == 1
    store.close()


def test_retire_then_the_loop_runs_again(tmp_path, fresh_policy):
    cfg = small_config()
    store = make_store(tmp_path / "s", cfg)
    engine = Engine(store, cfg, policy=fresh_policy())
    run_loop(engine, build_oracle("vader"), budget=8)
    assert store.adapter_versions() == [1, 2]
    engine.learner.score(lambda e: None, None)
    assert store.query("SELECT count(*) FROM queue WHERE adapter_version = 2")[1][0][0] > 0
    store.close()
    # Damage v2 the way a crash or a disk error would: loading it now fails.
    weights = tmp_path / "s" / "adapters" / "v2" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    r = CliRunner().invoke(app, ["adapter", "retire", "2", "--store", str(tmp_path / "s"), "--reason", "damaged"])
    assert r.exit_code == 0, r.output
    assert "retired adapter v2; adapter v1 is current" in r.stderr

    store = Store(tmp_path / "s")
    assert store.latest_adapter()["version"] == 1 and store.adapter(2)["retired"]
    assert store.loop_state()["adapter_version"] == 1
    # No queued pair keeps a score by the retired version; those rows fell back to older scores.
    assert store.query("SELECT count(*) FROM queue WHERE adapter_version = 2")[1] == [(0,)]
    assert store.query("SELECT reason FROM adapter_retirements")[1] == [("damaged",)]
    assert [(a["version"], a["retired"]) for a in stats(store.cursor())["adapters"]] == [(1, False), (2, True)]
    engine = Engine(store, cfg, policy=fresh_policy())
    due, since, _ = engine.desk.round_due()
    assert due and since == 4  # labels since v1 count again
    out = run_loop(engine, build_oracle("vader"), budget=12)
    assert out["labels"] == 12 and out["rounds"] >= 1
    v3 = store.adapter(3)
    assert v3 is not None and v3["parent"] == 1 and not v3["retired"]
    latest = store.latest_adapter()["version"]
    assert latest == 2 + out["rounds"] and engine.learner.policy.adapter_version == latest
    with pytest.raises(AplError, match="adapter v2 is retired"):
        evaluate(engine, build_oracle("vader"), adapter_version=2)
    store.close()


def test_retire_errors_are_one_line(tmp_path):
    from tests.helpers import make_store as small_store

    store = small_store(tmp_path)
    with pytest.raises(StoreError, match="no adapter v7"):
        store.retire_adapter(7)
    store.close()
    r = CliRunner().invoke(app, ["adapter", "retire", "7", "--store", str(tmp_path)])
    assert r.exit_code == 1 and "no adapter v7" in r.stderr and "Traceback" not in r.stderr


def test_retiring_restores_older_scores_and_undo_skips_retired_ones(tmp_path):
    from tests.helpers import make_store as small_store

    store = small_store(tmp_path, prompts=3)
    for v in (1, 2):
        store.add_adapter(version=v, parent=v - 1 or None, labels_used=0, label_hash="x", regime="reset",
                          path=f"adapters/v{v}", config={}, metrics={}, manifest={"label_clock": 0}, steps=[])
    ids = [r[0] for r in store.query("SELECT id FROM candidates ORDER BY id")[1]]
    score_all(store, {ids[0]: 0.1, ids[1]: 0.2}, version=1)
    score_all(store, {ids[0]: 9.0, ids[1]: 8.0, ids[2]: 7.0}, version=2)
    assert store.best_unlabeled("certainty")["candidate_id"] == ids[0]
    store.record_label(ids[1], "a", source="human")
    assert store.retire_adapter(2) == 1
    queue = dict(store.query("SELECT candidate_id, adapter_version FROM queue")[1])
    assert queue == {ids[0]: 1, ids[2]: None}
    store.undo_last()  # ids[1] comes back with its v1 score, not the retired v2 one
    assert store.query("SELECT adapter_version, score FROM queue WHERE candidate_id = ?", [ids[1]])[1] == [(1, 0.2)]
    assert store.best_unlabeled("certainty")["candidate_id"] == ids[1]
    with pytest.raises(StoreError, match="already retired"):
        store.retire_adapter(2)
    assert store.retire_adapter(1) == 0 and store.latest_adapter() is None
    store.close()
