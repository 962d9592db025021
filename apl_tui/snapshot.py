"""Read access for other processes: a Parquet snapshot the owning process keeps fresh.

DuckDB refuses a second process while one holds the file read-write, even read-only. So the
running app calls `write_snapshot` after changes (≈ tens of ms), and `open_reader` falls back to
that snapshot when the live file is locked, saying how old it is.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apl_tui.errors import AplError, StoreError, StoreLockedError

TABLES = ("prompts", "candidates", "scores", "labels", "impressions", "adapters", "train_metrics", "evals",
          "adapter_retirements")
READ_STATEMENTS = ("SELECT", "EXPLAIN")


def write_snapshot(store: Any) -> Path:
    """Copy every table to Parquet under `store/snapshot`, swapped in whole (never half-written)."""
    with store.snapshot_lock:
        return _write_snapshot(store)


def _write_snapshot(store: Any) -> Path:
    final = store.snapshot_dir
    tmp = final.with_name(f"snapshot.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # One read transaction: every table is copied as of the same moment (DuckDB's MVCC), so a
    # reader never sees a label whose candidate or impression is missing.
    with store.transaction() as cur:
        for table in TABLES:
            cur.execute(f"COPY {table} TO '{tmp / (table + '.parquet')}' (FORMAT parquet)")
        views = cur.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal "
                            "AND schema_name = 'main' ORDER BY view_oid").fetchall()
        schema_version = store.schema_version()
    meta = {"written_at": time.time(), "schema_version": schema_version,
            "views": [{"name": n, "sql": s} for n, s in views]}
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    old = final.with_name(f"snapshot.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


@dataclass
class Reader:
    """A read-only DuckDB connection over the live store or its snapshot."""

    con: Any
    snapshot_age_s: float | None
    """None when reading the live database; else seconds since the snapshot was written."""
    owner: Any = None

    @property
    def note(self) -> str | None:
        if self.snapshot_age_s is None:
            return None
        return (f"the store is open in another apl process: reading its snapshot, "
                f"{_age(self.snapshot_age_s)} old")

    def close(self) -> None:
        if self.owner is not None:
            self.owner.close()
        else:
            self.con.close()


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def open_reader(root: Path) -> Reader:
    """Open the store read-only, or its snapshot if another process owns the file."""
    import duckdb

    from apl_tui.store import Store

    try:
        store = Store(root, read_only=True)
        return Reader(con=store.cursor(), snapshot_age_s=None, owner=store)
    except StoreLockedError:
        pass
    snap = Path(root) / "snapshot"
    meta_path = snap / "meta.json"
    if not meta_path.exists():
        raise StoreLockedError(f"{root} is in use by another apl process and has no snapshot yet",
                               hint="wait for the app to write one, or close it")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    con = duckdb.connect()
    try:
        for table in TABLES:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{snap / (table + '.parquet')}')")
        for view in meta["views"]:
            con.execute(view["sql"])
    except duckdb.Error as e:
        con.close()
        raise StoreError(f"snapshot in {snap} is unreadable: {str(e).splitlines()[0]}",
                         hint="let the running app write a fresh one") from e
    return Reader(con=con, snapshot_age_s=time.time() - float(meta["written_at"]))


def check_read_only(sql: str) -> None:
    """Refuse any statement that could write (apl sql is read-only by contract)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise AplError(f"SQL error: {str(e).splitlines()[0]}", hint="check the query's syntax") from e
    if not statements:
        raise AplError("no SQL statement given", hint='e.g. apl sql "select count(*) from labels"')
    for st in statements:
        kind = st.type.name
        if kind not in READ_STATEMENTS:
            raise AplError(f"apl sql is read-only: {kind} statements are refused",
                           hint="use SELECT (labels are changed only by labeling and undo)")
