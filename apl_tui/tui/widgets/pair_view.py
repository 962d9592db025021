"""The pair being labeled: the prompt on top, completions A (left) and B (right) below."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from apl_tui.chat import decode_messages
from apl_tui.records import ShownPair
from apl_tui.tui.widgets.diff import word_diff


def conversation_text(messages: list[dict[str, str]]) -> Text:
    """A chat prompt as a transcript: earlier turns dim, the last user turn (the one answered) bold.

    >>> conversation_text([{"role": "user", "content": "Hi"}]).plain
    'user  Hi'
    """
    out = Text()
    for i, m in enumerate(messages):
        last = i == len(messages) - 1
        if i:
            out.append("\n")
        out.append(f"{m['role']}  ", style="bold cyan" if last else "dim")
        out.append(m["content"], style="bold" if last else "dim")
    return out


def _set_title(widget: Widget, part: str, title: str) -> None:
    """Set a border title or subtitle only when it changes.

    Setting one repaints the whole widget even when it is unchanged: on every key press that
    repainted both completion panes in full instead of their text.
    """
    if getattr(widget, part) != title:
        setattr(widget, part, title)


class _Pane(VerticalScroll, can_focus=False):
    """A scrolling box for one text; never focused, so ←/→ stay verdict keys."""


class PairView(Vertical):
    """Prompt and two completions in screen terms: A is always the left pane, B the right.

    The candidate's own a/b order is randomised by the engine (`ShownPair.left`); this widget
    shows only `left_text` and `right_text`, so the screen never leaks which is which.
    """

    diff: reactive[bool] = reactive(False)
    """Highlight the words that differ between the two completions."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.shown: ShownPair | None = None
        """The pair on screen, or None while waiting for the pool."""

    def compose(self) -> ComposeResult:
        with _Pane(id="prompt-box"):
            yield Static(id="prompt-text")
        yield Static(id="waiting")
        with Container(id="completions"):
            with _Pane(id="left-pane", classes="completion"):
                yield Static(id="left-text")
            with _Pane(id="right-pane", classes="completion"):
                yield Static(id="right-text")

    def on_mount(self) -> None:
        self.query_one("#prompt-box").border_title = "prompt"
        self.query_one("#left-pane").border_title = "A  [1 ←]"
        self.query_one("#right-pane").border_title = "B  [2 →]"
        self.show_pair(None)

    def show_pair(self, shown: ShownPair | None, waiting: str = "generating the pool…") -> None:
        """Put a pair on screen (scrolled to the top), or the waiting message when None."""
        self.shown = shown
        self.set_class(shown is None, "-waiting")
        waiting_box = self.query_one("#waiting", Static)
        if waiting_box.content != waiting:  # an update repaints, even to the same text
            waiting_box.update(waiting)
        messages = decode_messages(shown.prompt) if shown else None
        prompt = conversation_text(messages) if messages else Text(shown.prompt if shown else "")
        self.query_one("#prompt-text", Static).update(prompt)
        _set_title(self.query_one("#prompt-box"), "border_title",
                   f"conversation ({len(messages)} turn{'s' if len(messages) > 1 else ''})" if messages else "prompt")
        self._render_completions()
        for pane in self.query(_Pane):
            if pane.scroll_offset.y:
                pane.scroll_home(animate=False)

    def watch_diff(self) -> None:
        self._render_completions()

    def _render_completions(self) -> None:
        if not self.is_mounted:
            return
        left, right = ("", "") if self.shown is None else (self.shown.left_text, self.shown.right_text)
        if self.diff:
            lt, rt = word_diff(left, right)
        else:
            lt, rt = Text(left), Text(right)
        self.query_one("#left-text", Static).update(lt)
        self.query_one("#right-text", Static).update(rt)
        subtitle = "diff on" if self.diff else ""
        _set_title(self.query_one("#left-pane"), "border_subtitle", subtitle)
        _set_title(self.query_one("#right-pane"), "border_subtitle", subtitle)

    def scroll_both(self, lines: int) -> None:
        """Scroll the two completions together by `lines` (negative: up)."""
        for pane in self.query(".completion").results(_Pane):
            pane.scroll_relative(y=lines, animate=False, immediate=True)
