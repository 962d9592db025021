"""The key path at scale: key → next pair's frame, and the desk's calls one by one, at 1k–1M labels.

A person labeling for hours accumulates a label log; a key press must cost the same at 1k labels
as at 1M. Each store holds `keypath_pool` unlabeled candidates plus L labeled ones (bulk SQL,
`storage.build_store`), for each L in `keypath_labels`:

- the desk's calls, timed one by one on this thread (no Textual): the labeling app's key path
  (`label_and_next`: the label and the next pair's impression journaled with one fsync, the pair
  picked ahead while the person read), then the wait until the desk's thread has written them to
  DuckDB (one commit, off the key path: `settle`), and the status read after it; and the same
  work without read-ahead, split per call: label, next-pair query, impression, status. The pick
  made ahead is timed too (it runs on the desk's thread, off the key path). A short pause between labels
  (THINK_S) stands for the reading, as in the UI family.
- key → the next pair's frame written, through the real app (`ui._session`, the FrameDriver
  that renders every frame as a terminal would get it), idle; and at `keypath_training_labels`
  while the app's own learner trains on those labels (a round is due at once and lasts the
  whole session).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from apl_tui.bench.storage import _tag, build_store
from apl_tui.bench.timing import latency_ms
from apl_tui.bench.workload import BenchContext, perturbed_adapter

THINK_S = 0.1
"""Pause after each pair before the next key in the desk timings (the UI family's reading time)."""
CALLS = ("label", "next", "impression", "status")


def desk_split(store: Any, cycles: int, think_s: float = THINK_S) -> dict[str, list[float]]:
    """Seconds per desk call over `cycles` labels each way: with read-ahead, then without.

    Keys: key (label_and_next), key_written (then until DuckDB has it), key_status, ahead (the
    pick made ahead, off the key path), and label, next (the next-pair query), impression, status
    without read-ahead.
    """
    from apl_tui.desk import LabelDesk

    desk = LabelDesk(store)
    out: dict[str, list[float]] = {k: [] for k in ("key", "key_written", "key_status", "ahead", *CALLS)}
    impressions: list[float] = []
    record_impression = store.record_impression

    def timed_impression(*args: Any, **kwargs: Any) -> int:
        t0 = time.perf_counter()
        try:
            return record_impression(*args, **kwargs)
        finally:
            impressions.append(time.perf_counter() - t0)

    store.record_impression = timed_impression  # the instance only, for this measurement
    try:
        shown = desk.next_pair()
        for _ in range(cycles):  # the app's way: the next pair picked while the person reads
            submitted = time.perf_counter()
            desk.read_ahead()
            finished: list[float] = []
            if desk._ahead is not None:  # the pick's own time: when its future completes
                desk._ahead[1].add_done_callback(lambda _, f=finished: f.append(time.perf_counter()))
            time.sleep(think_s)
            if finished:
                out["ahead"].append(finished[0] - submitted)
            t0 = time.perf_counter()
            shown = desk.label_and_next(shown, "a")
            t1 = time.perf_counter()
            desk.settle()
            t2 = time.perf_counter()
            desk.status()
            out["key"].append(t1 - t0)
            out["key_written"].append(t2 - t1)
            out["key_status"].append(time.perf_counter() - t2)
        used = desk.read_ahead_used
        for _ in range(cycles):  # the same work picked after the label, call by call
            time.sleep(think_s)
            impressions.clear()
            t0 = time.perf_counter()
            desk.record_label(shown, "a")
            t1 = time.perf_counter()
            shown = desk.next_pair()
            t2 = time.perf_counter()
            desk.status()
            t3 = time.perf_counter()
            imp = sum(impressions)
            out["label"].append(t1 - t0)
            out["next"].append(t2 - t1 - imp)
            out["impression"].append(imp)
            out["status"].append(t3 - t2)
        out["read_ahead_used"] = [float(used)]
    finally:
        del store.record_impression
        desk.close()
    return out


def _training_app(ctx: BenchContext, store: Any) -> tuple[Any, Any]:
    """The app with its learner, a round due at once over every label in the store: (app, learner)."""
    from apl_tui.bench.ui import _LoggedLearner
    from apl_tui.desk import LabelDesk
    from apl_tui.tui.app import LabelApp

    base = store.load_config()
    cfg = replace(base, acquisition=replace(base.acquisition, warmup_labels=8, chunk_size=16),
                  train=replace(base.train, epochs=1, batch_size=8, warmup_steps=0))
    learner = _LoggedLearner(store, cfg, policy=ctx.policy)
    return LabelApp(LabelDesk(store, cfg), learner), learner


def run(ctx: BenchContext) -> dict[str, Any]:
    """Per label-log size: the desk's split and key → frame p50/p99; while training at one size."""
    from apl_tui.bench.ui import _session, worker_activity
    from apl_tui.desk import LabelDesk
    from apl_tui.tui.app import LabelApp

    sizes = ctx.sizes
    pool = sizes.keypath_pool
    out: dict[str, Any] = {"keypath_pool": pool, "keypath_think_s": THINK_S}
    with tempfile.TemporaryDirectory(prefix="apl-bench-keypath-") as tmp:
        for labels in sizes.keypath_labels:
            tag = _tag(labels)
            ctx.log(f"keypath: building {pool:,} unlabeled + {labels:,} labeled candidates")
            t0 = time.perf_counter()
            store = build_store(Path(tmp) / tag, pool + labels, labeled=labels)
            out[f"keypath_build_s_{tag}"] = time.perf_counter() - t0
            try:
                split = desk_split(store, sizes.keypath_cycles)
                out[f"keypath_read_ahead_used_{tag}"] = int(split.pop("read_ahead_used")[0])
                for name, values in split.items():
                    lat = latency_ms(values, f"keypath_{name}", f"_{tag}")
                    out.update({k: v for k, v in lat.items() if "_max_" not in k})
                phases = ["idle"] + (["training"] if labels == sizes.keypath_training_labels else [])
                for phase in phases:
                    ctx.log(f"keypath: {sizes.ui_labels} labels through the app at {labels:,} labels, {phase}")
                    learner = None
                    if phase == "idle":
                        app = LabelApp(LabelDesk(store))
                    else:
                        app, learner = _training_app(ctx, store)
                    try:
                        keys = asyncio.run(_session(app, sizes.ui_labels))
                    finally:
                        if learner is not None:
                            perturbed_adapter(ctx.policy, seed=ctx.opts.seed)  # the round replaced it
                    suffix = "" if phase == "idle" else "_training"
                    out.update(latency_ms([dt for _, dt in keys], "keypath_frame", f"_{tag}{suffix}"))
                    if learner is not None:
                        activity = worker_activity(learner.events, keys)
                        out.update({f"keypath_worker_{k}": v for k, v in activity.items()})
            finally:
                store.close()
    return out
