"""`apl experiment --report` on a folder of runs that differ in settings: the sweep table and plot."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.sweep_report import summarise

METRICS = {"vader_win_rate": 0.5, "pmi": 20.0, "g_oov": 0.01, "g_distinct2": 0.7, "g_on_topic": 0.5,
           "g_top_word_share": 0.2}


def _run(folder: Path, lr: float, points: dict[tuple[int, int], tuple[float, float]]) -> None:
    """A finished run folder: settings.json and one random point per (seed, labels) → (win, kl)."""
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({"experiment": {"oracle": "imdb-task"},
                                                      "train": {"learning_rate": lr, "epochs": 4}}))
    for (seed, labels), (win, kl) in points.items():
        name = "_warmup" if labels == 16 else "random"
        path = folder / "shared" / f"s{seed}" / "points" / f"{name}-{labels}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"method": name, "seed": seed, "labels": labels, "win_rate": win, "kl": kl,
                                    **METRICS}))


def test_sweep_table_by_hand(tmp_path):
    _run(tmp_path / "fast", 2e-3, {(0, 16): (0.6, 4.0), (1, 16): (0.4, 6.0), (0, 32): (0.5, 20.0), (1, 32): (0.7, 30.0)})
    _run(tmp_path / "slow", 5e-4, {(0, 16): (0.5, 1.0), (1, 16): (0.5, 1.0), (0, 32): (0.6, 2.0), (1, 32): (0.6, 4.0)})
    (tmp_path / "unfinished").mkdir()  # no settings.json: not a run
    names, rows = summarise(tmp_path)
    assert names == ["train.learning_rate"]  # epochs and oracle are the same everywhere
    by = {(r["run"], r["labels"]): r for r in rows}
    fast32 = by[("fast", 32)]
    # mean (0.5 + 0.7) / 2 = 0.6; s.e. = stdev / √2 = 0.1414… / 1.414… = 0.1; KL 25 ± 5
    assert abs(fast32["win_rate"] - 0.6) < 1e-12 and abs(fast32["win_se"] - 0.1) < 1e-12
    assert abs(fast32["kl"] - 25.0) < 1e-12 and abs(fast32["kl_se"] - 5.0) < 1e-12
    assert by[("slow", 16)]["win_se"] == 0.0 and by[("slow", 32)]["setting"] == {"train.learning_rate": 5e-4}
    r = CliRunner().invoke(app, ["experiment", "--report", str(tmp_path)])
    assert r.exit_code == 0, r.stderr
    assert "| 0.002 | random | 32 | 2 | 0.600 ± 0.100 | 25.0 ± 5.0 |" in r.stdout
    assert (tmp_path / "sweep.md").exists() and (tmp_path / "sweep.png").stat().st_size > 0
