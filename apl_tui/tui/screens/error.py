"""A dialog for a worker failure: one line, then labeling goes on."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ErrorDialog(ModalScreen[None]):
    """Shows a one-line message (and a hint); enter or escape closes it."""

    BINDINGS = [Binding("escape,enter,q", "close", "close")]

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__()
        self.message = message
        """The one-line error."""
        self.hint = hint
        """What the user can do about it."""

    def compose(self) -> ComposeResult:
        with Vertical(id="error-box") as box:
            box.border_title = "background worker stopped"
            # markup=False: the message quotes paths and values, which may hold [brackets].
            yield Static(self.message, id="error-message", markup=False)
            if self.hint:
                yield Static(f"hint: {self.hint}", id="error-hint", markup=False)
            yield Static("Labeling goes on. Restart the worker from the palette (ctrl+p).", id="error-note")
            yield Button("OK", id="error-ok", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        """Back to labeling."""
        self.dismiss(None)
