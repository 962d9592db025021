"""The help screen: every key of the labeling screen, read from the app's bindings."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def keys_table(bindings: list[BindingType]) -> Table:
    """A two-column table (keys, what they do); keys sharing an action are merged."""
    merged: dict[str, tuple[list[str], str]] = {}
    for b in bindings:
        if not isinstance(b, Binding):
            continue
        keys, _ = merged.setdefault(b.action, ([], b.description))
        keys.extend(k.strip() for k in b.key.split(","))
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for keys, description in merged.values():
        table.add_row(" / ".join(_pretty(k) for k in keys), description)
    table.add_row("ctrl+p", "command palette (every action, restart worker)")
    return table


def _pretty(key: str) -> str:
    return {"left": "←", "right": "→", "space": "space", "question_mark": "?", "colon": ":"}.get(key, key)


class HelpScreen(ModalScreen[None]):
    """Lists all keys; any of escape, q, ? closes it."""

    BINDINGS = [
        Binding("escape,q,question_mark", "close", "close help"),
    ]

    def __init__(self, bindings: list[BindingType], *, stacked: bool = False) -> None:
        super().__init__()
        self.shown_bindings = bindings
        """The labeling screen's bindings, listed here."""
        self.stacked = stacked
        """Whether the completions are stacked (narrow terminal): A on top, B below."""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "keys"
            box.border_subtitle = "esc closes"
            yield Static(keys_table(self.shown_bindings), id="help-keys")
            where = "A is the top pane, B the one below" if self.stacked else "A is the left pane, B the right"
            yield Static(
                f"Verdicts are about the screen: {where}. "
                "Every label is saved before the next pair appears; u undoes the newest, again and again.",
                id="help-note")

    def action_close(self) -> None:
        """Back to labeling."""
        self.dismiss(None)
