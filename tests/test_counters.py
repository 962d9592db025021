"""The kept counters equal the aggregates over the log after any sequence of writes."""

from __future__ import annotations

import json
import random

import pytest

from apl_tui.desk import LabelDesk
from apl_tui.records import NewCandidate, ScoreRow
from apl_tui.store import Store
from tests.helpers import make_store


def _adapter(store: Store, version: int) -> None:
    """Record an adapter trained on the effective a/b labels now, as a round does."""
    ids = sorted(int(r["label_id"]) for r in store.training_pairs())
    store.add_adapter(version=version, parent=None, labels_used=len(ids), label_hash="h", regime="reset",
                      path=f"adapters/v{version}", config={}, metrics={},
                      manifest={"label_ids": ids, "label_clock": store.label_events(),
                                "label_watermark": store.label_watermark()}, steps=[])


def _since_from_timestamps(store: Store, candidate_id: int) -> int | None:
    """Labels since the candidate's queue score, counted the old way (label timestamps)."""
    row = store.query("SELECT scored_at FROM queue WHERE candidate_id = ?", [candidate_id])[1]
    if not row or row[0][0] is None:
        return None
    return store.query("SELECT count(*) FROM labels WHERE outcome <> 'undo' AND created_at > ?", [row[0][0]])[1][0][0]


@pytest.mark.parametrize("seed", [1, 2])
def test_counters_equal_the_aggregates_after_random_operations(tmp_path, seed):
    import dataclasses

    from apl_tui.config import AplConfig

    cfg = AplConfig()  # consistency probes on: their answers and undos are label events, never effective
    cfg = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, probe_share=0.25, probe_min_age=2))
    store = make_store(tmp_path, prompts=10, config=cfg)
    # Siblings: a second pair for some prompts, so labels flip other queue rows' prompt_labeled.
    store.add_candidates([NewCandidate(pid, f"C{pid}", f"D{pid}", 0, 0.7, 1.0, 8) for pid in (1, 2, 3, 4)])
    desk = LabelDesk(store)
    rng = random.Random(seed)
    version = 0
    assert store.counters() == store.recounted()
    for step in range(100):
        ids = [r[0] for r in store.query("SELECT id FROM candidates")[1]]
        op = rng.choice(["desk", "desk", "desk", "skip", "other", "undo", "undo", "score", "add", "adapter",
                         "retire"])
        if op in ("desk", "skip"):
            shown = desk.next_pair()
            if shown is not None:
                desk.record_label(shown, "skip" if op == "skip" else rng.choice(["a", "b", "tie", "both_bad"]))
        elif op == "other":  # another source labels any candidate, queued or not (the slow path)
            store.record_label(rng.choice(ids), rng.choice(["a", "b", "skip"]), source="oracle")
        elif op == "undo":
            if rng.random() < 0.7:
                desk.undo()
            else:
                store.undo_last("oracle")
        elif op == "score":
            store.add_scores([ScoreRow(c, max(version, 1), "certainty", rng.random()) for c in rng.sample(ids, 4)])
        elif op == "add":
            store.add_candidates([NewCandidate(rng.randrange(1, 11), f"x{step}", f"y{step}", 0, 0.7, 1.0, 8)])
        elif op == "adapter":
            version += 1
            _adapter(store, version)
        elif op == "retire" and store.adapter_versions():
            store.retire_adapter(rng.choice(store.adapter_versions()))
        assert store.counters() == store.recounted(), (step, op)
        for cid in [r[0] for r in store.query("SELECT candidate_id FROM queue")[1]]:
            shown = store.shown(cid)
            assert shown["labels_since_scored"] == _since_from_timestamps(store, cid), (step, op, cid)
    state = store.loop_state()
    assert state["labels"] == sum(store.label_counts().values())
    assert store.query("SELECT count(*) FROM labels WHERE probe")[1][0][0] > 0  # probes were answered
    assert state["undone_in_adapter"] == store.recounted()["undone_in_adapter"]


def test_undo_of_a_trained_label_counts_until_the_next_adapter(tmp_path):
    store = make_store(tmp_path, prompts=4)
    desk = LabelDesk(store)
    for _ in range(3):
        desk.record_label(desk.next_pair(), "a")
    _adapter(store, 1)
    desk.undo()
    assert store.loop_state()["undone_in_adapter"] == 1 == store.recounted()["undone_in_adapter"]
    desk.record_label(desk.next_pair(), "b")  # newer than the adapter: undoing it does not count
    desk.undo()
    assert store.loop_state()["undone_in_adapter"] == 1
    _adapter(store, 2)
    assert store.loop_state()["undone_in_adapter"] == 0 == store.recounted()["undone_in_adapter"]
    store.retire_adapter(2)  # back to v1, which still knows the undone label
    assert store.loop_state()["undone_in_adapter"] == 1 == store.recounted()["undone_in_adapter"]
    assert store.loop_state()["adapter_version"] == 1
    manifest = json.loads(store.latest_adapter()["manifest"])
    assert store.loop_state()["label_clock"] == manifest["label_clock"]


def test_a_store_of_the_old_schema_gets_its_counters_and_clocks_from_the_log(tmp_path, monkeypatch):
    from apl_tui import migrations

    # A store as the release before the counters left it, written with that release's SQL.
    before = next(i for i, m in enumerate(migrations.MIGRATIONS) if m[1].startswith("loop counters"))
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:before])
    monkeypatch.setattr(migrations, "LATEST", migrations.MIGRATIONS[before - 1][0])
    store = Store.create(tmp_path)
    store.add_prompts([f"p{i}" for i in range(4)], split="train", source="t")
    cur = store.cursor()
    cur.execute("INSERT INTO candidates (prompt_id, completion_a, completion_b, adapter_version) "
                "SELECT id, 'a', 'b', 0 FROM prompts")
    cur.execute("INSERT INTO queue (candidate_id, prompt_id) SELECT id, prompt_id FROM candidates")
    cur.execute("INSERT INTO labels (candidate_id, outcome, source) VALUES (1, 'a', 'human'), (2, 'skip', 'human')")
    cur.execute("INSERT INTO scores (candidate_id, adapter_version, acquisition, score) "
                "SELECT id, 1, 'certainty', 0.5 FROM candidates")
    cur.execute("UPDATE queue SET acquisition = 'certainty', adapter_version = 1, score = 0.5, "
                "scored_at = (SELECT max(scored_at) FROM scores)")
    cur.execute("INSERT INTO labels (candidate_id, outcome, source) VALUES (3, 'b', 'human')")
    cur.execute("INSERT INTO labels (candidate_id, outcome, undoes, source) VALUES (3, 'undo', 3, 'human')")
    cur.execute("DELETE FROM queue WHERE candidate_id IN (1, 2)")
    cur.execute("INSERT INTO impressions (candidate_id, shown_left, source) VALUES (3, 'a', 'human')")
    store.close()
    monkeypatch.undo()
    again = Store(tmp_path)
    assert again.schema_version() == migrations.LATEST
    assert again.counters() == again.recounted()
    assert again.loop_state()["labels"] == 2 and again.loop_state()["pool"] == 2
    # One label (the 'b', undone since) came after the scores: the clocks say so, as timestamps did.
    assert {c: again.shown(c)["labels_since_scored"] for c in (3, 4)} == {3: 1, 4: 1}
    assert again.pending_impression()[0]["candidate_id"] == 3
