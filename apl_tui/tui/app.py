"""The labeling app: owns the label desk, the learner's thread and the snapshot writer.

Threads: labels, undo and the queue run on the UI thread through the `LabelDesk` (human-paced,
small DuckDB queries, committed before the next pair shows). `Learner.step` runs on a
`LearnerThread` that only posts messages; it never touches a widget. A `SnapshotWriter` thread
keeps the Parquet snapshot fresh. Shutdown always runs in one order: cancel the learner, join
both threads (bounded), write the final snapshot; the caller then closes the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from apl_tui.errors import AplError
from apl_tui.events import (
    Event,
    ModelLoaded,
    PoolGenerated,
    PoolScored,
    RoundTrained,
    StepProgressed,
    TrainStepDone,
    WarningRaised,
)
from apl_tui.snapshot_writer import SnapshotWriter
from apl_tui.tui.message_app import input_closed
from apl_tui.tui.messages import LabelsChanged, LearnerFailed, LearnerReported, LearnerStepFinished
from apl_tui.tui.screens.label import LabelScreen

if TYPE_CHECKING:
    from apl_tui.desk import LabelDesk
    from apl_tui.learner import Learner, LearnerThread

logger = logging.getLogger(__name__)

IDLE_SLEEP_S = 0.5
"""How long the learner's thread waits when nothing is due."""
GIL_SWITCH_INTERVAL_S = 0.0005
"""How often CPython offers the GIL to another thread while this app runs (default 0.005)."""
LEARNER_JOIN_S = 0.25
"""How long quitting waits for the learner to reach a cancel check before abandoning it."""
SNAPSHOT_JOIN_S = 2.0
"""How long quitting waits for a snapshot write in progress."""
STOP_SIGNALS = (signal.SIGHUP, signal.SIGTERM)
"""Signals that end the app the same way as `q`: a closed terminal or browser session, `kill`."""
INPUT_CHECK_S = 1.0
"""How often the app checks that its input is still connected (a browser session that went away)."""


def activity_text(event: Event) -> str | None:
    """What the worker is doing, in the status line's words; None for events that say nothing new.

    >>> activity_text(TrainStepDone(14, 40, {"loss": 0.5234}))
    'training step 14/40 loss 0.52'
    >>> activity_text(StepProgressed("scoring", 120, 512))
    'scoring 120/512'
    """
    if isinstance(event, TrainStepDone):
        loss = event.metrics.get("loss")
        return f"training step {event.step}/{event.total}" + ("" if loss is None else f" loss {loss:.2f}")
    if isinstance(event, StepProgressed):
        return f"{event.phase} {event.done}/{event.total}"
    if isinstance(event, ModelLoaded):
        return f"model loaded on {event.device} in {event.seconds:.0f} s"
    if isinstance(event, PoolGenerated):
        return f"pool +{event.added}"
    if isinstance(event, PoolScored):
        return f"scored {event.scored} by v{event.adapter_version}"
    if isinstance(event, RoundTrained):
        return f"adapter v{event.adapter_version} trained on {event.labels_used} labels"
    return None


class LabelApp(App[None]):
    """Label preference pairs while a learner generates, scores and trains behind the screen.

    With `learner=None` nothing runs in the background (tests, or labeling a ready pool without
    a model).
    """

    CSS_PATH = "app.tcss"
    TITLE = "apl label"
    BINDINGS = [Binding("ctrl+c", "quit", "quit", show=False, priority=True)]

    def __init__(self, desk: LabelDesk, learner: Learner | None = None, *,
                 snapshot_interval_s: float = 2.0) -> None:
        super().__init__()
        self.desk = desk
        """The label desk (UI thread only)."""
        self.store = desk.store
        """The open store (this process owns it; the caller closes it after `run`)."""
        self.config = desk.config
        """The store's settings (loop.reveal decides when 'why this pair' shows)."""
        self.learner = learner
        """The learner whose `step` runs on the background thread; None for no background work."""
        self.learner_thread: LearnerThread | None = None
        """The learner's thread and its owner (created on mount)."""
        self.snapshots = SnapshotWriter(self.store, snapshot_interval_s)
        """Keeps the snapshot fresh for other processes."""
        self.activity = "starting" if learner is not None else "worker off"
        """What the background worker is doing, for the status line."""
        self.shutdown_seconds: float | None = None
        """How long the last shutdown took (cancel, join, final snapshot)."""
        self._shut_down = False

    # ---- lifecycle -------------------------------------------------------------------------

    def on_mount(self) -> None:
        # The learner holds the GIL between torch kernels; a labeler's key press should not wait
        # out CPython's default 5 ms switch interval several times per frame.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        # DuckDB's background work here (snapshots, the desk's picks) otherwise takes every core:
        # a snapshot overlapping a key raised key → frame p99 from 10 to 16 ms (100k labels, 2 cores).
        self.store.set_threads(max(1, (os.cpu_count() or 2) - 1))
        screen = LabelScreen(self.desk, reveal=self.config.loop.reveal)
        # The first frame already knows a worker is coming (it starts right after that frame).
        screen.worker_running = self.learner is not None
        screen.activity = self.activity
        self.push_screen(screen)
        self.snapshots.mark_dirty()
        self.snapshots.start()
        self._handle_stop_signals()
        self.set_interval(INPUT_CHECK_S, self._exit_if_input_closed)
        if self.learner is not None:
            # After the first frame: the learner is what loads torch and the model.
            self.call_after_refresh(self.start_worker)

    @property
    def label_screen(self) -> LabelScreen:
        """The labeling screen (the bottom of the stack)."""
        for screen in self.screen_stack:
            if isinstance(screen, LabelScreen):
                return screen
        raise LookupError("no labeling screen")

    @property
    def worker_running(self) -> bool:
        """Whether the learner's thread is alive."""
        return self.learner_thread is not None and self.learner_thread.alive

    def shutdown(self) -> None:
        """Cancel → join the threads (bounded) → final snapshot. Idempotent; never raises."""
        if self._shut_down:
            return
        self._shut_down = True
        t0 = time.perf_counter()
        if self.learner_thread is not None and not self.learner_thread.stop(LEARNER_JOIN_S):
            logger.info("learner still busy at quit (model load or step in progress): abandoned")
        # The desk first: its thread writes the journaled labels to DuckDB, so the final snapshot has them.
        close = getattr(self.desk, "close", None)
        if close is not None:
            close()
        if self.snapshots.stop(SNAPSHOT_JOIN_S):
            self.snapshots.flush()
        self.shutdown_seconds = time.perf_counter() - t0

    async def action_quit(self) -> None:
        """Stop the background threads, write the snapshot, leave (labels are already committed)."""
        self.shutdown()
        self.exit()

    def on_unmount(self) -> None:
        # Any way out (quit, a test leaving run_test, an exception) joins the threads.
        self.shutdown()
        self._release_stop_signals()

    def stop_from_signal(self) -> None:
        """A stop signal or lost input: leave exactly as `q` does (cancel, join, snapshot, exit)."""
        logger.info("stopping: the terminal or browser session went away")
        self.shutdown()
        self.exit()

    def _handle_stop_signals(self) -> None:
        # SIGHUP (terminal or SSH gone) and SIGTERM (textual-serve, kill) would otherwise end the
        # process mid-write or, under the web driver, leave it waiting for input that never comes.
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            try:
                loop.add_signal_handler(sig, lambda: self.call_later(self.stop_from_signal))
            except (NotImplementedError, RuntimeError, ValueError):  # not on this platform or loop
                pass

    def _release_stop_signals(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for sig in STOP_SIGNALS:
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _exit_if_input_closed(self) -> None:
        # A browser session whose server or connection died without a "quit": leave, or the
        # process would wait for input forever and keep the store locked.
        if input_closed(self):
            self.stop_from_signal()

    # ---- the learner's thread --------------------------------------------------------------

    def start_worker(self) -> None:
        """Start (or restart) the learner's thread."""
        from apl_tui.learner import LearnerThread

        if self.learner is None or self._shut_down:
            return
        if self.worker_running:
            self.notify("the background worker is already running")
            return
        if self.learner_thread is None:
            self.learner_thread = LearnerThread(
                self.learner, sink=lambda event: self.post_message(LearnerReported(event)),
                on_step=lambda did: self.post_message(LearnerStepFinished(did)),
                on_error=lambda error: self.post_message(LearnerFailed(error)), idle_s=IDLE_SLEEP_S)
        self.activity = "loading model" if not self.learner.loaded else "starting"
        self.learner_thread.start()
        self._refresh_status()

    def action_restart_worker(self) -> None:
        """Start the background worker again after a failure."""
        self.start_worker()

    def on_learner_failed(self, message: LearnerFailed) -> None:
        from apl_tui.tui.screens.error import ErrorDialog

        error = message.error
        if isinstance(error, AplError):
            text, hint = error.message, error.hint
        else:
            logger.error("background worker failed", exc_info=error)
            text, hint = f"{type(error).__name__}: {error}".splitlines()[0], ""
        self.activity = "worker stopped (ctrl+p: restart worker)"
        self.push_screen(ErrorDialog(text, hint))
        self._refresh_status()

    def on_learner_reported(self, message: LearnerReported) -> None:
        event = message.event
        if isinstance(event, WarningRaised):
            self.notify(event.message, severity="warning", timeout=10, markup=False)
            return
        text = activity_text(event)
        if text:
            self.activity = text
        if isinstance(event, (PoolGenerated, PoolScored, RoundTrained)):
            self.snapshots.mark_dirty()
            self._with_label_screen(LabelScreen.pool_changed)
        else:
            self._refresh_status()

    def on_learner_step_finished(self, message: LearnerStepFinished) -> None:
        if message.description is None:
            # Idle ticks come twice a second: redraw only when the state changes.
            if self.activity != "idle":
                self.activity = "idle"
                self._refresh_status()
            return
        self.activity = message.description
        self._with_label_screen(LabelScreen.pool_changed)

    def on_labels_changed(self, _: LabelsChanged) -> None:
        self.snapshots.mark_dirty()

    def _refresh_status(self) -> None:
        self._with_label_screen(LabelScreen.refresh_status)

    def _with_label_screen(self, method: Callable[[LabelScreen], None]) -> None:
        try:
            screen = self.label_screen
        except LookupError:
            return
        screen.activity = self.activity
        screen.worker_running = self.worker_running
        screen.model_loaded = self.learner is not None and self.learner.loaded
        if screen.is_mounted:
            method(screen)

    # ---- command palette -------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's own commands, every labeling action, and 'restart worker'."""
        yield from super().get_system_commands(screen)
        if isinstance(screen, LabelScreen):
            seen: set[str] = set()
            for b in screen.BINDINGS:
                if isinstance(b, Binding) and b.action not in seen:
                    seen.add(b.action)
                    keys = b.key.replace("question_mark", "?").replace("colon", ":")
                    yield SystemCommand(b.description[:1].upper() + b.description[1:], f"key: {keys}",
                                        partial(self.run_action, b.action, screen))
        yield SystemCommand("Restart worker", "start the background worker again (after a failure)",
                            self.action_restart_worker)
