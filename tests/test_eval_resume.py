"""`apl eval`: per-prompt results saved as they come, a rerun continues, one line per adapter."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apl_tui.batch import evaluate
from apl_tui.cli.common import app
from apl_tui.config import AplConfig
from apl_tui.engine import Engine
from apl_tui.errors import Cancelled
from apl_tui.events import StepProgressed
from apl_tui.oracles import build_oracle
from apl_tui.policy import Policy
from apl_tui.store import Store

TESTS = 6


def _config() -> AplConfig:
    cfg = AplConfig().replace("model", spec="tiny-random", device="cpu", max_prompt_tokens=24)
    return cfg.replace("generation", min_new_tokens=2, max_new_tokens=6, batch_size=2)


def _engine(root: Path, tiny_model: Any) -> Engine:
    """A store with test prompts and one saved adapter (v1), over a private copy of the tiny model."""
    cfg = _config()
    store = Store.create(root, cfg)
    store.add_prompts([f"This movie {i} is" for i in range(TESTS)], split="test", source="t")
    model, tok = tiny_model
    policy = Policy(copy.deepcopy(model), tok, cfg=cfg.model, device="cpu", spec="tiny-random")
    policy.new_adapter(cfg.lora, seed=1)
    policy.save_adapter(root / "adapters" / "v1", version=1)
    store.add_adapter(version=1, parent=None, labels_used=0, label_hash="x", regime="reset", path="adapters/v1",
                      config={}, metrics={}, manifest={}, steps=[])
    return Engine(store, cfg, policy=policy)


def _items(store: Store) -> int:
    return int(store.query("SELECT count(*) FROM eval_items")[1][0][0])


def test_an_interrupted_evaluation_continues_and_matches_an_uninterrupted_one(tmp_path, tiny_model):
    whole = _engine(tmp_path / "whole", tiny_model)
    expected = evaluate(whole, build_oracle("vader"), adapter_version=1)
    assert expected["n"] == TESTS and _items(whole.store) == TESTS

    engine = _engine(tmp_path / "cut", tiny_model)
    cancel = threading.Event()

    def sink(event):
        if isinstance(event, StepProgressed) and event.phase == "evaluating" and event.done >= 2:
            cancel.set()  # Ctrl-C after the first chunk of 2

    with pytest.raises(Cancelled):
        evaluate(engine, build_oracle("vader"), adapter_version=1, sink=sink, cancel=cancel)
    assert _items(engine.store) == 2 and engine.store.find_eval(1, "vader", expected["settings_hash"]) is None
    progress: list[int] = []
    row = evaluate(engine, build_oracle("vader"), adapter_version=1,
                   sink=lambda e: progress.append(e.done) if isinstance(e, StepProgressed) else None)
    assert progress[0] == 2  # continued from the saved results, counted from there
    assert _items(engine.store) == TESTS
    keys = ("wins", "losses", "ties", "unparseable", "n")
    assert {k: row[k] for k in keys} == {k: expected[k] for k in keys}
    whole.store.close()
    engine.store.close()


def test_cli_eval_prints_one_line_per_adapter_and_stops_with_130(tmp_path, tiny_model, monkeypatch):
    engine = _engine(tmp_path / "s", tiny_model)
    engine.store.close()
    runner = CliRunner()
    assert "default 32" in runner.invoke(app, ["eval", "--help"]).stdout

    import apl_tui.batch as batch

    real = batch.evaluate

    def shared_policy(eng, *args, **kw):
        eng.learner.policy = engine.learner.policy  # no model load in the test
        return real(eng, *args, **kw)

    monkeypatch.setattr(batch, "evaluate", shared_policy)
    result = runner.invoke(app, ["eval", "--store", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("adapter v1") == 1 and "n=6" in result.stdout
    assert result.output.count("win-rate") == 1  # stdout and stderr together: no second report

    def interrupted(*args, **kw):
        raise Cancelled("stopped")

    monkeypatch.setattr(batch, "evaluate", interrupted)
    result = runner.invoke(app, ["eval", "--store", str(tmp_path / "s"), "--prompts", "3"])
    assert result.exit_code == 130 and "stopped; rerun to continue" in result.stderr
