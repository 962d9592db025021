"""UI responsiveness: key press → the next pair's frame written, in the real labeling app.

`LabelApp` runs under Textual's test harness (`run_test`), but not headless: a `FrameDriver`
stands in for the terminal driver, so Textual renders each frame into the terminal's escape
sequences and writes them (to /dev/null) as it would to a terminal. The key goes in as the
driver delivers one (a Key event handed to the app), without Pilot's idle waits (each sleeps
≥ 20 ms, which would swamp what is measured). The clock stops when a written frame contains the
new pair's prompt. A short pause between labels (THINK_S) stands for the labeler's reading.

Still excluded: the terminal's own work (parsing and painting the escape sequences), reading
and decoding the key's bytes from stdin, and any network between them (ssh, `apl serve`).

Measured twice on a 10k-candidate store: idle (no learner), and while training: the app's own
learner thread (`LearnerThread` → `Learner.step`, on the bench policy) with labels waiting, so a
DPO round is due at once. It trains, saves the adapter and writes its metrics, rescores the pool
chunk by chunk (each chunk one store write) and starts the next round as labels arrive: what
the learner did during the timed labels is reported beside the latencies.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from textual.drivers.headless_driver import HeadlessDriver

from apl_tui.bench.storage import build_store
from apl_tui.bench.timing import latency_ms
from apl_tui.bench.workload import BenchContext, perturbed_adapter
from apl_tui.desk import LabelDesk
from apl_tui.errors import Cancelled
from apl_tui.events import Event, ProgressSink, RoundTrained, StepProgressed, TrainStepDone, ignore
from apl_tui.learner import Learner

POOL = 10_000
"""Candidates in the labeling session's store."""
WARMUP_LABELS = 10
THINK_S = 0.1
"""Pause after each pair appears before the next key (untimed): the learner gets the time a person
would give it, and keys do not queue up behind each other."""
WAITING_LABELS = 8
"""Labels in the training store before the session: the first round (one DPO step of 8 pairs)."""
ROUND_SIZE = 64
"""Labels that make the next round due: about a third into the session (the learner rescores until then)."""


class FrameDriver(HeadlessDriver):
    """A terminal driver without a terminal: frames are rendered and written to /dev/null.

    Textual skips rendering entirely for headless drivers; this one says it is not headless, so
    the full output path runs. Each flush (one per frame) is kept with its time for the clock.
    """

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._out = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (closed with the app)
        self._pending: list[str] = []
        self.frames: list[tuple[float, str]] = []
        """(perf_counter at flush, text written) since the last `frames.clear()`."""

    @property
    def is_headless(self) -> bool:
        return False

    def write(self, data: str) -> None:
        self._out.write(data)
        self._pending.append(data)

    def flush(self) -> None:
        self._out.flush()
        if self._pending:
            self.frames.append((time.perf_counter(), "".join(self._pending)))
            self._pending.clear()

    def stop_application_mode(self) -> None:
        super().stop_application_mode()
        self._out.close()


def _marker(prompt: str) -> str:
    """What identifies a pair's frame: its prompt up to the first colon ("Prompt 123:" in the bench store)."""
    head, colon, _ = prompt.partition(":")
    return head + colon if colon else prompt[:40]


class _LoggedLearner(Learner):
    """The learner, with every event its steps report kept with its time, and its failure if any."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[float, Event]] = []
        self.error: BaseException | None = None

    def step(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None) -> str | None:
        def logged(event: Event) -> None:
            self.events.append((time.perf_counter(), event))
            sink(event)

        try:
            return super().step(logged, cancel)
        except Cancelled:
            raise
        except BaseException as e:
            self.error = e
            raise


async def _session(app: Any, labels: int) -> list[tuple[float, float]]:
    """(key time, seconds to the next pair's frame) per label, after WARMUP_LABELS untimed ones."""
    from textual import events

    app.driver_class = FrameDriver
    out: list[tuple[float, float]] = []
    learner = app.learner
    async with app.run_test(size=(160, 45), headless=False) as pilot:
        await pilot.pause()
        driver: FrameDriver = app._driver
        try:
            for i in range(WARMUP_LABELS + labels):
                screen: Any = app.screen
                before = screen.shown.candidate_id
                driver.frames.clear()
                started = time.perf_counter()
                key = events.Key("1", "1")
                key.set_sender(app)
                driver.send_message(key)
                written = await _frame_with_next_pair(screen, driver, before, started + 10)
                if i >= WARMUP_LABELS:
                    out.append((started, written - started))
                await asyncio.sleep(THINK_S)
        except (RuntimeError, AttributeError) as e:
            if learner is not None and learner.error is not None:  # its error dialog took the keys
                raise RuntimeError(f"the app's learner failed: {learner.error!r}") from e
            raise
        finally:
            if app.learner_thread is not None:  # stop it between steps, while the app still runs
                await asyncio.to_thread(app.learner_thread.stop, 600)
    if learner is not None and learner.error is not None:
        raise RuntimeError(f"the app's learner failed: {learner.error!r}")
    return out


async def _frame_with_next_pair(screen: Any, driver: FrameDriver, before: int, deadline: float) -> float:
    """When the first frame showing a pair other than `before` was written (perf_counter)."""
    while time.perf_counter() < deadline:
        shown = screen.shown
        if shown is not None and shown.candidate_id != before:
            marker = _marker(shown.prompt)
            for at, text in driver.frames:
                if marker in text:
                    return at
        await asyncio.sleep(0)
    raise RuntimeError("the next pair's frame was not written within 10 s")


def engine_breakdown(store: Any, cycles: int = 30) -> dict[str, float]:
    """Median ms of the desk calls one label makes on the UI thread (no Textual): where the time goes."""
    from apl_tui.bench.timing import Stat

    desk = LabelDesk(store)
    parts: dict[str, list[float]] = {"record_label": [], "next_pair": [], "status": []}
    shown = desk.next_pair()
    for _ in range(cycles):
        t0 = time.perf_counter()
        desk.record_label(shown, "a")  # type: ignore[arg-type]
        t1 = time.perf_counter()
        shown = desk.next_pair()
        t2 = time.perf_counter()
        desk.status()
        t3 = time.perf_counter()
        parts["record_label"].append(t1 - t0)
        parts["next_pair"].append(t2 - t1)
        parts["status"].append(t3 - t2)
    return {f"ui_engine_{name}_ms": Stat.of(v).median * 1000 for name, v in parts.items()}


def _training_store(root: Path) -> tuple[Any, Any]:
    """A 10k store with a first round due (WAITING_LABELS labels, no adapter yet): (store, config).

    The learner scores by `certainty`, which the store's pool (scored by `hybrid`) lacks, so after
    the first round it rescores chunk by chunk; until a chunk lands the queue serves unscored
    pairs oldest first. The next round is due after ROUND_SIZE more labels.
    """
    store = build_store(root, POOL, labeled=WAITING_LABELS)
    base = store.load_config()
    cfg = replace(base,
                  acquisition=replace(base.acquisition, name="certainty", warmup_labels=WAITING_LABELS, chunk_size=16),
                  loop=replace(base.loop, round_size=ROUND_SIZE),
                  train=replace(base.train, epochs=1, batch_size=8, warmup_steps=0))
    return store, cfg


def worker_activity(events: list[tuple[float, Event]], keys: list[tuple[float, float]]) -> dict[str, Any]:
    """What the learner did while the timed labels ran: DPO steps, rounds saved, score chunks written,
    and how many timed labels fell inside a training round.

    >>> ev = [(1.0, TrainStepDone(0, 2)), (2.0, TrainStepDone(1, 2)), (3.0, RoundTrained(2, 8)),
    ...       (4.0, StepProgressed("scoring", 16, 32))]
    >>> worker_activity(ev, [(0.5, 0.01), (1.5, 0.02), (3.5, 0.01), (4.5, 0.01)])["labels_in_round"]
    1
    """
    first, last = keys[0][0], keys[-1][0] + keys[-1][1]
    inside = [e for t, e in events if first <= t <= last]
    rounds: list[tuple[float, float]] = []
    opened: float | None = None
    for t, e in events:
        if isinstance(e, TrainStepDone) and e.step == 0:
            opened = t
        elif isinstance(e, RoundTrained) and opened is not None:
            rounds.append((opened, t))
            opened = None
    if opened is not None:
        rounds.append((opened, float("inf")))
    return {
        "train_steps": sum(isinstance(e, TrainStepDone) and e.step > 0 for e in inside),
        "rounds_saved": sum(isinstance(e, RoundTrained) for e in inside),
        "score_chunks_written": sum(isinstance(e, StepProgressed) and e.phase == "scoring" for e in inside),
        "labels_in_round": sum(any(a <= k <= b for a, b in rounds) for k, _ in keys),
    }


def run(ctx: BenchContext) -> dict[str, Any]:
    """p50/p99 of key → next pair's frame written, idle and while the app's learner trains."""
    from apl_tui.tui.app import LabelApp

    labels = ctx.sizes.ui_labels
    out: dict[str, Any] = {"ui_labels": labels, "ui_think_s": THINK_S}
    with tempfile.TemporaryDirectory(prefix="apl-bench-ui-") as tmp:
        for phase in ("idle", "training"):
            learner: _LoggedLearner | None = None
            if phase == "idle":
                store = build_store(Path(tmp) / phase, POOL)
                out.update(engine_breakdown(store))
                app = LabelApp(LabelDesk(store))
            else:
                store, cfg = _training_store(Path(tmp) / phase)
                learner = _LoggedLearner(store, cfg, policy=ctx.policy)
                app = LabelApp(LabelDesk(store, cfg), learner)
            try:
                ctx.log(f"ui: {labels} labels, {phase}")
                keys = asyncio.run(_session(app, labels))
            finally:
                store.close()
                if learner is not None:
                    perturbed_adapter(ctx.policy, seed=ctx.opts.seed)  # the rounds replaced it
            suffix = "" if phase == "idle" else "_training"
            out.update(latency_ms([dt for _, dt in keys], "ui_next_pair", suffix))
            if learner is not None:
                out.update({f"ui_worker_{k}": v for k, v in worker_activity(learner.events, keys).items()})
    return out
