"""User SQL on a connection that cannot write: the console of `apl sql` and of the app's `:` screen.

Part of the store layer (like `queries.py`). Read-only by construction, not by inspecting the
statement: every user statement runs on a private in-memory DuckDB that

- sees the store only through read-only sources: the database file ATTACHed `READ_ONLY` (when no
  other process owns it), or the Parquet snapshot handed over as pyarrow datasets (DuckDB never
  opens those files itself, so it holds no path it could write to);
- then has `enable_external_access` switched off (no COPY … TO, EXPORT, ATTACH, read_csv, glob,
  INSTALL or LOAD of extensions from disk), extension autoloading and installing, persistent
  secrets, Python replacement scans and spilling to a temp folder off;
- and finally `lock_configuration` on, so no SET, RESET or PRAGMA can undo any of it.

Whatever a statement smuggles (EXPLAIN ANALYZE DELETE, a DELETE inside a CTE, COPY hidden in a
comment trick), it can at most change this private in-memory catalog, which is thrown away.
`check_statement` is only the friendly first line: one statement, SELECT or EXPLAIN, so a typo'd
DELETE gets a clear "read-only" message instead of DuckDB's wording.

Files are never readable from the console (not `/etc/passwd`, not a CSV of your own): the console
answers questions about the store, and under `apl serve` anyone who reaches the page reaches it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from apl_tui.errors import AplError, StoreError, StoreLockedError, first_line

TABLES = ("prompts", "candidates", "scores", "labels", "impressions", "adapters", "train_metrics", "evals",
          "adapter_retirements", "eval_pairs", "eval_judgments")
"""The tables a snapshot holds (the live store has these plus its bookkeeping tables)."""
ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN")
LIVE_ALIAS = "store"

# Settings given when the in-memory database is created: nothing here needs a file to be read.
_AT_CONNECT = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_persistent_secrets": False,
    "python_enable_replacements": False,
    "temp_directory": "",
}
# Applied after the sources are attached, in this order: the lock comes last.
_SEAL = ("SET enable_external_access = false", "SET lock_configuration = true")

# Comments and blanks between keywords, then EXPLAIN, an optional ANALYZE or (options).
_GAP = r"(?:\s|--[^\n]*(?:\n|$)|/\*.*?\*/)*"
_EXPLAIN = re.compile(rf"^{_GAP}EXPLAIN\b{_GAP}(?:ANALYZE\b|\([^()]*\))?(?P<inner>.*)$", re.IGNORECASE | re.DOTALL)

TABLES_HINT = ("tables: prompts, candidates, scores, labels, impressions, adapters, adapter_retirements, "
               "train_metrics, evals, eval_pairs, eval_judgments; "
               "views: preferences, effective_labels")


def _connect() -> Any:
    import duckdb

    return duckdb.connect(":memory:", config=dict(_AT_CONNECT))


def _seal(con: Any) -> Any:
    """Switch off every way out of the process and lock the settings; verify it took."""
    for statement in _SEAL:
        con.execute(statement)
    ((external, locked),) = con.execute("SELECT current_setting('enable_external_access'), "
                                        "current_setting('lock_configuration')").fetchall()
    if external or not locked:  # never expected: refuse rather than run user SQL unsealed
        con.close()
        raise StoreError("could not seal the SQL console's connection", hint="report this as a bug")
    return con


def open_live(db_path: Path) -> Any:
    """A sealed connection over the database file, attached read-only.

    Raises StoreLockedError when another process (or this one) owns the file read-write: DuckDB
    then refuses a second opener, and the caller reads the snapshot instead.
    """
    import duckdb

    from apl_tui import migrations
    from apl_tui.store import is_lock_error

    con = _connect()
    try:
        con.execute(f"ATTACH ? AS {LIVE_ALIAS} (READ_ONLY)", [str(db_path)])
        con.execute(f"USE {LIVE_ALIAS}")
    except duckdb.Error as e:
        con.close()
        text = str(e)
        if is_lock_error(e) or "already attached" in text or "Unique file handle conflict" in text:
            raise StoreLockedError(f"{db_path} is in use by another apl process",
                                   hint="read-only commands use its snapshot; otherwise close the other app") from e
        raise StoreError(f"cannot open {db_path}: {first_line(e)}", hint="is this an apl store folder?") from e
    try:
        current = con.execute("SELECT max(version) FROM schema_migrations").fetchall()[0][0] or 0
    except duckdb.Error as e:
        con.close()
        raise StoreError(f"{db_path} is not an apl store (no schema_migrations table)",
                         hint="create one with `apl init`") from e
    if current != migrations.LATEST:
        con.close()
        if current > migrations.LATEST:
            raise StoreError(f"{db_path} has schema v{current}, newer than this apl-tui knows "
                             f"(v{migrations.LATEST})", hint="upgrade apl-tui (pip install -U apl-tui)")
        raise StoreError(f"{db_path} needs a schema upgrade (v{current} → v{migrations.LATEST})",
                         hint="run `apl init --store DIR` once while no app is open (it upgrades the schema)")
    return _seal(con)


def open_snapshot(snapshot_dir: Path) -> tuple[Any, float]:
    """A sealed connection over a Parquet snapshot; returns it and the snapshot's write time.

    The Parquet files are opened by pyarrow and registered as views, so DuckDB itself is never
    given a path. The snapshot's own view definitions run after sealing: a forged meta.json can
    do no more than the console's user.
    """
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as ds

    snap = Path(snapshot_dir)
    meta_path = snap / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        written_at = float(meta["written_at"])
        views = [(str(v["name"]), str(v["sql"])) for v in meta["views"]]
    except FileNotFoundError as e:
        raise StoreLockedError(f"{snap.parent} is in use by another apl process and has no snapshot yet",
                               hint="wait for the app to write one, or close it") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"snapshot in {snap} is unreadable: {first_line(e)}",
                         hint="let the running app write a fresh one") from e
    con = _seal(_connect())
    try:
        for table in TABLES:
            con.register(table, ds.dataset(str(snap / f"{table}.parquet"), format="parquet"))
        for _name, sql in views:
            con.execute(sql)
    except (duckdb.Error, pa.ArrowException, OSError) as e:
        con.close()
        raise StoreError(f"snapshot in {snap} is unreadable: {first_line(e)}",
                         hint="let the running app write a fresh one") from e
    return con, written_at


def open_console(root: Path) -> tuple[Any, float | None]:
    """A sealed connection over a store folder: the live file if free, else its snapshot.

    Returns (connection, snapshot write time or None when reading the live file).
    """
    from apl_tui.label_journal import JOURNAL_NAME
    from apl_tui.store import DB_NAME, Store

    root = Path(root)
    db = root / DB_NAME
    if not db.exists():
        raise StoreError(f"no store at {root}", hint="create one with `apl init` (or pass --store DIR)")
    journal = root / JOURNAL_NAME
    if journal.exists() and journal.stat().st_size:
        try:  # labels a crash left in the journal were saved: a reader sees them
            Store(root).close()  # opening read-write writes them to the database
        except StoreLockedError:
            pass  # the app that owns the file writes them itself; this reads its snapshot
    try:
        return open_live(db), None
    except StoreLockedError:
        pass
    return open_snapshot(root / "snapshot")


def check_statement(sql: str) -> None:
    """The friendly first line: exactly one SELECT, or an EXPLAIN [ANALYZE] of one.

    Not what keeps the store safe (the sealed connection does, however a statement is dressed
    up); it turns the common mistakes into a clear message.
    """
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise AplError(f"SQL error: {first_line(e)}", hint="check the query's syntax") from e
    if not statements:
        raise AplError("no SQL statement given", hint='e.g. select count(*) from labels')
    if len(statements) > 1:
        raise AplError(f"one statement at a time ({len(statements)} given)",
                       hint="the console is read-only: run each SELECT on its own")
    kind = statements[0].type.name
    if kind == "EXPLAIN":
        match = _EXPLAIN.match(sql)
        inner = duckdb.extract_statements(match.group("inner")) if match else []
        kind = inner[0].type.name if len(inner) == 1 else "this EXPLAIN"
        if kind != "SELECT":
            kind = f"EXPLAIN of {kind}"
    if kind not in ALLOWED_STATEMENTS:
        raise AplError(f"read-only: {kind} statements are refused",
                       hint="use SELECT (labels are changed only by labeling and undo)")


def run_query(con: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Check and run one user statement on a sealed connection; any failure is one AplError line."""
    import duckdb

    check_statement(sql)
    try:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall() if columns else []
    except duckdb.PermissionException as e:
        raise AplError(f"refused: {first_line(e)}",
                       hint="the console reads the store's tables only: no files, settings or extensions") from e
    except duckdb.Error as e:
        text = first_line(e)
        # Writes refused by the attached file, the locked settings, or the snapshot's views.
        if any(m in text for m in ("read-only mode", "configuration has been locked", "Can only delete from base",
                                   "Can only update base", "is not an table", "is not a table")):
            raise AplError(f"read-only: {text}", hint="the console cannot change the store or its settings") from e
        raise AplError(f"SQL error: {text}", hint=TABLES_HINT) from e
    except (OSError, ValueError) as e:  # pyarrow reading a snapshot that was swapped underneath
        raise AplError(f"the snapshot changed while reading it: {first_line(e)}", hint="run the query again") from e
    return columns, rows


def snapshot_age_text(written_at: float) -> str:
    """How old a snapshot is, in words ("12 s", "5 min", "2.0 h")."""
    seconds = max(0.0, time.time() - written_at)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
