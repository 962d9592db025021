"""`apl experiment` on the tiny model: CSV rows per method × seed × point, resumable, summarised."""

from __future__ import annotations

import csv

from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.experiment import ExperimentConfig, labels_to_match, summarise

CONFIG = """
[experiment]
methods = ["random", "certainty"]
seeds = [0]
schedule = [4, 8]
oracle = "vader"
train_file = "{root}/examples/imdb/train.jsonl"
test_file = "{root}/examples/imdb/test.jsonl"
train_prompts = 40
test_prompts = 4

[model]
spec = "tiny-random"
device = "cpu"
max_prompt_tokens = 24

[generation]
min_new_tokens = 2
max_new_tokens = 6
batch_size = 8

[acquisition]
entropy_samples = 2
entropy_max_new_tokens = 4
warmup_labels = 4
pool_size = 8
low_water = 2
control_share = 0.0

[train]
epochs = 1
batch_size = 4
warmup_steps = 0

[loop]
round_size = 4
"""


def test_experiment_writes_csv_and_resumes(tmp_path, model_cache, tiny_model, monkeypatch):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG.format(root=root))
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    runner = CliRunner()
    r = runner.invoke(app, ["experiment", "--config", str(cfg), "--output", str(tmp_path / "out")])
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [(x["method"], x["labels"]) for x in rows] == [("certainty", "4"), ("certainty", "8"),
                                                          ("random", "4"), ("random", "8")]
    # Gibberish from a random model is often neutral to vader: a point with only ties has no adapter
    # (n = 0) and an undecided evaluation has no win-rate.
    assert all(int(x["n"]) in (0, 4) and (x["win_rate"] == "" or 0 <= float(x["win_rate"]) <= 1) for x in rows)
    assert "labels to match random" in r.stdout
    # apl eval's measures ride along: KL and guards wherever an adapter was evaluated.
    assert any(int(x["n"]) > 0 for x in rows)
    assert all((x["kl"] != "" and x["g_distinct2"] != "") == (int(x["n"]) > 0) for x in rows)
    # A second run finds every point done and changes nothing.
    before = (tmp_path / "out" / "results.csv").read_text()
    r2 = runner.invoke(app, ["experiment", "--config", str(cfg), "--output", str(tmp_path / "out")])
    assert r2.exit_code == 0 and (tmp_path / "out" / "results.csv").read_text() == before


def test_bad_experiment_config_is_one_line(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('[experiment]\nmethods = ["magic"]\n')
    r = CliRunner().invoke(app, ["experiment", "--config", str(cfg)])
    assert r.exit_code == 1 and "unknown acquisition 'magic'" in r.stderr


def test_summary_and_labels_to_match():
    rows = [{"method": m, "seed": s, "labels": n, "win_rate": w}
            for m, s, n, w in [("random", 0, 10, .5), ("random", 1, 10, .6), ("random", 0, 20, .6),
                               ("random", 1, 20, .7), ("hybrid", 0, 10, .65), ("hybrid", 1, 10, .65),
                               ("hybrid", 0, 20, .8), ("hybrid", 1, 20, .8)]]
    s = summarise(rows)
    assert s["random"][1][0] == 20 and abs(s["random"][1][1] - 0.65) < 1e-9
    assert labels_to_match(s) == {"hybrid": 10.0, "random": 20.0}
    assert ExperimentConfig().schedule == (16, 32, 48, 64)
