"""The learner: the model and all heavy work (load, refill, score, train), one job at a time.

It owns the policy, a lock that serialises heavy calls, and their timings. Its methods block and
take the caller's progress sink and cancel Event; it knows nothing of threads or Textual.
Batch mode calls it from the main thread; the labeling app runs `step` on a `LearnerThread`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apl_tui import pool
from apl_tui.acquisition import HEAD_FUNCTIONS, PAIR_FUNCTIONS
from apl_tui.cache import model_cache_dir
from apl_tui.config import AplConfig
from apl_tui.desk import round_due
from apl_tui.errors import Cancelled, check_cancel
from apl_tui.events import ProgressSink, ignore
from apl_tui.records import AdapterInfo
from apl_tui.store import Store

logger = logging.getLogger(__name__)

QUICK_FIRST_CHUNK = 2
"""Pairs in the first chunk a refill commits when a person waits in front of an empty pool."""


class Learner:
    """Heavy work over one store and one policy (loaded lazily, in whichever thread calls first)."""

    def __init__(self, store: Store, config: AplConfig | None = None, *, policy: Any = None,
                 cache_dir: Path | None = None) -> None:
        self.store = store
        self.config = config or store.load_config()
        self.policy = policy
        """The loaded Policy, or None until `load_policy` ran."""
        # Converted models are large: one cache per user, shared by every store.
        self.cache_dir = cache_dir or model_cache_dir()
        self.heavy_lock = threading.Lock()
        """Held by every heavy call: one model job at a time."""
        self.timings: dict[str, float] = {"refill": 0.0, "score": 0.0, "train": 0.0}
        """Seconds of heavy work by kind (experiments report the acquisition cost from it)."""
        self.head_fitted_on: int | None = None
        """a/b labels the preference head last scored the queue with (None: not yet in this process)."""

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self.policy is not None

    def load_policy(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None) -> Any:
        """Load the model and the latest adapter (if any); idempotent.

        Loading cannot be interrupted; a cancel that arrives meanwhile is honoured before the
        store is touched, so an abandoned load writes nothing.
        """
        from apl_tui.policy import Policy

        if self.policy is None:
            policy = Policy.load(self.config.model, self.cache_dir, seed=self.config.train.seed, sink=sink)
            check_cancel(cancel)
            self.policy = policy
            self.sync_adapter()
        return self.policy

    @contextmanager
    def _timed(self, kind: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[kind] += time.perf_counter() - t0

    def sync_adapter(self) -> None:
        """Make the policy carry this store's latest adapter (or none)."""
        from apl_tui.rounds import sync_adapter

        sync_adapter(self.store, self.policy)

    def _seed(self, salt: str) -> int:
        n = self.store.candidate_count()
        return random.Random(f"{self.config.loop.seed}:{salt}:{n}:{self.store.label_events()}").randrange(2**31)

    def pool_target(self) -> int:
        """How many labels the pool should be ready to serve after a refill (unlabeled prompts)."""
        a = self.config.acquisition
        factor = a.certainty_factor if a.name in PAIR_FUNCTIONS + HEAD_FUNCTIONS else 1
        return max(a.pool_size, factor * self.config.loop.round_size)

    def refill(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None,
               target: int | None = None, *, quick_start: bool = False) -> int:
        """Generate pairs until the pool can serve `target` labels (default `pool_target`); returns pairs added.

        With `quick_start` and an empty pool, the first committed chunk is small
        (`QUICK_FIRST_CHUNK` pairs), so a waiting person gets a pair in a fraction of the time.
        """
        with self.heavy_lock, self._timed("refill"):
            policy = self.load_policy(sink, cancel)
            first = QUICK_FIRST_CHUNK if quick_start and self.store.pool_size() == 0 else None
            return pool.refill(self.store, policy, self.config, target=target or self.pool_target(),
                               seed=self._seed("refill"), sink=sink, cancel=cancel, first_chunk=first)

    def score(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None,
              limit: int | None = None) -> int:
        """Score what the current adapter has not scored; returns pairs scored."""
        with self.heavy_lock, self._timed("score"):
            policy = self.load_policy(sink, cancel)
            if self.config.acquisition.name in HEAD_FUNCTIONS:
                self.head_fitted_on = self.store.ab_label_count()
            return pool.rescore(self.store, policy, self.config, seed=self.config.loop.seed, sink=sink,
                                cancel=cancel, limit=limit)

    def pool_low(self) -> bool:
        """Whether the pool can serve fewer labels than `acquisition.low_water` (at least 1)."""
        return pool.ready_prompts(self.store, self.config) < max(self.config.acquisition.low_water, 1)

    def train(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None, *,
              keep_pool: bool = False) -> AdapterInfo | None:
        """One DPO round on the labels so far; None when there is nothing to learn from.

        With `keep_pool` (the labeling app) the pool is topped up between optimizer steps whenever
        it falls below `low_water`, so a person labeling during a long round never runs dry.
        Those pairs come from the reference model (the adapter in training is neither finished
        nor recorded), and are stamped adapter version 0.
        """
        from apl_tui.rounds import train_round

        with self.heavy_lock, self._timed("train"):
            policy = self.load_policy(sink, cancel)
            pool.fill_reference(self.store, policy, self.config, sink=sink, cancel=cancel)
            between = None
            if keep_pool:
                def between() -> None:
                    if self.pool_low():
                        self._refill_locked(ReferenceView(policy), sink, cancel)
            return train_round(self.store, policy, self.config, label_clock=self.store.label_events(),
                               sink=sink, cancel=cancel, between_steps=between)

    def _refill_locked(self, policy: Any, sink: ProgressSink, cancel: threading.Event | None) -> int:
        t0 = time.perf_counter()
        try:
            return pool.refill(self.store, policy, self.config, target=self.pool_target(),
                               seed=self._seed("refill"), sink=sink, cancel=cancel)
        finally:
            self.timings["refill"] += time.perf_counter() - t0

    def head_stale(self) -> bool:
        """Whether the preference head should be refitted: `head_refit_every` new a/b labels (or none yet)."""
        if self.head_fitted_on is None:
            return True
        return self.store.ab_label_count() - self.head_fitted_on >= self.config.acquisition.head_refit_every

    def round_due(self) -> tuple[bool, int, int]:
        """Whether a training round is due now (see `desk.round_due`)."""
        return round_due(self.config, self.store.loop_state())

    def step(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None) -> str | None:
        """Do the most urgent unit of background work; None when nothing is due.

        Order: load the model; refill when the pool is below `low_water` (a person is waiting for
        pairs, so this comes before a round); train when a round is due, topping the pool up
        between optimizer steps; score what the current adapter has not scored (so the queue is
        fresh); top the pool up when a whole generation batch is missing. A refill that finds no
        unused prompt adds nothing and the order moves on. Head functions refit the preference head
        (cheap, no model pass) every `head_refit_every` a/b labels, before the unscored check.
        """
        if self.policy is None:
            with self.heavy_lock:
                self.load_policy(sink, cancel)
            return "loaded model"
        if self.pool_low():
            n = self.refill(sink, cancel, quick_start=True)
            if n:
                return f"generated {n} pairs"
        if self.round_due()[0]:
            info = self.train(sink, cancel, keep_pool=True)
            return f"trained adapter v{info.version}" if info else None
        a = self.config.acquisition
        if a.name in HEAD_FUNCTIONS and self.head_stale():
            # Cheap (no model pass): the ranking freshens every few labels, between DPO rounds.
            n = self.score(sink, cancel)
            return f"refit the preference head, scored {n} pairs"
        if self.store.unscored_ids(self.policy.adapter_version, a.name, limit=1):
            n = self.score(sink, cancel, limit=a.chunk_size)
            return f"scored {n} pairs"
        # Nothing urgent: top the pool up by whole batches, so the buffer is full when a round starts.
        if self.pool_target() - pool.ready_prompts(self.store, self.config) >= self.config.generation.batch_size:
            n = self.refill(sink, cancel)
            if n:
                return f"generated {n} pairs"
        return None


class ReferenceView:
    """The policy seen with its adapter switched off: what a refill during training generates with.

    Generation and log-probs go through the base model, and the pairs are stamped version 0
    (the reference), which is what made them.
    """

    adapter_version = 0

    def __init__(self, policy: Any) -> None:
        self._policy = policy

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """`Policy.generate` with the adapter off."""
        return self._policy.generate(*args, **{**kwargs, "adapter": False})

    def generate_pairs(self, *args: Any, **kwargs: Any) -> Any:
        """`Policy.generate_pairs` with the adapter off."""
        return self._policy.generate_pairs(*args, **{**kwargs, "adapter": False})

    def sequence_logps(self, *args: Any, **kwargs: Any) -> Any:
        """`Policy.sequence_logps` with the adapter off."""
        return self._policy.sequence_logps(*args, **{**kwargs, "adapter": False})


class LearnerThread:
    """The one owner of the learner's background thread: starts it, cancels it, joins it.

    The thread calls `learner.step` until cancelled. `on_step(description)` hears each finished
    step (None when nothing was due) and `on_error(exc)` a failure that ended the thread; both
    are called from the thread, so they must only post messages. The thread is a daemon: a model
    load cannot be interrupted, and quitting must not wait for it (it writes nothing once
    cancelled, see `Learner.load_policy`).
    """

    def __init__(self, learner: Learner, *, sink: ProgressSink = ignore,
                 on_step: Callable[[str | None], None] = lambda _: None,
                 on_error: Callable[[BaseException], None] = lambda _: None, idle_s: float = 0.5) -> None:
        self.learner = learner
        self.sink = sink
        self.on_step = on_step
        self.on_error = on_error
        self.idle_s = idle_s
        self.cancel = threading.Event()
        """Set by `stop`; the learner checks it between steps."""
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """Whether the thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (again, after it ended); a no-op while it runs."""
        if self.alive:
            return
        self.cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self.cancel,), name="apl-learner", daemon=True)
        self._thread.start()

    def _run(self, cancel: threading.Event) -> None:
        while not cancel.is_set():
            try:
                did = self.learner.step(self.sink, cancel)
            except Cancelled:
                return
            except BaseException as e:  # noqa: BLE001 — reported to the owner, who shows it
                if not cancel.is_set():
                    self.on_error(e)
                return
            if cancel.is_set():
                return
            self.on_step(did)
            if did is None:
                cancel.wait(self.idle_s)

    def stop(self, timeout: float = 0.5) -> bool:
        """Cancel and wait up to `timeout` s; True when the thread has ended.

        A step in progress stops at its next cancel check; a model load runs on in the background
        and is abandoned (the thread is a daemon).
        """
        self.cancel.set()
        return self.join(timeout)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the thread to end (without cancelling it); True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
