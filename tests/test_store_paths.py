"""Paths are never pasted into SQL (issue 15): a store folder named with ' and [ works everywhere."""

from __future__ import annotations

from pathlib import Path

import duckdb
from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.snapshot import open_reader, write_snapshot
from apl_tui.store import Store
from tests.helpers import make_store

runner = CliRunner()
ODD = "it's [bold]a store'; DROP TABLE labels; --"


def test_snapshot_and_readers_work_in_a_folder_with_quotes_and_brackets(tmp_path: Path) -> None:
    root = tmp_path / ODD
    store = make_store(root)
    store.record_label(store.candidates()[0]["id"], "a", source="human", shown_left="a")
    write_snapshot(store)  # the store owns the file: readers fall back to this snapshot
    reader = open_reader(root)
    try:
        assert reader.snapshot_age_s is not None
        assert reader.con.execute("select count(*) from preferences").fetchall() == [(1,)]
    finally:
        reader.close()
    r = runner.invoke(app, ["sql", "select count(*) as n from labels", "--store", str(root), "--format", "csv"])
    assert r.exit_code == 0 and r.stdout == "n\n1\n", r.stderr
    store.close()
    target = root / "prefs'[x].jsonl"
    r = runner.invoke(app, ["export", "--store", str(root), "-o", str(target)])
    assert r.exit_code == 0 and target.read_text().count("\n") == 1
    assert f"to {target}" in r.stderr  # the path printed whole, brackets and all
    assert runner.invoke(app, ["stats", "--store", str(root)]).exit_code == 0
    with Store(root) as s:
        assert s.label_counts() == {"a": 1}


def test_init_and_import_print_the_odd_path_whole(tmp_path: Path) -> None:
    root = tmp_path / ODD
    r = runner.invoke(app, ["init", "--store", str(root)])
    assert r.exit_code == 0 and f"created a new store in {root}/" in r.stderr
    prompts = tmp_path / "[train] prompts.txt"
    prompts.write_text("one\ntwo\n")
    r = runner.invoke(app, ["import", str(prompts), "--store", str(root)])
    assert r.exit_code == 0 and f"from {prompts}" in r.stderr


def test_apl_run_keeps_its_snapshot_in_an_odd_folder(tmp_path: Path, model_cache: Path, tiny_model: object,
                                                    monkeypatch) -> None:
    """The reported crash: `apl run` wrote the snapshot after every label with the path pasted in."""
    from tests.test_loop import make_store as loop_store
    from tests.test_loop import small_config

    root = tmp_path / ODD
    loop_store(root, small_config()).close()
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    r = runner.invoke(app, ["run", "--oracle", "vader", "--budget", "4", "--store", str(root)])
    assert r.exit_code == 0, r.stderr
    n = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)",
                                 [str(root / "snapshot" / "labels.parquet")]).fetchall()[0][0]
    assert n >= 1
