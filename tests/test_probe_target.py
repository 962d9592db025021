"""The probe target found a page at a time is the one ranking every effective label would give."""

from __future__ import annotations

import random

import pytest

from apl_tui import probes
from apl_tui.records import NewCandidate
from tests.helpers import make_store

VIEW = ("SELECT e.id, e.candidate_id, e.shown_left FROM effective_labels e WHERE e.source = ? AND e.id < ? "
        "AND e.outcome IN ('a', 'b', 'tie', 'both_bad') AND NOT EXISTS (SELECT 1 FROM impressions i "
        "WHERE coalesce(i.probe, false) AND i.candidate_id = e.candidate_id) ORDER BY hash(e.id, ?) LIMIT 1")
EDGE = "SELECT id FROM labels WHERE outcome <> 'undo' ORDER BY id DESC LIMIT 1 OFFSET ?"


def _messy_store(root):
    """Labels of two sources, with skips, relabels, undos, probe impressions and probe answers."""
    store = make_store(root, prompts=30)
    store.add_candidates([NewCandidate(pid, f"C{pid}", f"D{pid}", 0, 0.7, 1.0, 8) for pid in range(1, 31)])
    cands = [r[0] for r in store.query("SELECT id FROM candidates ORDER BY id")[1]]
    rng = random.Random(5)
    for _ in range(160):
        cand = rng.choice(cands)
        source = rng.choice(["human", "human", "human", "oracle"])
        roll = rng.random()
        if roll < 0.15:
            store.undo_last(source)
        elif roll < 0.25:
            shown = store.shown(cand, rank=1)
            shown["probe_of"] = 1
            store.record_impression(shown, left="a", control=False, source=source)
        else:
            store.record_label(cand, rng.choice(["a", "b", "tie", "both_bad", "skip"]), source=source,
                               shown_left="a", probe=roll < 0.3)
    return store


@pytest.mark.parametrize(("page", "pages"), [(16, 4), (2, 1), (1, 3)])
def test_paged_probe_target_equals_ranking_every_effective_label(tmp_path, monkeypatch, page, pages):
    monkeypatch.setattr(probes, "PROBE_PAGE", page)
    monkeypatch.setattr(probes, "PROBE_PAGES", pages)
    store = _messy_store(tmp_path)
    found = 0
    for seed in range(40):
        for source in ("human", "oracle"):
            for min_age in (1, 3, 20):
                edge = store.query(EDGE, [min_age - 1])[1]
                want = store.query(VIEW, [source, edge[0][0], seed])[1] if edge else []
                got = store.probe_target(source, min_age=min_age, seed=seed)
                assert got == (tuple(want[0]) if want else None), (seed, source, min_age)
                found += got is not None
    assert found > 100  # most draws find a target: the comparison is not of Nones
