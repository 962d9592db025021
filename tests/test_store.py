"""The store: schema, migrations, the label log, the queue and the snapshot."""

from __future__ import annotations

import duckdb
import pytest

from apl_tui import migrations
from apl_tui.errors import StoreError
from apl_tui.records import ScoreRow
from apl_tui.snapshot import open_reader, write_snapshot
from apl_tui.store import Store
from tests.helpers import make_store, score_all


def _columns(con) -> dict[str, list[tuple[str, str]]]:
    rows = con.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                       "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position").fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for t, c, d in rows:
        out.setdefault(t, []).append((c, d))
    return out


def test_old_store_is_migrated_to_the_same_columns(tmp_path):
    fresh = Store.create(tmp_path / "fresh")
    # An "old" store: only migration 1 applied, as an earlier release would have left it.
    old_root = tmp_path / "old"
    old_root.mkdir()
    con = duckdb.connect(str(old_root / "apl.duckdb"))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, "
                "applied_at TIMESTAMP DEFAULT current_timestamp)")
    con.execute(migrations.MIGRATIONS[0][2])
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'core tables')")
    con.execute("INSERT INTO prompts (text, split) VALUES ('kept', 'train')")
    con.close()
    old = Store(old_root)
    assert old.schema_version() == migrations.LATEST
    assert _columns(old.cursor()) == _columns(fresh.cursor())
    assert old.prompt_counts() == {"train": 1}


def test_newer_store_is_refused(tmp_path):
    store = Store.create(tmp_path)
    store.cursor().execute("INSERT INTO schema_migrations (version, name) VALUES (?, 'future')",
                           [migrations.LATEST + 1])
    store.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path)


def test_missing_store_says_how_to_create_one(tmp_path):
    with pytest.raises(StoreError) as e:
        Store(tmp_path / "nope")
    assert "apl init" in e.value.hint


def test_duplicates_are_counted_not_imported(tmp_path):
    store = Store.create(tmp_path)
    assert store.add_prompts(["x", "y", "x"], split="train", source="f") == (2, 1)
    assert store.add_prompts(["y", "z"], split="test", source="f") == (1, 1)
    assert store.prompt_counts() == {"train": 2, "test": 1}


def test_undo_any_depth_restores_the_queue(tmp_path):
    store = make_store(tmp_path, prompts=4)
    ids = [c["id"] for c in store.candidates()]
    for cid, outcome in zip(ids, ["a", "b", "tie"]):
        store.record_label(cid, outcome, source="human", shown_left="a")
    assert store.label_counts() == {"a": 1, "b": 1, "tie": 1}
    assert store.undo_last() == (ids[2], "a", False)
    assert store.undo_last() == (ids[1], "a", False)
    assert store.label_counts() == {"a": 1}
    assert store.pool_size() == 3
    # the log keeps every event: 3 labels + 2 undos
    assert store.query("SELECT count(*) FROM labels")[1][0][0] == 5
    prefs = store.query("SELECT pair_id, chosen FROM preferences")[1]
    assert prefs == [(ids[0], "A1 good")]


def test_queue_prefers_fresh_scores_over_stale_ones(tmp_path):
    store = make_store(tmp_path, prompts=3)
    c1, c2, c3 = [c["id"] for c in store.candidates()]
    score_all(store, {c1: 9.0, c2: 1.0, c3: 0.5}, version=1)
    assert store.best_unlabeled("certainty")["candidate_id"] == c1
    # adapter v2 rescored only c2 and c3: c1's high score is stale and must not win
    score_all(store, {c2: 0.2, c3: 0.7}, version=2)
    best = store.best_unlabeled("certainty")
    assert best["candidate_id"] == c3 and best["scored_by"] == 2
    store.record_label(c1, "a", source="human")
    assert store.best_unlabeled("certainty")["labels_since_scored"] == 1


def test_queue_skips_prompts_already_labeled(tmp_path):
    store = make_store(tmp_path, prompts=2)
    c1, _ = [c["id"] for c in store.candidates()]
    pid = store.candidates([c1])[0]["prompt_id"]
    from apl_tui.records import NewCandidate
    (twin,) = store.add_candidates([NewCandidate(pid, "x", "y", 0, 0.7, 1.0, 8)])
    store.add_scores([ScoreRow(twin, 0, "random", 5.0)])
    store.record_label(c1, "a", source="human")
    assert store.best_unlabeled("random")["candidate_id"] != twin
    assert store.best_unlabeled("random", exclude_labeled_prompts=False)["candidate_id"] == twin


def test_snapshot_serves_readers_while_the_owner_holds_the_file(tmp_path):
    store = make_store(tmp_path)
    cid = store.candidates()[0]["id"]
    store.record_label(cid, "b", source="human", shown_left="a")
    write_snapshot(store)
    import subprocess
    import sys
    # Another process cannot open the live file while this one owns it; it reads the snapshot.
    code = ("from apl_tui.snapshot import open_reader; import sys; r = open_reader(sys.argv[1]); "
            "print(r.snapshot_age_s is not None, r.con.execute('select count(*) from preferences').fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "1"]
    store.close()
    reader = open_reader(tmp_path)
    assert reader.snapshot_age_s is None
    reader.close()


def _queue_from_log(store) -> set[tuple]:
    """What the queue must hold, recomputed from the append-only tables alone."""
    return set(store.query(
        "SELECT c.id, c.prompt_id IN (SELECT c2.prompt_id FROM effective_labels e JOIN candidates c2 "
        "ON c2.id = e.candidate_id), s.adapter_version, s.score FROM candidates c "
        "JOIN prompts p ON p.id = c.prompt_id AND p.split = 'train' LEFT JOIN (SELECT * FROM scores QUALIFY "
        "row_number() OVER (PARTITION BY candidate_id ORDER BY adapter_version DESC, scored_at DESC) = 1) s "
        "ON s.candidate_id = c.id WHERE c.id NOT IN (SELECT candidate_id FROM effective_labels)")[1])


def _queue(store) -> set[tuple]:
    return set(store.query("SELECT candidate_id, prompt_labeled, adapter_version, score FROM queue")[1])


def test_queue_always_agrees_with_the_log(tmp_path):
    import random

    from apl_tui.records import NewCandidate
    store = make_store(tmp_path, prompts=8)
    rng = random.Random(7)
    for step in range(120):
        ids = [r[0] for r in store.query("SELECT id FROM candidates")[1]]
        op = rng.choice(["label", "label", "undo", "score", "add"])
        if op == "label":
            store.record_label(rng.choice(ids), rng.choice(["a", "b", "tie", "skip"]), source=rng.choice(["h", "o"]))
        elif op == "undo":
            store.undo_last(rng.choice(["h", "o"]))
        elif op == "score":
            version = rng.randrange(3)
            store.add_scores([ScoreRow(c, version, "certainty", rng.random()) for c in rng.sample(ids, 3)])
        else:
            store.add_candidates([NewCandidate(rng.randrange(1, 9), "x", "y", 0, 0.7, 1.0, 8)])
        assert _queue(store) == _queue_from_log(store), (step, op)


def test_migration_builds_the_queue_from_an_old_log(tmp_path, monkeypatch):
    # A store as a release with migrations 1–3 left it; then the queue dropped and v3 forgotten.
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
    monkeypatch.setattr(migrations, "LATEST", 3)
    # Written with that release's SQL (today's writes keep counters a v3 store does not have).
    store = Store.create(tmp_path)
    store.add_prompts([f"train prompt {i}" for i in range(4)], split="train", source="t.txt")
    cur = store.cursor()
    cur.execute("INSERT INTO candidates (prompt_id, completion_a, completion_b, adapter_version) "
                "SELECT id, 'A' || id, 'B' || id, 0 FROM prompts ORDER BY id")
    cur.execute("INSERT INTO queue (candidate_id, prompt_id) SELECT id, prompt_id FROM candidates")
    c = [x["id"] for x in store.candidates()]
    cur.execute("INSERT INTO scores (candidate_id, adapter_version, acquisition, score) VALUES "
                "(?, 1, 'certainty', 0.5), (?, 1, 'certainty', 0.9)", [c[0], c[1]])
    cur.execute("UPDATE queue SET acquisition = s.acquisition, adapter_version = s.adapter_version, score = s.score, "
                "scored_at = s.scored_at FROM scores s WHERE queue.candidate_id = s.candidate_id")
    store.cursor().execute("INSERT INTO labels (candidate_id, outcome, source) VALUES (?, 'a', 'human')", [c[1]])
    store.cursor().execute("DELETE FROM queue WHERE candidate_id = ?", [c[1]])
    store.cursor().execute("UPDATE queue SET prompt_labeled = true WHERE prompt_id = "
                           "(SELECT prompt_id FROM candidates WHERE id = ?)", [c[1]])
    expected = _queue(store)
    # back to a v2 store: drop what migration 3 and later ones made
    store.cursor().execute("DROP TABLE queue")
    store.cursor().execute("DELETE FROM schema_migrations WHERE version = 3")
    store.close()
    monkeypatch.undo()
    again = Store(tmp_path)
    assert again.schema_version() == migrations.LATEST
    assert _queue(again) == expected == _queue_from_log(again)
    assert again.counters() == again.recounted()
    assert again.loop_state()["labels"] == 1
