"""The labeling screen: one key per verdict, each label committed before the next pair shows."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer

from apl_tui.errors import AplError
from apl_tui.records import ShownPair
from apl_tui.tui.messages import LabelsChanged, StatusRead
from apl_tui.tui.widgets.pair_view import PairView
from apl_tui.tui.widgets.status_line import StatusLine
from apl_tui.tui.widgets.why_panel import WhyPanel

if TYPE_CHECKING:
    from concurrent.futures import Future

    from apl_tui.desk import DeskStatus, LabelDesk

NARROW_WIDTH = 100
"""Below this many columns the completions stack vertically instead of side by side."""

SCROLL_LINES = 3
"""Lines that j/k scroll both completions by."""
AFTER_FRAME_S = 0.025
"""How long after a pair is put on screen the status and the next pick start: past its frame (p99 ≈ 15 ms)."""

VERDICT_OUTCOMES = {"tie": "tie", "both_bad": "both_bad", "skip": "skip"}
"""Verdicts that do not depend on which side is which."""


def waiting_text(*, worker_running: bool, model_loaded: bool, activity: str, batch: int) -> str:
    """What the empty screen says: what the worker is doing now, and when pairs will come.

    >>> print(waiting_text(worker_running=True, model_loaded=True, activity="generating 4/8", batch=4))
    No pair to label yet: the worker is generating pairs (4/8).
    Each batch of 4 shows here as soon as it is saved.
    """
    if not worker_running:
        return ("No pairs to label, and the background worker is stopped.\n"
                "Restart it from the palette (ctrl+p → restart worker), or import prompts.")
    if not model_loaded:
        doing = f" ({activity})" if activity.startswith("converting") else ""
        return (f"No pair to label yet: the worker is loading the model{doing}; the first start converts it once.\n"
                f"Then it generates pairs; the first ones show here within one small batch.")
    if activity.startswith("generating"):
        return (f"No pair to label yet: the worker is generating pairs ({activity.split(' ', 1)[-1]}).\n"
                f"Each batch of {batch} shows here as soon as it is saved.")
    if activity.startswith("training"):
        return (f"No pair to label: the worker is in a training round ({activity}).\n"
                "It refills the pool right after this step; pairs follow within one step.")
    if activity.startswith(("loaded", "model loaded")):
        return ("No pair to label yet: the model is loaded; the worker generates pairs next.\n"
                "The first ones show here within one small batch.")
    if activity.startswith(("scoring", "reference", "starting")):
        return (f"No pair to label yet: the worker is {activity}.\n"
                "It refills the pool next; pairs follow as soon as the first batch is saved.")
    return ("No pairs to label: every training prompt already has a pair.\n"
            "Import more prompts (apl import FILE), or set acquisition.allow_relabel_prompts = true.")


class LabelScreen(Screen[None]):
    """Prompt, completions A (left) and B (right), why-this-pair, status line and footer."""

    BINDINGS: list[BindingType] = [
        Binding("1,left", "verdict('left')", "A better", key_display="1/←"),
        Binding("2,right", "verdict('right')", "B better", key_display="2/→"),
        Binding("3,t", "verdict('tie')", "tie", key_display="3/t"),
        Binding("4,b", "verdict('both_bad')", "both bad", key_display="4/b"),
        Binding("s,space", "verdict('skip')", "skip", key_display="s"),
        Binding("u,backspace", "undo", "undo", key_display="u"),
        Binding("j", "scroll(1)", "scroll down", show=False),
        Binding("k", "scroll(-1)", "scroll up", show=False),
        Binding("d", "toggle_diff", "diff", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("colon", "sql", "SQL", key_display=":", show=False),
        Binding("g", "stats", "stats", show=False),
        Binding("q", "app.quit", "quit"),
    ]

    def __init__(self, desk: LabelDesk, *, reveal: str = "after") -> None:
        super().__init__()
        self.desk = desk
        """Where pairs come from and verdicts go (this screen runs on the UI thread)."""
        self.reveal = reveal
        """When 'why this pair' shows: "after" the label (blind) or "always"."""
        self.activity = ""
        """What the background worker is doing (the app keeps it current)."""
        self.worker_running = False
        """Whether the background worker is alive (the app keeps it current)."""
        self.model_loaded = False
        """Whether the learner has its model in memory (the app keeps it current)."""
        self.shown: ShownPair | None = None
        """The pair on screen; None while waiting for the pool."""
        self.shown_at = time.monotonic()
        """When the pair appeared (for the label's latency)."""
        self.session_times: list[float] = []
        """Monotonic times of this session's labels (for labels per hour)."""
        self.after_frame_due = 0
        """Pairs shown whose status read and next pick (`_after_frame`) have not started yet."""
        self.desk_status: DeskStatus | None = None
        """The desk's last status, read after each label and on worker news."""

    def compose(self) -> ComposeResult:
        yield PairView(id="pair")
        yield WhyPanel(id="why")
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.set_class(self.app.size.width < NARROW_WIDTH, "narrow")
        self.load_next()
        self.set_interval(1.0, self._poll_when_waiting)

    def on_resize(self) -> None:
        self.set_class(self.app.size.width < NARROW_WIDTH, "narrow")

    # ---- showing pairs ---------------------------------------------------------------------

    def load_next(self) -> None:
        """Ask the desk for the next pair (the pending one first) and show it."""
        try:
            shown = self.desk.next_pair()
        except AplError as e:
            self.notify(f"{e.message}" + (f" — {e.hint}" if e.hint else ""), severity="error", markup=False)
            shown = None
        self.show(shown)

    def show(self, shown: ShownPair | None) -> None:
        """Put a pair on screen; once it is painted, the desk picks the one after it (read-ahead)."""
        self.shown = shown
        self.shown_at = time.monotonic()
        self.query_one(PairView).show_pair(shown, self._waiting_text())
        if self.reveal == "always":
            self.query_one(WhyPanel).show_current(shown)
        # The pair first, the counts and the desk's work right after: key-to-pair latency is what a
        # labeler feels. "After refresh" callbacks can run before the frame is written, and the
        # desk's thread (the label's DuckDB write, the next pick) slows a frame it overlaps.
        self.after_frame_due += 1
        self.set_timer(AFTER_FRAME_S, self._after_frame)

    def _after_frame(self) -> None:
        self.after_frame_due -= 1
        self.refresh_status()
        read_ahead = getattr(self.desk, "read_ahead", None)  # the evaluation desk has none
        if read_ahead is not None and self.shown is not None:
            read_ahead()

    def _waiting_text(self) -> str:
        own = getattr(self.desk, "waiting_text", None)  # a desk with its own words (apl label --eval)
        if own is not None and (self.worker_running or self.desk.finished):
            return own()
        return waiting_text(worker_running=self.worker_running, model_loaded=self.model_loaded,
                            activity=self.activity, batch=self.desk.config.generation.batch_size)

    def _poll_when_waiting(self) -> None:
        if self.shown is None:
            self.load_next()

    def pool_changed(self) -> None:
        """The worker added or rescored pairs: show one if we were waiting; refresh the status.

        A pair picked ahead by older scores is dropped and picked again by the fresh ones.
        """
        if self.shown is None:
            self.load_next()
        else:
            if hasattr(self.desk, "read_ahead"):
                self.desk.forget_read_ahead()
                self.desk.read_ahead()
            self.refresh_status()

    def refresh_status(self) -> None:
        """Read the desk's status (one small DuckDB query) and redraw the status line.

        The labeling desk reads it on its own thread, after the labels it journaled reach DuckDB,
        and the line is redrawn when it arrives (`on_status_read`): the UI thread never waits.
        """
        soon = getattr(self.desk, "status_soon", None)  # the evaluation desk reads it here
        if soon is not None:
            soon().add_done_callback(self._status_arrived)
            return
        try:
            self.desk_status = self.desk.status()
        except AplError as e:
            self.notify(e.message, severity="error", markup=False)
        self._draw_status()

    def _status_arrived(self, future: Future[DeskStatus]) -> None:
        """On the desk's thread: hand the status (or its error) to the UI thread."""
        if not future.cancelled():
            error = future.exception()
            self.post_message(StatusRead(None if error else future.result(), error))

    def on_status_read(self, message: StatusRead) -> None:
        if isinstance(message.error, AplError):
            self.notify(message.error.message, severity="error", markup=False)
        elif message.error is not None:
            self.notify(f"status not read: {message.error}", severity="error", markup=False)
        else:
            self.desk_status = message.status
        self._draw_status()

    def _draw_status(self) -> None:
        self.query_one(StatusLine).refresh_status(self.desk_status, self.activity, self.per_hour(), self.shown)
        if self.shown is None:
            self.query_one(PairView).show_pair(None, self._waiting_text())

    def per_hour(self) -> float | None:
        """This session's labeling rate, once two labels are a few seconds apart."""
        times = self.session_times
        if len(times) < 2 or times[-1] - times[0] < 5:
            return None
        return (len(times) - 1) * 3600 / (times[-1] - times[0])

    # ---- actions ---------------------------------------------------------------------------

    def action_verdict(self, verdict: str) -> None:
        """Record a verdict about the pair on screen (sides in screen terms), then show the next."""
        shown = self.shown
        if shown is None:
            self.notify("nothing to label yet: the pool is being generated", severity="warning")
            return
        outcome = VERDICT_OUTCOMES.get(verdict) or shown.outcome_for_side(verdict)
        latency_ms = int((time.monotonic() - self.shown_at) * 1000)
        if not hasattr(self.desk, "label_and_next"):  # a desk without read-ahead (the evaluation desk)
            try:
                self.desk.record_label(shown, outcome, latency_ms=latency_ms)
            except AplError as e:
                self.notify(f"label not saved: {e.message}", severity="error", markup=False)
                return
            self._after_label(shown, verdict)
            self.load_next()
            return
        saved = self.desk.labels_this_session
        try:
            # The label is committed (with the next pair's impression) before the next pair shows.
            following = self.desk.label_and_next(shown, outcome, latency_ms=latency_ms)
        except AplError as e:
            if self.desk.labels_this_session == saved:
                self.notify(f"label not saved: {e.message}", severity="error", markup=False)
                return
            # Saved, but the next pair could not be read: say so, and wait for the pool.
            self.notify(f"{e.message}" + (f" — {e.hint}" if e.hint else ""), severity="error", markup=False)
            following = None
        self._after_label(shown, verdict)
        self.show(following)

    def _after_label(self, shown: ShownPair, verdict: str) -> None:
        self.session_times.append(time.monotonic())
        self.post_message(LabelsChanged())
        if self.reveal != "always":
            self.query_one(WhyPanel).show_last(shown, verdict)

    def action_undo(self) -> None:
        """Undo the newest label (again for older ones); that pair comes back to be labeled."""
        try:
            undone = self.desk.undo()
        except AplError as e:
            self.notify(f"undo failed: {e.message}", severity="error", markup=False)
            return
        if undone is None:
            self.notify("nothing to undo")
            return
        if self.session_times:
            self.session_times.pop()  # an undone label does not count toward the rate
        self.post_message(LabelsChanged())
        self.query_one(WhyPanel).clear()
        self.notify(f"undid the label of pair {undone}")
        self.load_next()

    def action_scroll(self, direction: int) -> None:
        """Scroll both completions together."""
        self.query_one(PairView).scroll_both(direction * SCROLL_LINES)

    def action_toggle_diff(self) -> None:
        """Highlight the words that differ between A and B (or stop)."""
        view = self.query_one(PairView)
        view.diff = not view.diff

    def action_help(self) -> None:
        """List every key."""
        from apl_tui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen(self.BINDINGS, stacked=self.app.size.width < NARROW_WIDTH))

    def action_sql(self) -> None:
        """Query the live store with read-only SQL."""
        from apl_tui.tui.screens.sql import SqlScreen

        self._settle()
        self.app.push_screen(SqlScreen(self.desk.store))

    def action_stats(self) -> None:
        """Labels per hour, biases, adapters and training curves."""
        from apl_tui.tui.screens.stats import StatsScreen

        self._settle()
        self.app.push_screen(StatsScreen(self.desk.store))

    def _settle(self) -> None:
        """Let the desk write its journaled labels to DuckDB before a screen reads the store."""
        settle = getattr(self.desk, "settle", None)  # the evaluation desk writes straight to DuckDB
        if settle is None:
            return
        try:
            settle()
        except AplError as e:
            self.notify(f"{e.message} — {e.hint}", severity="error", markup=False)
