"""The active-learning loop, as blocking calls with a progress sink and a cancel Event.

Both shells drive this one object: the CLI from its main thread, the TUI from a thread worker.
Light calls (next_pair, record_label, undo, status) only touch the store and never wait for
heavy ones (load, refill, score, train, evaluate), which run one at a time under a lock.
State lives in the store, so any process can stop at any moment and the next one continues.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apl_tui import pool
from apl_tui.acquisition import choose_left
from apl_tui.config import AplConfig
from apl_tui.errors import AplError
from apl_tui.events import LabelRecorded, ProgressSink, ignore
from apl_tui.records import OUTCOMES, AdapterInfo, ShownPair
from apl_tui.store import Store, shown_pair

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStatus:
    """What a status line shows."""

    labels_total: int
    labels_session: int
    pool_size: int
    adapter_version: int
    labels_since_round: int
    round_due_at: int
    policy_loaded: bool


class Engine:
    """The loop over one store and one policy (loaded lazily, in whichever thread calls heavy work)."""

    def __init__(self, store: Store, config: AplConfig | None = None, *, policy: Any = None,
                 cache_dir: Path | None = None) -> None:
        self.store = store
        self.config = config or store.load_config()
        self.policy = policy
        # Converted models are large; experiments share one cache across many stores.
        self.cache_dir = cache_dir or Path(os.environ.get("APL_CACHE_DIR") or store.cache_dir)
        self.heavy_lock = threading.Lock()
        self._session_labels = 0
        self.timings: dict[str, float] = {"refill": 0.0, "score": 0.0, "train": 0.0}
        """Seconds of heavy work by kind (experiments report the acquisition cost from it)."""

    # ---- light: UI thread ------------------------------------------------------------------

    def next_pair(self, source: str = "human") -> ShownPair | None:
        """The pair to label now: the pending one if any, else the best (or a random control) pair."""
        pending = self.store.pending_impression(source)
        if pending is not None:
            shown, left, control, imp = pending
            return shown_pair(shown, left=left, control=control, impression_id=imp)
        a = self.config.acquisition
        shown_count = self.store.cursor().execute("SELECT count(*) FROM impressions").fetchone()[0]
        rng = random.Random(f"{self.config.loop.seed}:{shown_count}")
        control = rng.random() < a.control_share
        shown = None
        if control:
            shown = self.store.random_unlabeled(rng.randrange(2**31),
                                                exclude_labeled_prompts=not a.allow_relabel_prompts)
        if shown is None:
            control = False
            shown = self.store.best_unlabeled(a.name, exclude_labeled_prompts=not a.allow_relabel_prompts)
        if shown is None:
            return None
        left = choose_left(self.config.loop.seed, int(shown["candidate_id"]), shown_count)
        imp = self.store.record_impression(shown, left=left, control=control, source=source)
        return shown_pair(shown, left=left, control=control, impression_id=imp)

    def record_label(self, shown: ShownPair, outcome: str, *, source: str = "human",
                     latency_ms: int | None = None, rationale: str | None = None,
                     sink: ProgressSink = ignore) -> int:
        """Commit a verdict (in the candidate's a/b terms) before anything else happens."""
        if outcome not in OUTCOMES:
            raise AplError(f"unknown outcome {outcome!r}", hint=f"one of {', '.join(OUTCOMES)}")
        label_id = self.store.record_label(shown.candidate_id, outcome, source=source, shown_left=shown.left,
                                           latency_ms=latency_ms, impression_id=shown.impression_id or None,
                                           control=shown.control, rationale=rationale)
        self._session_labels += 1
        sink(LabelRecorded(candidate_id=shown.candidate_id, outcome=outcome, source=source))
        return label_id

    def undo(self, source: str = "human") -> int | None:
        """Undo the newest effective label of this source; its pair is the next one served, same side."""
        undone = self.store.undo_last(source)
        if undone is None:
            return None
        cand, left, control = undone
        self._session_labels = max(0, self._session_labels - 1)
        shown = self.store.shown(cand)
        if shown is not None:  # served next (unless another source still labels it: then it is skipped)
            self.store.record_impression(shown, left=left or "a", control=control, source=source)
        return cand

    def round_due(self, state: dict[str, Any] | None = None) -> tuple[bool, int, int]:
        """(due, labels since the last round, labels that trigger the next one).

        The first round comes after `warmup_labels` labels, later ones every `round_size`; a round
        needs at least one a/b label to learn from.
        """
        state = state or self.store.loop_state()
        since = state["label_events"] - state["label_clock"]
        need = self.config.loop.round_size if state["adapter_version"] else self.config.acquisition.warmup_labels
        return since >= need and state["preference_labels"] > 0, since, need

    def status(self) -> EngineStatus:
        """Counts for a status line (one small query)."""
        state = self.store.loop_state()
        _, since, need = self.round_due(state)
        return EngineStatus(
            labels_total=state["labels"], labels_session=self._session_labels, pool_size=state["pool"],
            adapter_version=state["adapter_version"], labels_since_round=since, round_due_at=need,
            policy_loaded=self.policy is not None)

    # ---- heavy: one at a time --------------------------------------------------------------

    def load_policy(self, sink: ProgressSink = ignore) -> Any:
        """Load the model and the latest adapter (if any); idempotent."""
        from apl_tui.policy import Policy

        if self.policy is None:
            self.policy = Policy.load(self.config.model, self.cache_dir, seed=self.config.train.seed, sink=sink)
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
        n = self.store.cursor().execute("SELECT count(*) FROM candidates").fetchone()[0]
        return random.Random(f"{self.config.loop.seed}:{salt}:{n}:{self.store.label_events()}").randrange(2**31)

    def pool_target(self) -> int:
        a = self.config.acquisition
        factor = a.certainty_factor if a.name in ("certainty", "uncertainty", "hybrid") else 1
        return max(a.pool_size, factor * self.config.loop.round_size)

    def refill(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None,
               target: int | None = None) -> int:
        with self.heavy_lock, self._timed("refill"):
            policy = self.load_policy(sink)
            return pool.refill(self.store, policy, self.config, target=target or self.pool_target(),
                               seed=self._seed("refill"), sink=sink, cancel=cancel)

    def score(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None,
              limit: int | None = None) -> int:
        with self.heavy_lock, self._timed("score"):
            policy = self.load_policy(sink)
            return pool.rescore(self.store, policy, self.config, seed=self.config.loop.seed, sink=sink,
                                cancel=cancel, limit=limit)

    def train(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None) -> AdapterInfo | None:
        from apl_tui.rounds import train_round

        with self.heavy_lock, self._timed("train"):
            policy = self.load_policy(sink)
            pool.fill_reference(self.store, policy, self.config, sink=sink, cancel=cancel)
            return train_round(self.store, policy, self.config, label_clock=self.store.label_events(),
                               sink=sink, cancel=cancel)

    def step(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None) -> str | None:
        """Do the most urgent unit of background work; None when nothing is due.

        Order: load the model, then train when a round is due (labels are waiting to be learned),
        then score what the current adapter has not scored (so the queue is fresh), then refill.
        """
        if self.policy is None:
            with self.heavy_lock:
                self.load_policy(sink)
            return "loaded model"
        if self.round_due()[0]:
            info = self.train(sink, cancel)
            return f"trained adapter v{info.version}" if info else None
        a = self.config.acquisition
        if self.store.unscored_ids(self.policy.adapter_version, a.name, limit=1):
            n = self.score(sink, cancel, limit=a.chunk_size)
            return f"scored {n} pairs"
        if self.store.pool_size() < max(a.low_water, 1):
            n = self.refill(sink, cancel)
            return f"generated {n} pairs" if n else None
        return None
