"""`apl label --eval`: a person's blind win-rate, beside the oracles' (tiny model and Pilot)."""

from __future__ import annotations

from pathlib import Path

from apl_tui.batch import evaluate, run_loop
from apl_tui.engine import Engine
from apl_tui.events import StepProgressed
from apl_tui.human_eval import EvalDesk, EvalLearner, plan_eval
from apl_tui.oracles import Verdict, build_oracle
from apl_tui.queries import stats
from apl_tui.tui.app import LabelApp
from apl_tui.tui.screens.label import LabelScreen
from tests.test_loop import fresh_policy, make_store, small_config  # noqa: F401 (fixture)
from tests.test_tui import NARROW, text


class Recorder:
    """An oracle that remembers every (prompt, {completions}) it judged and always picks A."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: set[tuple[str, frozenset[str]]] = set()

    def judge(self, prompt: str, a: str, b: str) -> Verdict:
        self.seen.add((prompt, frozenset((a, b))))
        return Verdict("a", "")


def test_eval_mode_makes_apl_evals_pairs_and_writes_a_human_row(tmp_path, fresh_policy):  # noqa: F811
    cfg = small_config()
    store = make_store(tmp_path / "s", cfg)
    engine = Engine(store, cfg, policy=fresh_policy())
    run_loop(engine, build_oracle("vader"), budget=4)
    plan = plan_eval(store, cfg)
    assert plan.adapter_version == 1 and len(plan.tests) == 4
    learner = EvalLearner(store, plan, cfg, policy=engine.learner.policy)
    events: list = []
    while learner.step(events.append) is not None:
        pass
    assert any(isinstance(e, StepProgressed) and e.phase == "evaluation pairs" for e in events)
    desk = EvalDesk(store, plan, cfg)
    judged_policy_side = 0
    while (shown := desk.next_pair()) is not None:
        # A person who prefers the adapter's completion on every second pair.
        side = store.query("SELECT policy_side FROM eval_pairs WHERE id = ?", [shown.candidate_id])[1][0][0]
        other = "b" if side == "a" else "a"
        outcome = side if shown.rank % 2 else other
        judged_policy_side += outcome == side
        desk.record_label(shown, outcome, latency_ms=500)
    assert desk.finished and desk.status().labels_total == 4
    human = [e for e in stats(store.cursor())["evals"] if e["oracle"] == "human"]
    assert len(human) == 1 and human[0]["n"] == 4 and human[0]["win_rate"] == judged_policy_side / 4
    # An oracle evaluation with the same settings judged exactly the same completions (same hash).
    rec = Recorder()
    row = evaluate(engine, rec, adapter_version=1)
    pairs = store.query("SELECT p.text, e.completion_policy, e.completion_reference FROM eval_pairs e "
                        "JOIN prompts p ON p.id = e.prompt_id")[1]
    assert rec.seen == {(t, frozenset((m, r))) for t, m, r in pairs}
    assert row["settings_hash"] == plan.digest
    # Undo takes the last verdict back and recounts the row.
    desk.undo()
    human = [e for e in stats(store.cursor())["evals"] if e["oracle"] == "human"]
    assert human[0]["n"] == 3
    # Training never sees any of it.
    assert store.query("SELECT count(*) FROM labels WHERE source = 'human'")[1][0][0] == 0
    store.close()


async def test_eval_screen_labels_blind_pairs_with_the_same_keys(tmp_path: Path) -> None:
    from apl_tui.config import AplConfig
    from apl_tui.store import Store

    store = Store.create(tmp_path / "s")
    store.add_prompts(["a test prompt", "another one"], split="test", source="t")
    store.add_adapter(version=1, parent=None, labels_used=4, label_hash="h", regime="reset", path="adapters/v1",
                      config={}, metrics={}, manifest={}, steps=[])
    plan = plan_eval(store, AplConfig())
    store.add_eval_pairs(1, plan.digest, plan.settings.__dict__,
                         [(0, 1, "adapter says yes", "reference says no", "b"),
                          (1, 2, "adapter again", "reference again", "a")])
    app = LabelApp(EvalDesk(store, plan))
    async with app.run_test(size=NARROW) as pilot:
        assert isinstance(app.screen, LabelScreen)
        assert "reference says no" in text(app, "#left-text") and "adapter says yes" in text(app, "#right-text")
        await pilot.press("2")  # the adapter's (right)
        assert "adapter v1 was B" in text(app, "#why")
        await pilot.press("1")  # the adapter's again (left this time)
        assert app.screen.shown is None and "Done" in text(app, "#waiting")
    human = [e for e in stats(store.cursor())["evals"] if e["oracle"] == "human"]
    assert human[0]["n"] == 2 and human[0]["win_rate"] == 1.0
    store.close()


def test_label_eval_refuses_clearly_without_an_adapter(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from apl_tui.cli import app
    from apl_tui.store import Store

    Store.create(tmp_path / "s").close()
    r = CliRunner().invoke(app, ["label", "--eval", "--store", str(tmp_path / "s")])
    assert r.exit_code == 1 and "no adapter to evaluate yet" in r.stderr and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["label", "--adapter", "2", "--store", str(tmp_path / "s")])
    assert r.exit_code == 1 and "--eval" in r.stderr
