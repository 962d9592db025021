"""The data commands through Typer's CliRunner: init, import, sql, export, stats."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from apl_tui.cli import app
from tests.helpers import make_store

runner = CliRunner()


def apl(*args: str):
    return runner.invoke(app, list(args))


def _counts(store) -> str:
    return apl("sql", "select split, count(*) from prompts group by 1 order by 1", "--store", str(store),
               "--format", "csv").stdout


def test_init_import_and_sql_show_both_splits(tmp_path):
    store = tmp_path / "s"
    assert apl("init", "--store", str(store)).exit_code == 0
    (tmp_path / "train.txt").write_text("one\ntwo\nthree\ntwo\n")
    (tmp_path / "test.jsonl").write_text('{"prompt": "four"}\n')
    r = apl("import", str(tmp_path / "train.txt"), "--store", str(store))
    assert r.exit_code == 0 and "1 duplicates skipped" in r.stderr
    assert apl("import", str(tmp_path / "test.jsonl"), "--split", "test", "--store", str(store)).exit_code == 0
    assert _counts(store) == "split,count_star()\ntest,1\ntrain,3\n"


def test_malformed_file_leaves_counts_unchanged(tmp_path):
    store = tmp_path / "s"
    apl("init", "--store", str(store))
    (tmp_path / "ok.txt").write_text("one\n")
    apl("import", str(tmp_path / "ok.txt"), "--store", str(store))
    before = _counts(store)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "new one"}\n{"prompt": 3\n')
    r = apl("import", str(tmp_path / "bad.jsonl"), "--store", str(store))
    assert r.exit_code == 1
    assert "bad.jsonl:2" in r.stderr and "Traceback" not in r.stderr
    assert _counts(store) == before


def test_sql_refuses_writes(tmp_path):
    make_store(tmp_path).close()
    r = apl("sql", "delete from labels", "--store", str(tmp_path))
    assert r.exit_code == 1 and "read-only" in r.stderr
    r = apl("sql", "select nope from prompts", "--store", str(tmp_path))
    assert r.exit_code == 1 and "SQL error" in r.stderr


def test_export_is_trl_schema_with_provenance(tmp_path):
    store = make_store(tmp_path)
    c = [x["id"] for x in store.candidates()]
    store.record_label(c[0], "b", source="human", shown_left="b")
    store.record_label(c[1], "tie", source="human", shown_left="a")
    store.record_label(c[2], "both_bad", source="human", shown_left="a")
    store.close()
    r = apl("export", "--store", str(tmp_path))
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 1
    assert rows[0]["chosen"] == "B1 bad longer" and rows[0]["rejected"] == "A1 good"
    assert {"prompt", "chosen", "rejected", "pair_id", "outcome", "shown_left", "source", "labeled_at",
            "acquisition", "score", "adapter_version"} <= set(rows[0])
    both = [json.loads(line) for line in apl("export", "--store", str(tmp_path), "--ties", "both").stdout.splitlines()]
    assert len(both) == 3
    ties = [(r["chosen"], r["rejected"]) for r in both if r["outcome"] == "tie"]
    assert ties[0] == ties[1][::-1]
    out = tmp_path / "p.parquet"
    assert apl("export", "--store", str(tmp_path), "-f", "parquet", "-o", str(out)).exit_code == 0
    import pyarrow.parquet as pq
    assert pq.read_table(out).num_rows == 1


def test_stats_reports_biases(tmp_path):
    store = make_store(tmp_path)
    c = [x["id"] for x in store.candidates()]
    store.record_label(c[0], "a", source="human", shown_left="a")
    store.record_label(c[1], "a", source="human", shown_left="b")
    store.close()
    r = apl("stats", "--store", str(tmp_path))
    assert r.exit_code == 0
    assert "left chosen 50.0% of 2 decided" in r.stdout
