"""The whole loop on the tiny random model with the vader oracle: rounds, resume, evaluation."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from apl_tui.batch import evaluate, run_loop
from apl_tui.config import AplConfig
from apl_tui.engine import Engine
from apl_tui.errors import Cancelled
from apl_tui.events import LabelRecorded
from apl_tui.oracles import build_oracle
from apl_tui.store import Store

BUDGET = 8


def small_config() -> AplConfig:
    cfg = AplConfig()
    cfg = cfg.replace("model", spec="tiny-random", device="cpu", max_prompt_tokens=24)
    cfg = cfg.replace("generation", min_new_tokens=2, max_new_tokens=6, batch_size=8)
    cfg = cfg.replace("acquisition", name="hybrid", entropy_samples=2, entropy_max_new_tokens=4,
                      entropy_factor=2, certainty_factor=2, warmup_labels=4, pool_size=8, low_water=2,
                      control_share=0.0, chunk_size=8)
    cfg = cfg.replace("train", epochs=2, batch_size=4, warmup_steps=0)
    return cfg.replace("loop", round_size=4)


def make_store(root, cfg) -> Store:
    store = Store.create(root, cfg)
    store.add_prompts([f"The film number {i} was" for i in range(40)], split="train", source="t")
    store.add_prompts([f"This movie {i} is" for i in range(4)], split="test", source="t")
    return store


def labels_of(store: Store) -> list[tuple]:
    return store.query("SELECT c.completion_a, c.completion_b, l.outcome FROM labels l "
                       "JOIN candidates c ON c.id = l.candidate_id ORDER BY l.id")[1]


@pytest.fixture
def fresh_policy(tiny_model):
    from apl_tui.policy import Policy

    def make():
        model, tok = tiny_model
        return Policy(copy.deepcopy(model), tok, cfg=small_config().model, device="cpu", spec="tiny-random")

    return make


def test_loop_trains_rounds_and_is_reproducible(tmp_path, fresh_policy):
    cfg = small_config()
    results = []
    for run in ("one", "two"):
        store = make_store(tmp_path / run, cfg)
        engine = Engine(store, cfg, policy=fresh_policy())
        out = run_loop(engine, build_oracle("vader"), budget=BUDGET)
        assert out["labels"] == BUDGET
        versions = [r[0] for r in store.query("SELECT version FROM adapters ORDER BY 1")[1]]
        assert versions == [1, 2]
        stamped = {r[0] for r in store.query("SELECT DISTINCT adapter_version FROM scores")[1]}
        assert stamped == {0, 1}
        steps = store.query('SELECT count(*), count("rewards/margins") FROM train_metrics')[1][0]
        assert steps[0] > 0 and steps[0] == steps[1]
        results.append(labels_of(store))
        row = evaluate(engine, build_oracle("vader"), adapter_version=2)
        assert row["n"] == 4 and row["wins"] + row["losses"] + row["ties"] + row["unparseable"] == 4
        assert evaluate(engine, build_oracle("vader"), adapter_version=2)["cached"] is True
        store.close()
    assert results[0] == results[1]


def test_cancel_mid_run_then_resume_reaches_budget_without_duplicates(tmp_path, fresh_policy):
    cfg = small_config()
    store = make_store(tmp_path, cfg)
    engine = Engine(store, cfg, policy=fresh_policy())
    cancel = threading.Event()
    seen = []

    def sink(event):
        if isinstance(event, LabelRecorded):
            seen.append(event)
            if len(seen) == 5:
                cancel.set()

    with pytest.raises(Cancelled):
        run_loop(engine, build_oracle("vader"), budget=BUDGET, sink=sink, cancel=cancel)
    assert store.label_events() == 5
    run_loop(Engine(store, cfg, policy=fresh_policy()), build_oracle("vader"), budget=BUDGET)
    rows = store.query("SELECT count(*), count(DISTINCT candidate_id) FROM labels")[1][0]
    assert rows == (BUDGET, BUDGET)


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 is POSIX")
def test_kill_9_during_run_loses_nothing(tmp_path, model_cache, tiny_model):
    cfg = small_config()
    make_store(tmp_path, cfg).close()
    env = os.environ | {"APL_CACHE_DIR": str(model_cache)}
    cmd = [sys.executable, "-m", "apl_tui", "run", "--oracle", "vader", "--budget", "12", "--store", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    # Wait until the first round has been saved, then kill it without warning.
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "adapters" / "v1").exists() and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    store = Store(tmp_path)
    rows = store.query("SELECT count(*), count(DISTINCT candidate_id) FROM labels")[1][0]
    assert rows == (12, 12)
    versions = [r[0] for r in store.query("SELECT version FROM adapters ORDER BY 1")[1]]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 2


def test_cached_reference_logps_equal_recomputed_ones(tmp_path, fresh_policy):
    cfg = small_config()
    store = make_store(tmp_path, cfg)
    engine = Engine(store, cfg, policy=fresh_policy())
    engine.learner.refill(target=6)
    cands = store.candidates()
    prompts = [c["prompt"] for c in cands]
    fresh_a = engine.learner.policy.reference_logps(prompts, [c["completion_a"] for c in cands], [c["eos_a"] for c in cands])
    fresh_b = engine.learner.policy.reference_logps(prompts, [c["completion_b"] for c in cands], [c["eos_b"] for c in cands])
    assert len(cands) >= 5
    for c, a, b in zip(cands, fresh_a.tolist(), fresh_b.tolist()):
        assert abs(c["ref_logp_a"] - a) < 1e-4 and abs(c["ref_logp_b"] - b) < 1e-4


def test_cancelled_round_leaves_no_adapter_version(tmp_path, fresh_policy):
    from apl_tui.events import TrainStepDone

    cfg = small_config()
    store = make_store(tmp_path, cfg)
    engine = Engine(store, cfg, policy=fresh_policy())
    engine.learner.refill(target=8)
    for _ in range(6):
        shown = engine.desk.next_pair()
        engine.desk.record_label(shown, "a" if shown.candidate_id % 2 else "b")
    cancel = threading.Event()

    def sink(event):
        if isinstance(event, TrainStepDone) and event.step == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        engine.learner.train(sink, cancel)
    assert store.latest_adapter() is None
    assert not any((tmp_path / "adapters").iterdir())
    assert engine.learner.policy.adapter_version == 0 and not engine.learner.policy.has_adapter
    info = engine.learner.train()  # the round is simply redone
    assert info.version == 1 and store.latest_adapter()["version"] == 1


def test_continue_regime_trains_new_labels_plus_replay(tmp_path, fresh_policy):
    cfg = small_config().replace("train", regime="continue", replay=2)
    store = make_store(tmp_path, cfg)
    engine = Engine(store, cfg, policy=fresh_policy())
    run_loop(engine, build_oracle("vader"), budget=12)
    rows = store.query("SELECT version, parent, regime, labels_used, manifest FROM adapters ORDER BY 1")[1]
    assert [r[2] for r in rows][:1] == ["reset"] and all(r[2] == "continue" for r in rows[1:])
    assert all(r[1] == r[0] - 1 for r in rows[1:])
    import json
    for (_, _, _, used, manifest), (_, _, _, _, previous) in zip(rows[1:], rows):
        m, p = json.loads(manifest), json.loads(previous)
        new = set(m["label_ids"]) - set(p["label_ids"])
        assert new <= set(m["trained_on"])
        assert len(set(m["trained_on"]) - new) <= 2  # the replay sample
        assert used == len(m["trained_on"])


def test_only_ties_keep_acquiring_instead_of_spinning(tmp_path, fresh_policy):
    from apl_tui.oracles import Verdict

    class AlwaysTie:
        name = "tie-oracle"

        def judge(self, prompt, a, b):
            return Verdict("tie", "indifferent")

    cfg = small_config()
    store = make_store(tmp_path, cfg)
    out = run_loop(Engine(store, cfg, policy=fresh_policy()), AlwaysTie(), budget=10)
    assert out == {"labels": 10, "rounds": 0, "seconds": out["seconds"]}
    assert store.latest_adapter() is None


def test_apl_run_keeps_a_snapshot_for_other_processes(tmp_path, model_cache, tiny_model, monkeypatch):
    from typer.testing import CliRunner

    from apl_tui.cli import app

    cfg = small_config()
    make_store(tmp_path, cfg).close()
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    r = CliRunner().invoke(app, ["run", "--oracle", "vader", "--budget", "6", "--store", str(tmp_path)])
    assert r.exit_code == 0, r.stderr
    import duckdb
    snap = tmp_path / "snapshot"
    n = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{snap / 'labels.parquet'}')").fetchone()[0]
    assert n >= 4  # written after the first round at least
