"""The SQL screen: read-only queries over the store, inside the app that owns it.

Another process cannot open the database while the app runs, so this is where a user looks at
labels live. User SQL never touches the app's own connection: it runs on a sealed in-memory
DuckDB over the snapshot (`apl_tui.sealed`), which cannot write the store, a file or a setting.
The screen has the app's snapshot writer write a fresh one when it opens (the labels so far);
afterwards the writer keeps it fresh as the worker adds pairs, scores and adapters. Errors show
inline, on one line.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from apl_tui.errors import AplError

MAX_ROWS = 1000
"""Rows shown at most; a count says when more matched."""
MAX_CELL = 80
"""Characters shown per cell (long completions are cut with an ellipsis)."""

EXAMPLE = "select outcome, count(*) from effective_labels group by 1"
OLD_SNAPSHOT_S = 5.0
"""A result says how old its data is once the snapshot is older than this."""


def _cell(value: Any) -> Text:
    """A cell as plain text: DataTable would read a str as markup and eat `[bracketed]` words."""
    text = "NULL" if value is None else str(value).replace("\n", " ")
    return Text(text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…")


class SqlScreen(Screen[None]):
    """An input line and a result table; enter runs, escape goes back to labeling."""

    BINDINGS = [
        Binding("escape", "close", "back to labeling"),
        Binding("ctrl+l", "clear", "clear", show=False),
    ]

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store
        """The open Store; its snapshot is what queries read."""

    def compose(self) -> ComposeResult:
        yield Input(placeholder=f"SQL, e.g. {EXAMPLE}", id="sql-input")
        yield Static(id="sql-message", markup=False)
        yield DataTable(id="sql-table", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sql-message", Static).update(
            "read-only: SELECT over prompts, candidates, scores, labels, impressions, adapters, "
            "train_metrics, evals, effective_labels, preferences (no files, no settings)")
        self.query_one(Input).focus()
        self._fresh_snapshot()

    def _fresh_snapshot(self) -> None:
        """Have the snapshot include the labels so far (one write, on this thread, as on quit).

        Through the app's writer when there is one, so its thread and this write never overlap
        and its shutdown order still holds.
        """
        from apl_tui.snapshot import write_snapshot

        writer = getattr(self.app, "snapshots", None)
        if writer is not None:
            writer.mark_dirty()
            writer.flush()  # logs and keeps the last snapshot if this write fails
            return
        try:
            write_snapshot(self.store)
        except (OSError, AplError) as e:
            self._error(f"snapshot not written ({str(e).splitlines()[0]}); queries read the last one")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.run_sql(event.value)

    def run_sql(self, sql: str) -> None:
        """Run one read-only statement on a sealed connection; show its rows, or the error inline."""
        from apl_tui.sealed import open_snapshot, run_query, snapshot_age_text

        message = self.query_one("#sql-message", Static)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        try:
            # Under the snapshot lock: the app's writer swaps the folder and must not do so mid-query.
            with self.store.snapshot_lock:
                con, written_at = open_snapshot(self.store.snapshot_dir)
                try:
                    columns, rows = run_query(con, sql)
                finally:
                    con.close()
        except AplError as e:
            self._error(e.message)
            return
        message.remove_class("-error")
        table.add_columns(*[Text(c) for c in columns])
        table.add_rows([tuple(_cell(v) for v in row) for row in rows[:MAX_ROWS]])
        more = f" (showing {MAX_ROWS})" if len(rows) > MAX_ROWS else ""
        age = time.time() - written_at
        old = f" · data {snapshot_age_text(written_at)} old" if age >= OLD_SNAPSHOT_S else ""
        message.update(f"{len(rows):,} row{'' if len(rows) == 1 else 's'}{more}{old}")

    def _error(self, text: str) -> None:
        message = self.query_one("#sql-message", Static)
        message.add_class("-error")
        message.update(text)

    def action_clear(self) -> None:
        """Empty the input and the table."""
        self.query_one(Input).value = ""
        self.query_one(DataTable).clear(columns=True)

    def action_close(self) -> None:
        """Back to labeling."""
        self.dismiss(None)
