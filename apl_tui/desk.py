"""The label desk: everything the person at the keyboard touches, on the UI thread.

Next pair, record a label, undo, status. Only the store is read and written here (small,
human-paced queries, each label committed before the next pair shows); nothing here waits for
the model. Heavy work lives in `learner.py` and runs on the learner's own thread.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from apl_tui.acquisition import choose_left
from apl_tui.config import AplConfig
from apl_tui.errors import AplError
from apl_tui.events import LabelRecorded, ProgressSink, ignore
from apl_tui.records import OUTCOMES, ShownPair
from apl_tui.store import Store, shown_pair


@dataclass(frozen=True)
class DeskStatus:
    """What a status line shows."""

    labels_total: int
    labels_session: int
    pool_size: int
    adapter_version: int
    labels_since_round: int
    round_due_at: int
    undone_in_adapter: int = 0
    """Labels the current adapter trained on that were undone since (it knows them until retrained)."""
    next_round_resets: bool = True
    """Whether the next round trains a fresh adapter (reset regime), dropping undone labels' effect."""
    progress: str = "round"
    """What labels_since_round / round_due_at count towards: "round" (training) or "eval" (apl label --eval)."""


def round_due(config: AplConfig, state: dict[str, Any]) -> tuple[bool, int, int]:
    """(due, labels toward the next round, labels that trigger it), from `Store.loop_state`.

    Effective verdicts count, made after the latest round started; skips and undone labels
    never do (the status line shows the same number). The first round comes after
    `warmup_labels` of them, later ones every `round_size`; a round needs at least one a/b label.

    >>> cfg = AplConfig()
    >>> round_due(cfg, {"labels_since_round": 20, "adapter_version": 0, "preference_labels": 5})
    (True, 20, 16)
    """
    since = int(state["labels_since_round"])
    need = config.loop.round_size if state["adapter_version"] else config.acquisition.warmup_labels
    return since >= max(need, 1) and state["preference_labels"] > 0, since, need


class LabelDesk:
    """Serves pairs and takes verdicts for one store; used from a single (UI or batch) thread."""

    def __init__(self, store: Store, config: AplConfig | None = None) -> None:
        self.store = store
        self.config = config or store.load_config()
        self._session_labels = 0

    def next_pair(self, source: str = "human") -> ShownPair | None:
        """The pair to label now: the pending one if any, else the best (or a random control) pair.

        A new pair is recorded as an impression (shown to `source`), so it stays the pending one.
        """
        return self._choose(source, record=True)

    def peek_pair(self, source: str = "human") -> ShownPair | None:
        """The pair `next_pair(source)` would give now, without recording anything (`apl next`)."""
        return self._choose(source, record=False)

    def _choose(self, source: str, *, record: bool) -> ShownPair | None:
        pending = self.store.pending_impression(source)
        if pending is not None:
            shown, left, control, imp = pending
            return shown_pair(shown, left=left, control=control, impression_id=imp)
        a = self.config.acquisition
        shown_count = self.store.impression_count()
        probe = self._probe(source, shown_count)
        if probe is not None:
            return probe
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
        imp = self.store.record_impression(shown, left=left, control=control, source=source) if record else 0
        return shown_pair(shown, left=left, control=control, impression_id=imp)

    def _probe(self, source: str, shown_count: int) -> ShownPair | None:
        """Now and then (loop.probe_share, a person's pairs only) re-ask an old pair, sides swapped.

        Its own coin (not the control arm's), so turning probes on or off leaves the other draws
        of a given impression count as they were. Batch oracles are not probed: their consistency
        is not in question, and probes would spend their budget.
        """
        loop = self.config.loop
        if source != "human" or loop.probe_share <= 0:
            return None
        rng = random.Random(f"{loop.seed}:probe:{shown_count}")
        if rng.random() >= loop.probe_share:
            return None
        target = self.store.probe_target(source, min_age=loop.probe_min_age, seed=rng.randrange(2**31))
        if target is None:
            return None
        label_id, cand, old_left = target
        shown = self.store.probe_shown(cand, label_id)
        if shown is None:
            return None
        left = "b" if old_left == "a" else "a"  # swapped: a consistent answer is the same a/b verdict
        imp = self.store.record_impression(shown, left=left, control=False, source=source)
        return shown_pair(shown, left=left, control=False, impression_id=imp)

    def record_label(self, shown: ShownPair, outcome: str, *, source: str = "human",
                     latency_ms: int | None = None, rationale: str | None = None,
                     sink: ProgressSink = ignore) -> int:
        """Commit a verdict (in the candidate's a/b terms) before anything else happens."""
        if outcome not in OUTCOMES:
            raise AplError(f"unknown outcome {outcome!r}", hint=f"one of {', '.join(OUTCOMES)}")
        label_id = self.store.record_label(shown.candidate_id, outcome, source=source, shown_left=shown.left,
                                           latency_ms=latency_ms, impression_id=shown.impression_id or None,
                                           control=shown.control, rationale=rationale, probe=shown.probe)
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
        probe_of = self.store.last_undone_probe(source)
        shown = self.store.shown(cand) if probe_of is None else self.store.probe_shown(cand, probe_of)
        if shown is not None:  # served next (unless another source still labels it: then it is skipped)
            self.store.record_impression(shown, left=left or "a", control=control, source=source)
        return cand

    def round_due(self) -> tuple[bool, int, int]:
        """Whether a training round is due now; see `round_due`."""
        return round_due(self.config, self.store.loop_state())

    def status(self) -> DeskStatus:
        """Counts for a status line (one small query)."""
        state = self.store.loop_state()
        _, since, need = round_due(self.config, state)
        return DeskStatus(
            labels_total=state["labels"], labels_session=self._session_labels, pool_size=state["pool"],
            adapter_version=state["adapter_version"], labels_since_round=since, round_due_at=need,
            undone_in_adapter=state["undone_in_adapter"], next_round_resets=self.config.train.regime == "reset")
