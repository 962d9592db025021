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

from apl_tui.sealed import TABLES


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
            # The path is bound, never pasted: a store folder may contain ' or [ (issue 15).
            cur.execute(f"COPY {table} TO ? (FORMAT parquet)", [str(tmp / f"{table}.parquet")])
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
    """A sealed, read-only DuckDB connection over the live store or its snapshot (see `sealed`)."""

    con: Any
    snapshot_age_s: float | None
    """None when reading the live database; else seconds since the snapshot was written."""

    @property
    def note(self) -> str | None:
        if self.snapshot_age_s is None:
            return None
        return (f"the store is open in another apl process: reading its snapshot, "
                f"{_age(self.snapshot_age_s)} old")

    def close(self) -> None:
        self.con.close()


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def open_reader(root: Path) -> Reader:
    """Open the store read-only, or its snapshot if another process owns the file.

    The connection is sealed (`apl_tui.sealed`): it cannot write the store or any file, so the
    same reader serves `apl export`, `apl stats` and the user's own SQL in `apl sql`.
    """
    from apl_tui.sealed import open_console

    con, written_at = open_console(Path(root))
    return Reader(con=con, snapshot_age_s=None if written_at is None else time.time() - written_at)
