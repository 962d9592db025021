"""Shared-pool experiments on the tiny model: common random numbers, --jobs, resume, report, arms."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.config import AplConfig
from apl_tui.errors import ConfigError
from apl_tui.experiment import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[experiment]
mode = "shared-pool"
methods = {methods}
seeds = [0, 1]
schedule = [4, 8]
oracle = "imdb-task"
train_file = "{root}/examples/imdb/train.jsonl"
test_file = "{root}/examples/imdb/test.jsonl"
train_prompts = 40
test_prompts = 5
pool_prompts = 24
guard_prompts = 3
eval_batch_size = 5

[model]
spec = "tiny-random"
device = "cpu"
max_prompt_tokens = 24

[generation]
min_new_tokens = 2
max_new_tokens = 5
batch_size = 8

[acquisition]
entropy_samples = 2
entropy_max_new_tokens = 3
warmup_labels = 4

[train]
epochs = 1
batch_size = 4
warmup_steps = 0

[loop]
round_size = 4
"""
TIMING = {"seconds", "select_s", "train_s", "eval_s"}


def _config(tmp_path: Path, methods: str = '["random", "aa", "certainty", "oracle-max-gap"]') -> Path:
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG.format(root=ROOT, methods=methods))
    return cfg


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, model_cache) -> tuple[Path, Path]:
    """One finished run (2 seeds, 4 arms), shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APL_CACHE_DIR", str(model_cache))
        cfg = _config(tmp)
        r = CliRunner().invoke(app, ["experiment", "--config", str(cfg), "--output", str(tmp / "one")])
    assert r.exit_code == 0, r.stderr
    return cfg, tmp / "one"


def test_arms_share_warmup_eval_prompts_and_samples(finished):
    _, out = finished
    for seed in (0, 1):
        folder = out / "shared" / f"s{seed}"
        points = {p.stem: json.loads(p.read_text()) for p in (folder / "points").glob("*.json")}
        assert set(points) == {"_warmup-4", "random-8", "aa-8", "certainty-8", "oracle-max-gap-8"}
        warm = points["_warmup-4"]["label_rows"]
        for arm in ("random", "aa", "certainty", "oracle-max-gap"):
            rows = points[f"{arm}-8"]["label_rows"]
            assert rows[:4] == warm  # the same warm-up pairs, with the same verdicts
            assert len(rows) == 8 and len({r[0] for r in rows}) == 8  # one pair per prompt
            per_prompt = json.loads((folder / "per_prompt" / f"{arm}-8.json").read_text())
            ref = json.loads((folder / "reference.json").read_text())
            assert [r["prompt_id"] for r in per_prompt] == [0, 1, 2, 3, 4]
            assert [r["reference"] for r in per_prompt] == ref["texts"]
    # The oracle arm really peeks: its round picks the largest judge gaps of the window.
    pool = json.loads((out / "shared" / "s0" / "pool.json").read_text())
    def gap(r: list) -> float:
        return abs(pool["completions"][r[0]][r[1]]["judge"] - pool["completions"][r[0]][r[2]]["judge"])

    best = json.loads((out / "shared" / "s0" / "points" / "oracle-max-gap-8.json").read_text())["label_rows"][4:]
    rand = json.loads((out / "shared" / "s0" / "points" / "random-8.json").read_text())["label_rows"][4:]
    assert sum(map(gap, best)) >= sum(map(gap, rand))
    rows = _rows(out)
    assert {r["method"] for r in rows} == {"random", "aa", "certainty", "oracle-max-gap"} and len(rows) == 16
    # At the warm-up every arm has the same adapter: identical metrics.
    warm_rates = {(r["seed"], r["win_rate"], r["kl"]) for r in rows if r["labels"] == "4"}
    assert len(warm_rates) == 2


def test_jobs_2_equals_jobs_1_and_resume_and_report(finished, model_cache, monkeypatch):
    cfg, one = finished
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    two = one.parent / "two"
    r = CliRunner().invoke(app, ["experiment", "--config", str(cfg), "--output", str(two), "--jobs", "2"])
    assert r.exit_code == 0, r.stderr
    assert _rows(two) == _rows(one)
    # Resume: every point is on disk, so nothing is recomputed.
    stamps = {p: p.stat().st_mtime_ns for p in (one / "shared").rglob("points/*.json")}
    r = CliRunner().invoke(app, ["experiment", "--config", str(cfg), "--output", str(one)])
    assert r.exit_code == 0 and "10 points (10 already finished)" in r.stderr.replace("\n", " ")
    assert {p: p.stat().st_mtime_ns for p in (one / "shared").rglob("points/*.json")} == stamps
    for name in ("curves.png", "paired.png", "reward_kl.png", "per_prompt.parquet", "report.md"):
        (one / name).unlink()
    r = CliRunner().invoke(app, ["experiment", "--report", str(one)])
    assert r.exit_code == 0, r.stderr
    assert "arm − random" in r.stdout and "aa" in r.stdout and "Per test prompt at 8 labels" in r.stdout
    from apl_tui.experiment_report import prompt_paired

    paired = prompt_paired(one, 8)
    assert set(paired) == {"aa", "certainty", "oracle-max-gap"} and all(n == 10 for _, _, n in paired.values())
    for name in ("curves.png", "paired.png", "reward_kl.png", "per_prompt.parquet", "report.md"):
        assert (one / name).exists()
    report = (one / "report.md").read_text()
    assert "Completions at 8 labels, seed 0, the first 3 test prompts" in report
    table = report.split("Completions at 8 labels")[1].splitlines()
    assert [line.split(" |")[0] for line in table if line.startswith("| ") and not line.startswith("| |")] == [
        "| reference", "| aa", "| certainty", "| oracle-max-gap", "| random"]
    import pandas as pd

    frame = pd.read_parquet(one / "per_prompt.parquet")
    assert len(frame) == 2 * (1 + 4) * 5 and {"completion", "reference", "outcome", "judge", "kl"} <= set(frame.columns)


def test_oracle_arms_are_refused_outside_experiments(tmp_path):
    with pytest.raises(ConfigError):
        AplConfig.from_dict({"acquisition": {"name": "oracle-max-gap"}})
    r = CliRunner().invoke(app, ["run", "--store", str(tmp_path / "s"), "--acquisition", "oracle-max-gap",
                                 "--budget", "4"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    on_policy = tmp_path / "exp.toml"
    on_policy.write_text('[experiment]\nmethods = ["random", "oracle-max-gap"]\n')
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.load(on_policy)
    assert "shared-pool" in (e.value.hint or "")
    assert ExperimentConfig(mode="shared-pool", methods=("aa", "oracle-min-gap", "oracle-no-ties")).methods


def test_report_needs_finished_points(tmp_path):
    (tmp_path / "shared").mkdir()
    r = CliRunner().invoke(app, ["experiment", "--report", str(tmp_path)])
    assert r.exit_code == 1 and "no finished points" in r.stderr


def test_set_overrides_the_file_and_a_folder_refuses_other_settings(finished, model_cache, monkeypatch):
    cfg, one = finished
    exp = ExperimentConfig.load(cfg, ["train.learning_rate=1e-3", "experiment.seeds=[3]", "model.spec=tiny-random"])
    assert exp.base.train.learning_rate == 1e-3 and exp.seeds == (3,) and exp.base.model.spec == "tiny-random"
    with pytest.raises(ConfigError, match="unknown setting train.lr"):
        ExperimentConfig.load(cfg, ["train.lr=1"])
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    stamps = {p: p.stat().st_mtime_ns for p in (one / "shared").rglob("points/*.json")}
    r = CliRunner().invoke(app, ["experiment", "--config", str(cfg), "--output", str(one),
                                 "--set", "train.learning_rate=5e-3"])  # not the file's (default) 1e-3
    assert r.exit_code == 1 and "other settings (train.learning_rate)" in r.stderr.replace("\n", " ")
    assert "Traceback" not in r.output
    assert {p: p.stat().st_mtime_ns for p in (one / "shared").rglob("points/*.json")} == stamps
    r = CliRunner().invoke(app, ["experiment", "--config", str(cfg), "--set", "trainlr"])
    assert r.exit_code != 0 and "SECTION.KEY=VALUE" in r.stderr.replace("\n", " ")
