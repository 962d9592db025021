"""The SQL screen: read-only queries over the store, inside the app that owns it.

Another process cannot open the database while the app runs, so this is where a user looks at
labels live. User SQL never touches the app's own connection: it runs on a sealed in-memory
DuckDB over the snapshot (`apl_tui.sealed`), which cannot write the store, a file or a setting.
On opening, the screen shows at once and asks the app's snapshot writer to write a fresh
snapshot on its own thread (a full copy: ≈ 0.7 s at 100k labels, never on the UI thread); it
polls until that write ends. A query submitted meanwhile waits and runs when it lands, so every
query sees the labels made before `:`. If the write fails, one line says so and queries read the
last snapshot. Afterwards the writer keeps it fresh as the worker adds pairs, scores and
adapters. Used without an app writer, the screen writes the snapshot itself, synchronously.
Errors show inline, on one line.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static

from apl_tui.errors import AplError, first_line

MAX_ROWS = 1000
"""Rows shown at most; a count says when more matched."""
MAX_CELL = 80
"""Characters shown per cell (long completions are cut with an ellipsis)."""

EXAMPLE = "select outcome, count(*) from effective_labels group by 1"
OLD_SNAPSHOT_S = 5.0
"""A result says how old its data is once the snapshot is older than this."""
POLL_S = 0.05
"""How often the screen checks whether the fresh snapshot it asked for has landed."""
READ_ONLY_HELP = ("read-only: SELECT over prompts, candidates, scores, labels, impressions, adapters, "
                  "train_metrics, evals, effective_labels, preferences (no files, no settings)")
WRITING = "writing a fresh snapshot of the labels so far…"


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
        self._ticket: int | None = None
        """The writer's ticket for the fresh snapshot while it is being written; else None."""
        self._poll: Timer | None = None
        self._waiting_sql: str | None = None
        """The last query submitted before the fresh snapshot landed: it runs when it does."""
        self._failed_at: int | None = None
        """The writer's count of written snapshots when the fresh one failed (None: it did not):
        results say they read the last snapshot until the writer has written another."""

    def compose(self) -> ComposeResult:
        yield Input(placeholder=f"SQL, e.g. {EXAMPLE}", id="sql-input")
        yield Static(id="sql-message", markup=False)
        yield DataTable(id="sql-table", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        writer = getattr(self.app, "snapshots", None)
        if writer is None:
            self._message(READ_ONLY_HELP)
            self._write_here()
            return
        # The writer's thread does the copy; this screen only polls a counter, so it is drawn
        # and takes keys at once.
        self._message(WRITING)
        self._ticket = writer.write_soon()
        self._poll = self.set_interval(POLL_S, self._check_snapshot)

    def _write_here(self) -> None:
        """No app writer (the screen used on its own): write the snapshot on this thread."""
        from apl_tui.snapshot import write_snapshot

        try:
            write_snapshot(self.store)
        except (OSError, AplError) as e:
            self._not_written(first_line(e))

    def _check_snapshot(self) -> None:
        """Poll tick: once the fresh snapshot's write has ended, say how and run a waiting query."""
        writer = self.app.snapshots  # type: ignore[attr-defined]
        ticket = self._ticket
        if ticket is None:
            return
        if writer.finished(ticket):
            error = None if writer.succeeded(ticket) else (writer.last_error or "unknown error")
        elif not writer.running:
            error = "the app is stopping"  # nobody will write it: do not wait forever
        else:
            return
        self._ticket = None
        if self._poll is not None:
            self._poll.stop()
            self._poll = None
        if error is None:
            self._message(READ_ONLY_HELP)
        else:
            self._not_written(error)
        sql, self._waiting_sql = self._waiting_sql, None
        if sql is not None:
            self.run_sql(sql)

    def _not_written(self, error: str) -> None:
        writer = getattr(self.app, "snapshots", None)
        self._failed_at = 0 if writer is None else writer.writes
        self._error(f"snapshot not written ({error}); queries read the last one")

    def _reads_stale_snapshot(self) -> bool:
        """Whether results still come from the snapshot before the failed write."""
        if self._failed_at is None:
            return False
        writer = getattr(self.app, "snapshots", None)
        return writer is None or writer.writes <= self._failed_at

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._ticket is not None:
            # Running now would read the snapshot from before `:`; keep it for when the fresh one lands.
            self._waiting_sql = event.value
            self._message(f"{WRITING} the query runs when it is written")
            return
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
        stale = " · fresh snapshot not written, read the last one" if self._reads_stale_snapshot() else ""
        more = f" (showing {MAX_ROWS})" if len(rows) > MAX_ROWS else ""
        age = time.time() - written_at
        old = f" · data {snapshot_age_text(written_at)} old" if age >= OLD_SNAPSHOT_S else ""
        message.update(f"{len(rows):,} row{'' if len(rows) == 1 else 's'}{more}{old}{stale}")

    def _message(self, text: str) -> None:
        message = self.query_one("#sql-message", Static)
        message.remove_class("-error")
        message.update(text)

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
