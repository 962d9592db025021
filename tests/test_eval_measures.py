"""`apl eval` records KL to the reference, PMI and the quality guards beside the win-rate (issue 11).

The measuring code is the experiments' own (apl_tui/evaluation.py); these tests hold it to its
definition on the tiny model: a fresh adapter (LoRA B = 0) is the reference, so KL is exactly 0;
after a DPO round it is not. Old stores migrate with NULL measures and still render.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import duckdb
import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from apl_tui import migrations
from apl_tui.batch import evaluate
from apl_tui.cli.common import app
from apl_tui.config import AplConfig, TrainConfig
from apl_tui.dpo import train_dpo
from apl_tui.engine import Engine
from apl_tui.evaluation import kl_to_reference, pmi_under_reference
from apl_tui.oracles import build_oracle
from apl_tui.policy import Policy
from apl_tui.records import Pair
from apl_tui.store import Store
from tests.test_one_line_errors import one_line_error

TESTS = 6
MEASURES = [name for name, _ in migrations.EVAL_MEASURES]
PAIRS = [
    Pair("The movie was", " wonderful and moving", " dull"),
    Pair("I think this film", " is a masterpiece", " is a mess of bad ideas"),
    Pair("My review:", " loved it", " hated it, do not watch"),
]
runner = CliRunner()


def _config() -> AplConfig:
    cfg = AplConfig().replace("model", spec="tiny-random", device="cpu", max_prompt_tokens=24)
    return cfg.replace("generation", min_new_tokens=2, max_new_tokens=6, batch_size=4)


def _engine(root: Path, tiny_model: Any, *, trained: bool = False) -> Engine:
    """A store with test prompts, adapter v1 fresh (B = 0) and, if `trained`, v2 after a DPO round."""
    cfg = _config()
    store = Store.create(root, cfg)
    store.add_prompts([f"This movie {i} is" for i in range(TESTS)], split="test", source="t")
    model, tok = tiny_model
    policy = Policy(copy.deepcopy(model), tok, cfg=cfg.model, device="cpu", spec="tiny-random")
    policy.new_adapter(cfg.lora, seed=1)
    _save(store, policy, 1)
    if trained:
        prompts = [p.prompt for p in PAIRS]
        ref_c = policy.reference_logps(prompts, [p.chosen for p in PAIRS]).tolist()
        ref_r = policy.reference_logps(prompts, [p.rejected for p in PAIRS]).tolist()
        train_dpo(policy, PAIRS, ref_c, ref_r, TrainConfig(epochs=8, batch_size=3, learning_rate=2e-2,
                                                           warmup_steps=1))
        _save(store, policy, 2)
    return Engine(store, cfg, policy=policy)


def _save(store: Store, policy: Policy, version: int) -> None:
    policy.save_adapter(store.root / "adapters" / f"v{version}", version=version)
    store.add_adapter(version=version, parent=version - 1 or None, labels_used=3 * (version - 1), label_hash="x",
                      regime="reset", path=f"adapters/v{version}", config={}, metrics={}, manifest={}, steps=[])


def _evals(store: Store) -> list[dict[str, Any]]:
    cols, rows = store.query("SELECT * FROM evals ORDER BY adapter_version")
    return [dict(zip(cols, r)) for r in rows]


def test_a_fresh_adapter_is_the_reference_kl_exactly_zero_and_a_dpo_round_moves_it(tmp_path, tiny_model):
    engine = _engine(tmp_path / "s", tiny_model, trained=True)
    policy = engine.learner.policy
    prompts = [f"This movie {i} is" for i in range(TESTS)]
    policy.load_adapter(tmp_path / "s" / "adapters" / "v1", 1)
    assert kl_to_reference(policy, prompts, max_new_tokens=6, seed=3, batch_size=4) == [0.0] * TESTS
    fresh = evaluate(engine, build_oracle("vader"), adapter_version=1, guard_prompts=4)
    trained = evaluate(engine, build_oracle("vader"), adapter_version=2, guard_prompts=4)
    assert fresh["kl"] == 0.0 and fresh["kl_se"] == 0.0 and fresh["guard_prompts"] == 4
    assert trained["kl"] > 0.0
    # PMI of the reference's completions is the adapter's business only through the prompts: the
    # same test set gives the same reference value for both adapters.
    assert fresh["pmi_ref"] == trained["pmi_ref"] and fresh["pmi"] == fresh["pmi_ref"]
    stored = _evals(engine.store)
    assert [e["adapter_version"] for e in stored] == [1, 2]
    for e, row in zip(stored, (fresh, trained)):
        assert all(e[k] == pytest.approx(row[k]) if isinstance(row[k], float) else e[k] == row[k] for k in MEASURES)
        assert 0.0 <= e["oov"] <= 1.0 and 0.0 < e["distinct2"] <= 1.0 and e["top_word_share"] >= 0.0
    items = engine.store.eval_items(2, "vader", trained["settings_hash"])
    assert [it.kl is not None for it in items.values()] == [True] * 4 + [False] * 2
    engine.store.close()


def test_pmi_is_the_prompts_log_prob_gain_under_the_reference(tiny_policy):
    tiny_policy.new_adapter(AplConfig().lora, seed=1)
    prompts, texts = ["This movie is", "Bad"], [" great fun", " at first"]
    got = pmi_under_reference(tiny_policy, prompts, texts, [False, True], batch_size=2)
    with_x = tiny_policy.sequence_logps(prompts, texts, [False, True], adapter=False).tolist()
    alone = tiny_policy.sequence_logps(["", ""], texts, [False, True], adapter=False).tolist()
    assert got == [a - b for a, b in zip(with_x, alone)] and got[0] != 0.0


def test_an_old_row_gets_its_measures_without_judging_again(tmp_path, tiny_model):
    engine = _engine(tmp_path / "s", tiny_model)
    first = evaluate(engine, build_oracle("vader"), adapter_version=1, guard_prompts=3)
    assert evaluate(engine, build_oracle("vader"), adapter_version=1, guard_prompts=3)["cached"]
    cur = engine.store.cursor()
    # As before migration 9: no measures on the row nor on the items.
    cur.execute(f"UPDATE evals SET {', '.join(f'{m} = NULL' for m in MEASURES)}")
    cur.execute("UPDATE eval_items SET kl = NULL, pmi = NULL, pmi_ref = NULL")
    judged: list[str] = []
    oracle = build_oracle("vader")
    real = oracle.judge
    oracle.judge = lambda *a: judged.append("x") or real(*a)  # type: ignore[method-assign]
    again = evaluate(engine, oracle, adapter_version=1, guard_prompts=3)
    assert not again["cached"] and judged == []
    keys = ("wins", "losses", "ties", "n", *MEASURES)
    assert {k: again[k] for k in keys} == {k: first[k] for k in keys}
    assert len(_evals(engine.store)) == 1  # replaced, not a second row
    # Another guard count re-aggregates; 0 keeps whatever is stored (KL is not dropped).
    assert evaluate(engine, oracle, adapter_version=1, guard_prompts=2)["guard_prompts"] == 2
    assert evaluate(engine, oracle, adapter_version=1, guard_prompts=0)["cached"]
    engine.store.close()


def test_guard_prompts_zero_skips_kl_and_pmi_but_keeps_the_guards(tmp_path, tiny_model):
    engine = _engine(tmp_path / "s", tiny_model)
    row = evaluate(engine, build_oracle("vader"), adapter_version=1, guard_prompts=0)
    assert row["guard_prompts"] == 0 and row["kl"] is None and row["pmi"] is None and row["pmi_ref"] is None
    assert row["distinct2"] is not None and row["on_topic"] is not None
    engine.store.close()


def _shared_policy(monkeypatch, engine: Engine) -> None:
    import apl_tui.batch as batch

    real = batch.evaluate

    def shared(eng, *args, **kw):
        eng.learner.policy = engine.learner.policy  # no model load in the test
        return real(eng, *args, **kw)

    monkeypatch.setattr(batch, "evaluate", shared)


def test_cli_eval_prints_and_stores_the_measures_and_stats_shows_them(tmp_path, tiny_model, monkeypatch):
    engine = _engine(tmp_path / "s", tiny_model)
    engine.store.close()
    _shared_policy(monkeypatch, engine)
    r = runner.invoke(app, ["eval", "--store", str(tmp_path / "s"), "--oracle", "vader", "--guard-prompts", "4"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("adapter v1: win-rate") and "n=6" in lines[0]
    assert lines[1].startswith("  KL 0.00 ± 0.00 nats, PMI ") and lines[1].endswith("on the first 4 prompts")
    assert lines[2].startswith("  OOV ") and lines[3].startswith("  top word ") and len(lines) == 4
    con = duckdb.connect(str(tmp_path / "s" / "apl.duckdb"), read_only=True)
    row = con.execute("SELECT guard_prompts, kl, pmi, pmi_ref, oov, distinct2, repetition, on_topic, top_word_share "
                      "FROM evals").fetchall()
    con.close()
    assert len(row) == 1 and row[0][:2] == (4, 0.0) and None not in row[0]
    r = runner.invoke(app, ["stats", "--store", str(tmp_path / "s")], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    quality = [line.split() for line in r.stdout.splitlines() if line.strip().startswith(("v1 ", "ref n=6 "))]
    assert quality[-2][:4] == ["ref", "n=6", "–", "0"] and quality[-1][:3] == ["v1", "vader", "0.00±0.00"]
    assert max(cell_len(line.rstrip()) for line in r.stdout.splitlines()) <= 100
    r = runner.invoke(app, ["sql", "--store", str(tmp_path / "s"), "select kl, oov_ref, top_word from evals"])
    assert r.exit_code == 0 and "top_word" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--guard-prompts", "-1"], "--guard-prompts must be 0 or more (got -1)"),
    (["--prompts", "-3"], "--prompts must be 0 or more (got -3)"),
])
def test_bad_eval_options_are_one_line(tmp_path, args, needle):
    from tests.helpers import make_store

    make_store(tmp_path / "s").close()
    one_line_error(runner.invoke(app, ["eval", "--store", str(tmp_path / "s"), *args]), needle)


def test_an_old_store_migrates_with_null_measures_and_stats_still_renders(tmp_path, monkeypatch):
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] < 9])
    monkeypatch.setattr(migrations, "LATEST", 8)
    old = Store.create(tmp_path, AplConfig())
    old.add_adapter(version=1, parent=None, labels_used=16, label_hash="x", regime="reset", path="adapters/v1",
                    config={}, metrics={"loss": 0.6}, manifest={}, steps=[])
    old.cursor().execute(
        "INSERT INTO evals (adapter_version, oracle, settings_hash, n, wins, losses, ties, unparseable, win_rate, "
        "stderr) VALUES (1, 'vader', 'h', 10, 7, 3, 0, 0, 0.7, 0.145)")
    old.cursor().execute("INSERT INTO eval_items (adapter_version, oracle, settings_hash, idx, prompt_id, result) "
                         "VALUES (1, 'vader', 'h', 0, 1, 'win')")
    from apl_tui.queries import stats

    # What a snapshot written by an older app reads like: no measure columns, so NULL.
    assert [(e["win_rate"], e["kl"], e["top_word"]) for e in stats(old.cursor())["evals"]] == [(0.7, None, None)]
    old.close()
    monkeypatch.undo()
    store = Store(tmp_path)
    assert store.schema_version() == migrations.LATEST >= 9
    row = _evals(store)[0]
    assert row["win_rate"] == 0.7 and all(row[m] is None for m in MEASURES)
    assert store.eval_items(1, "vader", "h")[0].kl is None
    store.close()
    r = runner.invoke(app, ["stats", "--store", str(tmp_path)], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert "0.700 ± 0.145 (vader, n=10)" in r.stdout
    quality = [line.split() for line in r.stdout.splitlines() if line.strip().startswith("v1 ")]
    assert quality[-1] == ["v1", "vader"] + ["–"] * 7  # every measure reads "–"


async def test_the_stats_screen_shows_the_measures_and_dashes_for_old_rows(tmp_path):
    from rich.console import Console

    from apl_tui.desk import LabelDesk
    from apl_tui.tui.app import LabelApp
    from tests.test_tui import WIDE, make_store

    store = make_store(tmp_path / "s")
    for v in (1, 2):
        store.add_adapter(version=v, parent=v - 1 or None, labels_used=16 * v, label_hash="h", regime="reset",
                          path=f"adapters/v{v}", config={}, metrics={}, manifest={}, steps=[])
    base = {"oracle": "imdb-task", "settings_hash": "h", "n": 32, "wins": 20, "losses": 12, "ties": 0,
            "unparseable": 0, "win_rate": 0.625, "stderr": 0.086}
    store.add_eval(base | {"adapter_version": 1})  # an evaluation without measures (as before migration 9)
    store.add_eval(base | {"adapter_version": 2, "guard_prompts": 32, "kl": 4.21, "kl_se": 0.35, "pmi": 0.84,
                           "pmi_ref": 1.1, "oov": 0.081, "oov_ref": 0.032, "distinct2": 0.71, "distinct2_ref": 0.85,
                           "repetition": 0.031, "repetition_ref": 0.02, "on_topic": 0.12, "on_topic_ref": 0.3,
                           "top_word": "masterpiece", "top_word_share": 0.56, "top_word_ref": "film",
                           "top_word_share_ref": 0.2})
    app = LabelApp(LabelDesk(store))
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("g")
        table = app.screen.query_one("#stats-quality").content
        console = Console(width=100, record=True)
        console.print(table)
        rows = [line.split() for line in console.export_text().splitlines()[1:]]
    assert rows == [["v1", "imdb-task"] + ["–"] * 7,
                    ["ref", "n=32", "–", "0", "1.10", "3%", "0.85", "2%", "30%", "film", "20%"],
                    ["v2", "imdb-task", "4.21±0.35", "0.84", "8%", "0.71", "3%", "12%", "masterpiece", "56%"]]
    store.close()
