"""Read-ahead: a pair picked while the person reads is the pair the desk would pick after the label."""

from __future__ import annotations

import dataclasses
import random

import pytest

from apl_tui.config import AplConfig
from apl_tui.desk import LabelDesk
from apl_tui.records import NewCandidate
from tests.helpers import make_store, score_all


def _store(root, *, relabel: bool, probes: float = 0.0, probe_age: int = 2):
    cfg = AplConfig()
    cfg = dataclasses.replace(cfg, acquisition=dataclasses.replace(cfg.acquisition, control_share=0.3,
                                                                   allow_relabel_prompts=relabel),
                              loop=dataclasses.replace(cfg.loop, probe_share=probes, probe_min_age=probe_age))
    store = make_store(root, prompts=14, config=cfg)
    # Siblings share a prompt: labeling one takes the others out unless prompts may be relabeled.
    store.add_candidates([NewCandidate(pid, f"C{pid}", f"D{pid}", 0, 0.7, 1.0, 8) for pid in range(1, 8)])
    ids = [r[0] for r in store.query("SELECT id FROM candidates ORDER BY id")[1]]
    rng = random.Random(3)
    score_all(store, {c: rng.random() for c in ids}, version=1, name=cfg.acquisition.name)
    return store


def _session(desk: LabelDesk, ahead: bool, steps: int) -> list[tuple]:
    rng = random.Random(11)
    seen = []
    shown = desk.next_pair()
    while shown is not None and len(seen) < steps:
        seen.append((shown.candidate_id, shown.left, shown.control, shown.labels_since_scored, shown.score,
                     shown.probe))
        if rng.random() < 0.15:
            desk.undo() if desk.labels_this_session else None
            shown = desk.next_pair()
            continue
        outcome = rng.choice(["a", "b", "tie", "skip"])
        if ahead:
            desk.read_ahead()
            shown = desk.label_and_next(shown, outcome)
        else:
            desk.record_label(shown, outcome)
            shown = desk.next_pair()
    return seen


@pytest.mark.parametrize("relabel", [False, True])
def test_read_ahead_shows_the_same_pairs_as_picking_after_the_label(tmp_path, relabel):
    plain = _store(tmp_path / "plain", relabel=relabel)
    ahead = _store(tmp_path / "ahead", relabel=relabel)
    desk = LabelDesk(ahead)
    try:
        seen = _session(desk, True, 30)
        assert _session(LabelDesk(plain), False, 30) == seen
        assert desk.read_ahead_used >= len(seen) // 3  # the picks made ahead were used, not only checked
    finally:
        desk.close()
    assert ahead.counters() == ahead.recounted() == plain.counters()
    # One transaction wrote each label with the next impression: the log is the same too.
    query = "SELECT candidate_id, outcome, shown_left, control FROM labels ORDER BY id"
    assert ahead.query(query)[1] == plain.query(query)[1]


def test_a_pick_labeled_meanwhile_is_not_shown_and_the_label_still_counts(tmp_path):
    store = _store(tmp_path, relabel=False)
    desk = LabelDesk(store)
    try:
        shown = desk.next_pair()
        desk.read_ahead()
        picked = desk._ahead[1].result()["shown"]  # what the desk would show next
        store.record_label(int(picked["candidate_id"]), "a", source="oracle")  # another labeler got there first
        following = desk.label_and_next(shown, "b")
    finally:
        desk.close()
    assert following is not None and following.candidate_id not in (shown.candidate_id, picked["candidate_id"])
    assert store.query("SELECT outcome FROM labels WHERE candidate_id = ? AND source = 'human'",
                       [shown.candidate_id])[1] == [("b",)]
    assert store.counters() == store.recounted()
    assert store.pending_impression()[0]["candidate_id"] == following.candidate_id


@pytest.mark.parametrize("probe_age", [1, 2, 5])
def test_probes_picked_ahead_are_the_probes_picked_after_the_label(tmp_path, probe_age):
    # Finding a probe's target reads the whole label log (≈ 100 ms at 1M labels): it must happen
    # while the person reads, and pick exactly what the key would have picked.
    plain = _store(tmp_path / "plain", relabel=True, probes=0.5, probe_age=probe_age)
    ahead = _store(tmp_path / "ahead", relabel=True, probes=0.5, probe_age=probe_age)
    desk = LabelDesk(ahead)
    try:
        seen = _session(desk, True, 40)
        assert _session(LabelDesk(plain), False, 40) == seen
        probes = sum(s[-1] for s in seen)
        assert probes >= 5 and desk.read_ahead_used >= len(seen) // 3
    finally:
        desk.close()
    assert ahead.counters() == ahead.recounted() == plain.counters()
    query = "SELECT candidate_id, outcome, shown_left, control, probe FROM labels ORDER BY id"
    assert ahead.query(query)[1] == plain.query(query)[1]
    query = "SELECT candidate_id, shown_left, probe, probe_of FROM impressions ORDER BY id"
    assert ahead.query(query)[1] == plain.query(query)[1]


def test_a_probe_picked_ahead_is_not_shown_once_its_label_was_replaced(tmp_path):
    store = _store(tmp_path, relabel=True, probes=0.99, probe_age=1)
    desk = LabelDesk(store)
    try:
        shown = desk.next_pair()
        shown = desk.label_and_next(shown, "a")  # the first label: nothing old enough to probe yet
        desk.read_ahead()
        pick = desk._ahead[1].result()
        assert pick is not None and "probe_of" in pick
        store.record_label(int(pick["shown"]["candidate_id"]), "b", source="human")  # replaces the target
        following = desk.label_and_next(shown, "b")
    finally:
        desk.close()
    assert following is not None and following.probe_of != pick["probe_of"]
    assert store.counters() == store.recounted()
