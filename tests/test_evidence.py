"""Evidence for the person labeling: prequential accuracy, the two arms, probes and biases (no model)."""

from __future__ import annotations

import math

import pytest

from apl_tui.config import AplConfig
from apl_tui.desk import LabelDesk
from apl_tui.evidence import consistency, evidence, predictions, wilson
from apl_tui.records import ScoreRow
from tests.helpers import make_store


def _cfg(**loop: object) -> AplConfig:
    cfg = AplConfig().replace("acquisition", name="certainty", control_share=0.0)
    return cfg.replace("loop", **loop) if loop else cfg


def _good_side(shown) -> str:
    """A consistent labeler: always the completion that reads 'good' (candidate side a)."""
    return "a"


def test_wilson_interval_matches_a_hand_computation():
    r = wilson(8, 10)
    # p = .8, z = 1.96: centre (0.8 + 0.19208) / 1.38415 = 0.71683, half 0.22668
    assert r.lo == pytest.approx(0.4902, abs=1e-3) and r.hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0).value is None and wilson(0, 0).text() == "– (n=0)"


def test_prequential_uses_the_prediction_shown_and_excludes_warm_up(tmp_path):
    store = make_store(tmp_path, prompts=6, config=_cfg(probe_share=0.0))
    ids = [c["id"] for c in store.candidates()]
    # Warm-up scores (no adapter: r̂ = 0, p = .5) for two pairs, adapter v1's for the rest.
    store.add_scores([ScoreRow(ids[0], 0, "certainty", 0.0, reward_a=0.0, reward_b=0.0, p_a=0.5),
                      ScoreRow(ids[1], 0, "certainty", 0.0, reward_a=0.0, reward_b=0.0, p_a=0.5)]
                     + [ScoreRow(c, 1, "certainty", 1.0 - k / 10, p_a=p)
                        for k, (c, p) in enumerate(zip(ids[2:], (0.9, 0.2, 0.7, 0.6)))])
    desk = LabelDesk(store)
    shown = []
    for _ in range(6):
        s = desk.next_pair()
        shown.append(s)
        desk.record_label(s, "a")
    preds = predictions(store.cursor())
    assert [p.adapter_version for p in preds] == [1, 1, 1, 1]
    p_by_cand = {s.candidate_id: s.p_a for s in shown if s.scored_by}
    assert sorted(p.p_chosen for p in preds) == sorted(p_by_cand.values())
    ev = evidence(store.cursor())
    assert ev.predicted == 4 and ev.unpredicted == 2
    assert ev.overall.accuracy.k == 3 and ev.overall.accuracy.n == 4  # p(a) .9, .7, .6 right; .2 wrong
    expected_ll = -(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.6)) / 4
    assert ev.overall.log_loss.value == pytest.approx(expected_ll)
    assert list(ev.by_adapter) == [1]


def test_probes_are_swapped_flagged_and_never_train(tmp_path):
    store = make_store(tmp_path, prompts=40, config=_cfg(probe_share=0.3, probe_min_age=5))
    store.add_scores([ScoreRow(c["id"], 1, "certainty", float(c["id"]), p_a=0.6) for c in store.candidates()])
    desk = LabelDesk(store)
    probes = []
    for _ in range(40):
        s = desk.next_pair()
        if s is None:
            break
        if s.probe:
            probes.append(s)
        desk.record_label(s, _good_side(s))
    assert probes, "a 30 % probe share over 40 pairs shows some probes"
    for p in probes:
        original = store.query("SELECT shown_left, candidate_id FROM labels WHERE id = ?", [p.probe_of])[1][0]
        assert original[1] == p.candidate_id and original[0] != p.left  # the same pair, sides swapped
        # Looks like any acquired pair: scored, ranked, not a control pair.
        assert not p.control and p.acquisition is not None
    flagged = store.query("SELECT count(*) FROM labels WHERE probe")[1][0][0]
    assert flagged == len(probes) == store.query("SELECT count(*) FROM impressions WHERE probe")[1][0][0]
    cands = [r["candidate_id"] for r in store.training_pairs()]
    assert len(cands) == len(set(cands)) == store.query("SELECT count(DISTINCT candidate_id) FROM labels")[1][0][0]
    prefs = store.query("SELECT pair_id FROM preferences")[1]
    assert len(prefs) == len({r[0] for r in prefs})
    # The consistent labeler agrees with itself on every probe.
    c = consistency(store.cursor())
    assert c.agreement.n == len(probes) and c.agreement.k == len(probes)


def test_a_labeler_who_always_picks_the_left_side_disagrees_on_swapped_probes(tmp_path):
    store = make_store(tmp_path, prompts=40, config=_cfg(probe_share=0.3, probe_min_age=5))
    desk = LabelDesk(store)
    n_probes = 0
    for _ in range(40):
        s = desk.next_pair()
        if s is None:
            break
        n_probes += s.probe
        desk.record_label(s, s.outcome_for_side("left"))
    c = consistency(store.cursor())
    assert n_probes and c.agreement.n == n_probes and c.agreement.k == 0
    assert c.left_choice.value == 1.0 and c.left_choice.lo > 0.9


def test_undoing_a_probe_answer_asks_the_probe_again(tmp_path):
    store = make_store(tmp_path, prompts=40, config=_cfg(probe_share=0.3, probe_min_age=5))
    desk = LabelDesk(store)
    for _ in range(40):
        s = desk.next_pair()
        desk.record_label(s, "a")
        if s.probe:
            break
    assert s.probe
    assert desk.undo() == s.candidate_id
    again = desk.next_pair()
    assert again.candidate_id == s.candidate_id and again.probe_of == s.probe_of and again.left == s.left
    desk.record_label(again, "b")  # now inconsistent
    assert consistency(store.cursor()).agreement.k == 0
    assert len(store.training_pairs()) == store.query("SELECT count(DISTINCT candidate_id) FROM labels")[1][0][0]


def test_probes_off_and_for_oracles(tmp_path):
    store = make_store(tmp_path, prompts=30, config=_cfg(probe_share=0.0, probe_min_age=1))
    desk = LabelDesk(store)
    for _ in range(25):
        desk.record_label(desk.next_pair(), "a")
    assert store.query("SELECT count(*) FROM impressions WHERE probe")[1][0][0] == 0
    store2 = make_store(tmp_path / "o", prompts=30, config=_cfg(probe_share=0.5, probe_min_age=1))
    desk2 = LabelDesk(store2)
    for _ in range(25):
        desk2.record_label(desk2.next_pair("vader"), "a", source="vader")
    assert store2.query("SELECT count(*) FROM impressions WHERE probe")[1][0][0] == 0


def test_arms_side_by_side_with_a_sentence(tmp_path):
    cfg = AplConfig().replace("acquisition", name="certainty", control_share=0.5).replace("loop", probe_share=0.0)
    store = make_store(tmp_path, prompts=40, config=cfg)
    ids = [c["id"] for c in store.candidates()]
    # The model is right (p(a) = .8) on even ids and wrong (p(a) = .3) on odd ones.
    store.add_scores([ScoreRow(c, 1, "certainty", float(c), p_a=0.8 if c % 2 == 0 else 0.3) for c in ids])
    desk = LabelDesk(store)
    for i in range(30):
        s = desk.next_pair()
        desk.record_label(s, "tie" if i % 10 == 0 else "a", latency_ms=1000 + 100 * i)
    ev = evidence(store.cursor())
    assert ev.acquired.labels + ev.control.labels == 30
    assert ev.acquired.labels > 0 and ev.control.labels > 0
    assert ev.acquired.tie.n == ev.acquired.labels
    assert ev.acquired.decision_ms.lo <= ev.acquired.decision_ms.value <= ev.acquired.decision_ms.hi
    assert "accuracy" in ev.sentence and "control" in ev.sentence


def test_apl_stats_prints_evidence_and_draws_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from apl_tui.cli import app

    cfg = AplConfig().replace("acquisition", name="certainty", control_share=0.3).replace("loop", probe_share=0.0)
    store = make_store(tmp_path / "s", prompts=20, config=cfg)
    store.add_scores([ScoreRow(c["id"], 1, "certainty", float(c["id"]), p_a=0.7) for c in store.candidates()])
    store.add_adapter(version=1, parent=None, labels_used=8, label_hash="h", regime="reset", path="adapters/v1",
                      config={}, metrics={"loss": 0.6, "rewards/margins": 0.3}, manifest={}, steps=[])
    store.add_eval({"adapter_version": 1, "oracle": "vader", "settings_hash": "x", "n": 10, "wins": 7, "losses": 3,
                    "ties": 0, "unparseable": 0, "win_rate": 0.7, "stderr": 0.14})
    store.add_eval({"adapter_version": 1, "oracle": "human", "settings_hash": "x", "n": 4, "wins": 3, "losses": 1,
                    "ties": 0, "unparseable": 0, "win_rate": 0.75, "stderr": 0.22})
    desk = LabelDesk(store)
    for i in range(12):
        desk.record_label(desk.next_pair(), "a" if i % 3 else "b", latency_ms=800)
    store.close()
    png = tmp_path / "evidence.png"
    r = CliRunner().invoke(app, ["stats", "--store", str(tmp_path / "s"), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "prequential (last 50)" in r.stdout and "acc 0.67" in r.stdout  # 8 of 12 chose a, p(a) = .7
    flat = " ".join(r.stdout.replace("│", " ").split())
    assert "0.750 ± 0.220 (human," in flat and "0.700 ± 0.140 (vader," in flat
    assert "acquired" in r.stdout and "control" in r.stdout and "self-agreement" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(app, ["stats", "--store", str(tmp_path / "s"), "--plot", str(tmp_path / "x.jpg")])
    assert bad.exit_code == 1 and "PNG" in bad.stderr and "Traceback" not in bad.output


async def test_stats_screen_shows_the_evidence_and_curves(tmp_path):
    from apl_tui.tui.app import LabelApp
    from apl_tui.tui.screens.stats import StatsScreen

    cfg = AplConfig().replace("acquisition", name="certainty", control_share=0.3).replace("loop", probe_share=0.0)
    store = make_store(tmp_path / "s", prompts=20, config=cfg)
    store.add_scores([ScoreRow(c["id"], 1, "certainty", float(c["id"]), p_a=0.7) for c in store.candidates()])
    app = LabelApp(LabelDesk(store))
    async with app.run_test(size=(160, 60)) as pilot:
        for _ in range(6):
            await pilot.press("1")
        await pilot.press("g")
        assert isinstance(app.screen, StatsScreen)
        console_text = _render(app.screen.query_one("#stats-evidence").content)
        assert "prequential (last 50)" in console_text and "random control" in console_text
        assert "accuracy curve, acquired" in console_text and "self-agreement" in console_text
    store.close()


def _render(renderable) -> str:
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(renderable)
    return console.export_text()
