"""A one-message app: why the labeling app cannot start, shown where the user looks.

Under `apl serve` the labeling app runs in a browser tab and its stderr goes to the server's
console, so an error printed there (a store that another session has open) would leave the
tab on the splash screen. This app puts the message in the tab instead.
"""

from __future__ import annotations

import threading

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static


def input_closed(app: App) -> bool:  # type: ignore[type-arg]
    """Whether a browser-driven app has lost its input (the server or its connection went away).

    Under textual-serve the input is a pipe from the server; the web driver's input thread ends
    on EOF, and nothing else would stop the app. A terminal that goes away sends SIGHUP instead,
    so other drivers always answer False.
    """
    driver = getattr(app, "_driver", None)
    if type(driver).__name__ != "WebDriver":
        return False
    reader = getattr(driver, "_key_thread", None)
    return isinstance(reader, threading.Thread) and reader.ident is not None and not reader.is_alive()


class MessageApp(App[None]):
    """Shows one message and a hint; q, enter or escape closes it."""

    TITLE = "apl label"
    BINDINGS = [Binding("q,enter,escape,ctrl+c", "quit", "close")]
    CSS = """
    Screen { align: center middle; }
    #message-box { width: 76; max-width: 100%; height: auto; border: thick $error; padding: 1 2; }
    #message-title { text-style: bold; }
    #message-hint { color: $text-muted; margin-top: 1; }
    """

    def __init__(self, title: str, message: str, hint: str = "") -> None:
        super().__init__()
        self.box_title = title
        """The box's title (what could not be done)."""
        self.message = message
        """The one-line reason."""
        self.hint = hint
        """What the user can do about it."""

    def compose(self) -> ComposeResult:
        with Vertical(id="message-box") as box:
            box.border_title = self.box_title
            yield Static(self.message, id="message-title")
            if self.hint:
                yield Static(f"hint: {self.hint}", id="message-hint")
            yield Static("q closes this page's session.", id="message-hint-close")

    def on_mount(self) -> None:
        self.set_interval(1.0, self._exit_if_input_closed)

    def _exit_if_input_closed(self) -> None:
        if input_closed(self):
            self.exit()
