"""The SQL screen: read-only queries over the live store, inside the app that owns it.

Another process cannot open the database while the app runs, so this is where a user looks
at labels live. Statements that could write are refused (`check_read_only`); errors show inline.
"""

from __future__ import annotations

from typing import Any

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


def _cell(value: Any) -> str:
    text = "NULL" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


class SqlScreen(Screen[None]):
    """An input line and a result table; enter runs, escape goes back to labeling."""

    BINDINGS = [
        Binding("escape", "close", "back to labeling"),
        Binding("ctrl+l", "clear", "clear", show=False),
    ]

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store
        """The open Store; queries run on this (the UI) thread's cursor."""

    def compose(self) -> ComposeResult:
        yield Input(placeholder=f"SQL, e.g. {EXAMPLE}", id="sql-input")
        yield Static(id="sql-message")
        yield DataTable(id="sql-table", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sql-message", Static).update(
            "read-only: SELECT over prompts, candidates, scores, labels, impressions, adapters, "
            "train_metrics, evals, effective_labels, preferences")
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.run_sql(event.value)

    def run_sql(self, sql: str) -> None:
        """Run one read-only statement and show its rows, or the error inline."""
        from apl_tui.snapshot import check_read_only

        message = self.query_one("#sql-message", Static)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        try:
            check_read_only(sql)
            columns, rows = self.store.query(sql)
        except AplError as e:
            self._error(e.message)
            return
        except Exception as e:  # noqa: BLE001 — any DuckDB error is the user's query, shown inline
            self._error(f"SQL error: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            return
        message.remove_class("-error")
        table.add_columns(*columns)
        table.add_rows([tuple(_cell(v) for v in row) for row in rows[:MAX_ROWS]])
        more = f" (showing {MAX_ROWS})" if len(rows) > MAX_ROWS else ""
        message.update(f"{len(rows):,} row{'' if len(rows) == 1 else 's'}{more}")

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
