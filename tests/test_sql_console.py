"""The SQL console is read-only by construction (issue 15): smuggled writes fail, nothing changes.

Every variant runs against the live store (attached READ_ONLY) and against the snapshot (while
this process owns the file, as the app does), through `apl sql` and, separately, straight on the
sealed connection without the friendly statement check, so the check is not what protects.
After each one, every file under the test folder must be byte-for-byte what it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.sealed import open_console, run_query
from apl_tui.snapshot import write_snapshot
from apl_tui.store import Store
from tests.helpers import make_store

runner = CliRunner()

SMUGGLED = {
    "plain delete": "DELETE FROM labels",
    "explain analyze delete": "EXPLAIN ANALYZE DELETE FROM labels",
    "explain analyze update": "explain analyze update labels set outcome = 'b'",
    "explain analyze insert": "EXPLAIN ANALYZE INSERT INTO labels (candidate_id, outcome, source) "
                              "VALUES (1, 'a', 'forged')",
    "explain analyze drop view": "EXPLAIN ANALYZE DROP VIEW preferences",
    "delete in a CTE": "WITH gone AS (DELETE FROM labels RETURNING *) SELECT count(*) FROM gone",
    "insert in a CTE": "WITH f AS (INSERT INTO labels (candidate_id, outcome, source) VALUES (1, 'b', 'x') "
                       "RETURNING *) SELECT * FROM f",
    "copy to a file": "COPY (SELECT * FROM labels) TO '{out}'",
    "explain analyze copy": "EXPLAIN ANALYZE COPY (SELECT * FROM labels) TO '{out}'",
    "copy over the snapshot": "COPY (SELECT 42 AS id) TO '{snap}' (FORMAT parquet, USE_TMP_FILE false)",
    "copy into labels": "COPY labels FROM '{csv}'",
    "export database": "EXPORT DATABASE '{dir}'",
    "attach": "ATTACH '{db}' AS evil",
    "pragma": "PRAGMA enable_profiling = 'json'",
    "set profiling output": "SET profiling_output = '{out}'",
    "set external access": "SET enable_external_access = true",
    "multi-statement": "SELECT 1; DELETE FROM labels",
    "comment first": "/* looks harmless */ DELETE FROM labels",
    "read a system file": "SELECT * FROM read_csv('/etc/passwd')",
    "explain analyze read": "EXPLAIN ANALYZE SELECT * FROM read_text('{csv}')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "install extension": "INSTALL httpfs",
    "checkpoint": "CHECKPOINT",
}


def _fingerprint(root: Path) -> dict[str, str]:
    """Every file and folder under root (the store, its snapshot, anything a leak creates) → sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module", params=["live", "snapshot"])
def built(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str], str]]:
    """A store with three labels, built once per mode; in "snapshot" mode this process owns it
    read-write, as the app does. Every test checks it is left unchanged, so sharing it is safe."""
    folder = tmp_path_factory.mktemp(f"console-{request.param}")
    root = folder / "store"
    store = make_store(root)
    for cid in [c["id"] for c in store.candidates()][:3]:
        store.record_label(cid, "a", source="human", shown_left="a")
    (folder / "leak").mkdir()
    (folder / "forged.csv").write_text("id,candidate_id,outcome\n999,1,b\n")
    subs = {"out": str(folder / "leak" / "x.csv"), "dir": str(folder / "leak" / "dump"),
            "db": str(folder / "leak" / "evil.duckdb"), "csv": str(folder / "forged.csv"),
            "snap": str(root / "snapshot" / "labels.parquet")}
    write_snapshot(store)
    if request.param == "live":
        store.close()
        yield root, subs, "live"
    else:
        try:
            yield root, subs, "snapshot"
        finally:
            store.close()


@pytest.fixture
def setup(built: tuple[Path, dict[str, str], str],
          monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str], str]:
    monkeypatch.chdir(built[0].parent)  # a relative write (DuckDB's .tmp spill folder) would land here too
    return built


def _labels(root: Path) -> list[tuple[object, ...]]:
    con, _ = open_console(root)
    try:
        return run_query(con, "SELECT id, candidate_id, outcome, source FROM labels ORDER BY id")[1]
    finally:
        con.close()


@pytest.mark.parametrize("name", list(SMUGGLED))
def test_apl_sql_refuses_each_smuggling_variant(setup: tuple[Path, dict[str, str], str], name: str) -> None:
    root, subs, _ = setup
    folder = root.parent
    before, labels = _fingerprint(folder), _labels(root)
    r = runner.invoke(app, ["sql", SMUGGLED[name].format(**subs), "--store", str(root), "--format", "csv"])
    assert r.exit_code == 1, r.stdout
    lines = [line for line in r.stderr.splitlines() if not line.startswith("note:")]
    assert lines[0].startswith("error: ") and len(lines) <= 2 and "Traceback" not in r.stderr
    assert _fingerprint(folder) == before  # the store, the snapshot, and no new file anywhere
    assert _labels(root) == labels and len(labels) == 3


@pytest.mark.parametrize("name", list(SMUGGLED))
def test_sealed_connection_alone_holds_without_the_statement_check(
        setup: tuple[Path, dict[str, str], str], name: str) -> None:
    """Straight on the connection, no parser in front: writes to the store or to files fail."""
    root, subs, mode = setup
    folder = root.parent
    before = _fingerprint(folder)
    con, _ = open_console(root)
    try:
        try:
            con.execute(SMUGGLED[name].format(**subs)).fetchall()
            refused = False
        except duckdb.Error:
            refused = True
    finally:
        con.close()
    assert _fingerprint(folder) == before
    assert len(_labels(root)) == 3
    # What may succeed touches only the console's private in-memory catalog: a checkpoint of it
    # (a no-op), and over the snapshot, dropping one of the connection's own view definitions.
    harmless = {"checkpoint"} | ({"explain analyze drop view"} if mode == "snapshot" else set())
    if name not in harmless:
        assert refused, f"{name} ran on the sealed connection"


def test_reads_still_work_in_both_modes(setup: tuple[Path, dict[str, str], str]) -> None:
    root, _, _ = setup
    for sql, expected in [
        ("select count(*) from effective_labels", [(3,)]),
        ("select count(*) from preferences", [(3,)]),
        ("SELECT count(*) FROM labels -- ; DELETE FROM labels", [(3,)]),
        ("/* a comment */ select count(*) from prompts where split = 'train'", [(6,)]),
    ]:
        r = runner.invoke(app, ["sql", sql, "--store", str(root), "--format", "csv"])
        assert r.exit_code == 0, r.stderr
        assert r.stdout.splitlines()[1] == str(expected[0][0])
    for sql in ("describe labels", "explain analyze select count(*) from labels", "summarize prompts"):
        assert runner.invoke(app, ["sql", sql, "--store", str(root)]).exit_code == 0, sql
    assert len(_labels(root)) == 3


def test_files_are_never_readable_from_the_console(tmp_path: Path) -> None:
    """Documented in the README: the console answers questions about the store, nothing else."""
    make_store(tmp_path / "s").close()
    (tmp_path / "mine.csv").write_text("a,b\n1,2\n")
    for sql in (f"select * from '{tmp_path / 'mine.csv'}'", "select * from read_csv('/etc/passwd')",
                "select * from read_text('/etc/hostname')", "select * from read_parquet('/tmp/*.parquet')"):
        r = runner.invoke(app, ["sql", sql, "--store", str(tmp_path / "s")])
        assert r.exit_code == 1 and "refused" in r.stderr and "root:" not in r.stdout, sql
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert "read_csv('/etc/passwd')" in readme


def test_the_live_reader_is_sealed(tmp_path: Path) -> None:
    """Reading the live file: no snapshot involved, external access off, settings locked."""
    store = Store.create(tmp_path)
    store.add_prompts(["one"], split="train", source="t")
    store.close()
    con, written_at = open_console(tmp_path)
    try:
        assert written_at is None
        assert con.execute("select count(*) from prompts").fetchall() == [(1,)]
        assert con.execute("select current_setting('enable_external_access'), "
                           "current_setting('lock_configuration')").fetchall() == [(False, True)]
    finally:
        con.close()


async def test_the_apps_sql_screen_refuses_them_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `:` screen inside the app that owns the file read-write: same refusals, same store."""
    from textual.widgets import DataTable, Input

    from apl_tui.desk import LabelDesk
    from apl_tui.tui.app import LabelApp
    from apl_tui.tui.screens.sql import SqlScreen

    monkeypatch.chdir(tmp_path)
    store = make_store(tmp_path / "store")
    subs = {"out": str(tmp_path / "x.csv"), "dir": str(tmp_path / "dump"), "db": str(tmp_path / "evil.duckdb"),
            "csv": str(tmp_path / "store" / "config.toml"),
            "snap": str(tmp_path / "store" / "snapshot" / "labels.parquet")}
    app = LabelApp(LabelDesk(store), snapshot_interval_s=3600)  # only the screen's own write
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("1", "2")
        await pilot.press("colon")
        screen = app.screen
        assert isinstance(screen, SqlScreen)
        labels = store.label_counts()
        assert sum(labels.values()) == 2
        before = _fingerprint(tmp_path)
        for name, sql in SMUGGLED.items():
            screen.query_one(Input).value = sql.format(**subs)
            await pilot.press("enter")
            message = str(screen.query_one("#sql-message").content)
            assert message.startswith(("read-only", "refused", "one statement", "SQL error")), (name, message)
            assert screen.query_one(DataTable).row_count == 0
        assert _fingerprint(tmp_path) == before and store.label_counts() == labels
        # A bracketed value is shown as it is (cells are not markup), and the labels are all there.
        screen.query_one(Input).value = "select '[bold]kept[/] [train]' as t, count(*) from effective_labels"
        await pilot.press("enter")
        table = screen.query_one(DataTable)
        assert [str(c) for c in table.get_row_at(0)] == ["[bold]kept[/] [train]", "2"]
