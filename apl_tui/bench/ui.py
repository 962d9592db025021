"""UI responsiveness: key press → next pair painted, in a headless `LabelApp.run_test()` session.

The key goes in the way Pilot sends it (a Key event to the driver), but without Pilot's idle
waits (each sleeps ≥ 20 ms, which would swamp what is measured). The clock stops when the
screen's pair is a new candidate, its text is in the left pane, and the refresh after that has
run (the compositor renders the frame; only the terminal write is skipped headless).

Measured twice on a 10k-candidate store: idle, and while a training loop (`train_dpo` on the
bench model, over and over) runs in a thread of the same process, as the app's worker does.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from apl_tui.bench.storage import build_store
from apl_tui.bench.timing import percentile
from apl_tui.bench.workload import BenchContext, make_pairs
from apl_tui.errors import Cancelled
from apl_tui.records import Pair

POOL = 10_000
"""Candidates in the labeling session's store."""
WARMUP_LABELS = 10


async def _session(store: Any, labels: int) -> list[float]:
    """Seconds from each key press to the next pair on screen, after WARMUP_LABELS untimed ones."""
    from textual import events

    from apl_tui.desk import LabelDesk
    from apl_tui.tui.app import LabelApp

    app = LabelApp(LabelDesk(store))
    times: list[float] = []
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause()
        for i in range(WARMUP_LABELS + labels):
            screen: Any = app.screen
            before = screen.shown.candidate_id
            started = time.perf_counter()
            key = events.Key("1", "1")
            key.set_sender(app)
            app._driver.send_message(key)  # type: ignore[union-attr]
            deadline = started + 10
            while time.perf_counter() < deadline:
                shown = screen.shown
                if (shown is not None and shown.candidate_id != before
                        and str(screen.query_one("#left-text").content) == shown.left_text):
                    break
                await asyncio.sleep(0)
            painted = asyncio.Event()
            app.call_after_refresh(painted.set)
            await asyncio.wait_for(painted.wait(), 10)
            if i >= WARMUP_LABELS:
                times.append(time.perf_counter() - started)
    return times


def engine_breakdown(store: Any, cycles: int = 30) -> dict[str, float]:
    """Median ms of the engine calls one label makes on the UI thread (no Textual): where the time goes."""
    from apl_tui.bench.timing import Stat
    from apl_tui.desk import LabelDesk

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


class _Trainer(threading.Thread):
    """DPO steps on the bench policy, over and over, until stopped (its adapter restored after)."""

    def __init__(self, ctx: BenchContext, pairs: list[Pair]) -> None:
        super().__init__(name="bench-trainer", daemon=True)
        from apl_tui.config import TrainConfig

        self.policy = ctx.policy
        self.pairs = pairs
        prompts = [p.prompt for p in pairs]
        self.ref_c = self.policy.reference_logps(prompts, [p.chosen for p in pairs]).tolist()
        self.ref_r = self.policy.reference_logps(prompts, [p.rejected for p in pairs]).tolist()
        self.cfg = TrainConfig(epochs=1, batch_size=8, warmup_steps=0)
        self.stop = threading.Event()
        self.steps = 0
        self._saved = {n: p.detach().clone() for n, p in self.policy.model.named_parameters() if p.requires_grad}

    def run(self) -> None:
        from apl_tui.dpo import train_dpo

        def count(step: int, metrics: dict[str, float]) -> None:
            self.steps += 1

        while not self.stop.is_set():
            try:
                train_dpo(self.policy, self.pairs, self.ref_c, self.ref_r, self.cfg, cancel=self.stop, on_step=count)
            except Cancelled:
                break

    def finish(self) -> None:
        """Stop after the current step and put the adapter back as it was."""
        import torch

        self.stop.set()
        self.join()
        with torch.no_grad():
            for n, p in self.policy.model.named_parameters():
                if n in self._saved:
                    p.copy_(self._saved[n])


def run(ctx: BenchContext) -> dict[str, Any]:
    """p50/p99 of key → next pair, idle and while training."""
    labels = ctx.sizes.ui_labels
    out: dict[str, Any] = {"ui_labels": labels}
    with tempfile.TemporaryDirectory(prefix="apl-bench-ui-") as tmp:
        for phase in ("idle", "training"):
            store = build_store(Path(tmp) / phase, POOL)
            trainer = None
            try:
                if phase == "training":
                    trainer = _Trainer(ctx, make_pairs(ctx.policy.tokenizer, 8, seed=ctx.opts.seed + 2))
                    trainer.start()
                else:
                    out.update(engine_breakdown(store))
                ctx.log(f"ui: {labels} labels, {phase}")
                times = asyncio.run(_session(store, labels))
            finally:
                if trainer is not None:
                    trainer.finish()
                    out["ui_training_steps_during"] = trainer.steps
                store.close()
            suffix = "" if phase == "idle" else "_training"
            ms = [t * 1000 for t in times]
            out[f"ui_next_pair_p50_ms{suffix}"] = percentile(ms, 50)
            out[f"ui_next_pair_p99_ms{suffix}"] = percentile(ms, 99)
            out[f"ui_next_pair_max_ms{suffix}"] = max(ms)
    return out
