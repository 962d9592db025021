"""Head arms (gap-ucb, dopt, dopt+gap, a softmax variant) in shared-pool experiments, tiny model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.experiment import ExperimentConfig
from tests.test_shared_pool import _config


def test_head_arms_select_from_the_shared_pool_with_features(tmp_path, model_cache, monkeypatch):
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    cfg = _config(tmp_path, '["random", "gap-ucb", "dopt+gap", "gap-ucb@softmax"]')
    cfg.write_text(cfg.read_text().replace("seeds = [0, 1]", "seeds = [0]").replace(
        "pool_prompts = 24", "pool_prompts = 24\npool_completions = 3"))
    r = CliRunner().invoke(app, ["experiment", "--config", str(cfg), "--output", str(tmp_path / "out")])
    assert r.exit_code == 0, r.stderr
    seed = tmp_path / "out" / "shared" / "s0"
    pool = json.loads((seed / "pool.json").read_text())
    dims = {len(c["phi"]) for group in pool["completions"] for c in group}
    assert len(dims) == 1 and dims.pop() > 0  # φ from the reference pass that made the pool
    rounds = {}
    for arm in ("random", "gap-ucb", "dopt+gap", "gap-ucb@softmax"):
        point = json.loads((seed / "points" / f"{arm}-8.json").read_text())
        rows = point["label_rows"]
        assert len(rows) == 8 and len({p for p, *_ in rows}) == 8  # one pair per prompt
        rounds[arm] = [tuple(x[:3]) for x in rows[4:]]
    assert rounds["gap-ucb"] != rounds["random"]
    assert ExperimentConfig(mode="shared-pool", methods=("drts", "dopt")).methods == ("drts", "dopt")
