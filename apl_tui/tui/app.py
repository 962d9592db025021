"""The labeling app: owns the engine, runs its background work, keeps the snapshot fresh.

Threads: labels, undo and the queue run on the UI thread (human-paced, small DuckDB queries,
committed before the next pair shows). `Engine.step` runs in a Textual thread worker that only
posts messages; it never touches a widget. DuckDB holds the state; messages say "look again".
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

from apl_tui.errors import AplError, Cancelled
from apl_tui.events import (Event, ModelLoaded, PoolGenerated, PoolScored, RoundTrained, StepProgressed,
                            TrainStepDone, WarningRaised)
from apl_tui.tui.messages import EngineReported, EngineStepFinished
from apl_tui.tui.screens.label import LabelScreen

if TYPE_CHECKING:
    from apl_tui.config import AplConfig
    from apl_tui.engine import Engine
    from apl_tui.store import Store

logger = logging.getLogger(__name__)

IDLE_SLEEP_S = 0.5
"""How long the worker waits when the engine has nothing due."""
GIL_SWITCH_INTERVAL_S = 0.0005
"""How often CPython offers the GIL to another thread while this app runs (default 0.005)."""


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
    """Label preference pairs while a worker generates, scores and trains behind the screen.

    `engine` is an Engine or a factory `Callable[[Store], Engine]`. With `start_worker=False`
    nothing runs in the background (tests, or labeling a ready pool without a model).
    """

    CSS_PATH = "app.tcss"
    TITLE = "apl label"
    BINDINGS = [Binding("ctrl+c", "quit", "quit", show=False, priority=True)]

    def __init__(self, engine: Engine | Callable[[Store], Engine], store: Store, config: AplConfig | None = None,
                 *, start_worker: bool = True, snapshot_interval_s: float = 2.0) -> None:
        super().__init__()
        self.store = store
        """The open store (this process owns it)."""
        self.engine: Engine = engine if hasattr(engine, "next_pair") else engine(store)  # type: ignore[operator,assignment]
        """The active-learning engine; light methods on this thread, `step` on the worker."""
        self.config: AplConfig = config or getattr(self.engine, "config", None) or store.load_config()
        """The store's settings (loop.reveal decides when 'why this pair' shows)."""
        self.start_worker_on_mount = start_worker
        self.snapshot_interval_s = snapshot_interval_s
        self.activity = "starting" if start_worker else "worker off"
        """What the background worker is doing, for the status line."""
        self._engine_worker: Worker[None] | None = None
        self._snapshot_dirty = False
        self._snapshot_writing = False
        self._last_snapshot = 0.0

    # ---- lifecycle -------------------------------------------------------------------------

    def on_mount(self) -> None:
        # The worker thread holds the GIL between torch kernels; a labeler's key press should not
        # wait out CPython's default 5 ms switch interval several times per frame.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.push_screen(LabelScreen())
        self.set_interval(self.snapshot_interval_s, self._flush_snapshot)
        if self.start_worker_on_mount:
            # After the first frame: the worker is what loads torch and the model.
            self.call_after_refresh(self.start_worker)
        self.label_recorded()

    @property
    def label_screen(self) -> LabelScreen:
        """The labeling screen (the bottom of the stack)."""
        for screen in self.screen_stack:
            if isinstance(screen, LabelScreen):
                return screen
        raise LookupError("no labeling screen")

    @property
    def worker_running(self) -> bool:
        """Whether the background worker is alive."""
        w = self._engine_worker
        return w is not None and w.state in (WorkerState.PENDING, WorkerState.RUNNING)

    async def action_quit(self) -> None:
        """Cancel the worker (it stops between steps), write the snapshot, leave."""
        self.stop_worker()
        self._flush_snapshot(force=True)
        self.exit()

    # ---- the background worker -------------------------------------------------------------

    def start_worker(self) -> None:
        """Start (or restart) the engine loop in a thread."""
        if self.worker_running:
            self.notify("the background worker is already running")
            return
        self.activity = "loading model"
        self._engine_worker = self._run_engine()
        self._refresh_status()

    def stop_worker(self) -> None:
        """Ask the worker to stop; the engine checks the event between steps."""
        if self._engine_worker is not None:
            self._engine_worker.cancel()

    def action_restart_worker(self) -> None:
        """Start the background worker again after a failure."""
        self.start_worker()

    @work(thread=True, exit_on_error=False, group="engine", name="engine")
    def _run_engine(self) -> None:
        """Call `engine.step` until cancelled; everything it says goes out as messages."""
        worker = get_current_worker()
        cancel = worker.cancelled_event

        def sink(event: Event) -> None:
            self.post_message(EngineReported(event))

        while not cancel.is_set():
            try:
                did = self.engine.step(sink, cancel)
            except Cancelled:
                return
            self.post_message(EngineStepFinished(did))
            if did is None:
                cancel.wait(IDLE_SLEEP_S)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._engine_worker:
            return
        if event.state == WorkerState.ERROR:
            from apl_tui.tui.screens.error import ErrorDialog

            error = event.worker.error
            if isinstance(error, AplError):
                message, hint = error.message, error.hint
            else:
                logger.error("background worker failed", exc_info=error)
                message, hint = f"{type(error).__name__}: {error}".splitlines()[0], ""
            self.activity = "worker stopped (ctrl+p: restart worker)"
            self.push_screen(ErrorDialog(message, hint))
        elif event.state in (WorkerState.CANCELLED, WorkerState.SUCCESS):
            self.activity = "worker stopped"
        self._refresh_status()

    def on_engine_reported(self, message: EngineReported) -> None:
        event = message.event
        if isinstance(event, WarningRaised):
            self.notify(event.message, severity="warning", timeout=10)
            return
        text = activity_text(event)
        if text:
            self.activity = text
        if isinstance(event, (PoolGenerated, PoolScored, RoundTrained)):
            self._snapshot_dirty = True
            self._with_label_screen(LabelScreen.pool_changed)
        else:
            self._refresh_status()

    def on_engine_step_finished(self, message: EngineStepFinished) -> None:
        if message.description is None:
            # Idle ticks come twice a second: redraw only when the state changes.
            if self.activity != "idle":
                self.activity = "idle"
                self._refresh_status()
            return
        self.activity = message.description
        self._with_label_screen(LabelScreen.pool_changed)

    def _refresh_status(self) -> None:
        self._with_label_screen(LabelScreen.refresh_status)

    def _with_label_screen(self, method: Callable[[LabelScreen], None]) -> None:
        try:
            screen = self.label_screen
        except LookupError:
            return
        if screen.is_mounted:
            method(screen)

    # ---- snapshot for other processes ------------------------------------------------------

    def label_recorded(self) -> None:
        """A label or undo was committed: the snapshot is due (debounced)."""
        self._snapshot_dirty = True

    def _flush_snapshot(self, force: bool = False) -> None:
        if not self._snapshot_dirty or (self._snapshot_writing and not force):
            return
        if not force and time.monotonic() - self._last_snapshot < self.snapshot_interval_s:
            return
        self._snapshot_dirty = False
        self._last_snapshot = time.monotonic()
        if force:
            self._write_snapshot()
        else:
            # Off the UI thread: copying every table takes tens of ms on a large store.
            self._snapshot_writing = True
            self.run_worker(self._write_snapshot, thread=True, group="snapshot", exit_on_error=False)

    def _write_snapshot(self) -> None:
        from apl_tui.snapshot import write_snapshot

        try:
            write_snapshot(self.store)
        except (OSError, AplError) as e:
            logger.warning("snapshot not written: %s", e)
        finally:
            self._snapshot_writing = False

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
