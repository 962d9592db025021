"""The label desk: everything the person at the keyboard touches, on the UI thread.

Next pair, record a label, undo, status. Only the store is read and written here (small,
human-paced queries, each label saved before the next pair shows); nothing here waits for the
model. Heavy work lives in `learner.py` and runs on the learner's own thread.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from apl_tui.acquisition import choose_left
from apl_tui.config import AplConfig
from apl_tui.errors import AplError, StoreError, first_line
from apl_tui.events import LabelRecorded, ProgressSink, ignore
from apl_tui.records import OUTCOMES, ShownPair
from apl_tui.store import Store, shown_pair

logger = logging.getLogger(__name__)

READ_AHEAD_WAIT_S = 2.0
"""How long a key press waits for a pick still being made ahead before picking itself."""


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
    """Serves pairs and takes verdicts for one store; used from a single (UI or batch) thread.

    Read-ahead (the labeling app asks for it with `read_ahead` once a pair is on screen): the
    next pair is picked on the desk's own thread while the person reads, as if the pending label
    were written, with the ids its label and impression will have. A key press then runs no SQL:
    `label_and_next` appends the label and the next pair's impression to the store's journal
    (one fsync: saved) and shows the pick; the desk's thread writes both to DuckDB in one
    transaction right after (`label_journal.py`). Every other call waits for that write first
    (`settle`), and so does any reader on another thread (`Store.before_read`): the store reads
    as if the key had committed in DuckDB. The pick needs no check at the key: an undo or a
    rescore (`forget_read_ahead`) drops it, and a label or impression written through the store
    by anyone else since (`Store.label_writes`, counted in memory) sends the key the usual way.
    Picks are the same as without read-ahead unless the worker rescored meanwhile (the app reads
    ahead again when it does); the impression then records the prediction the pair was picked and
    shown with (its `scored_by` says which adapter made it).
    """

    def __init__(self, store: Store, config: AplConfig | None = None) -> None:
        self.store = store
        self.config = config or store.load_config()
        self._session_labels = 0
        self._current: ShownPair | None = None
        self._ahead: tuple[int, Future[dict[str, Any] | None]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._closed = False
        self._journaled: deque[dict[str, Any]] = deque()
        """Journal lines not yet in DuckDB, oldest first (appended on the UI thread, applied on the desk's)."""
        self.read_ahead_used = 0
        """Key presses whose next pair was the one picked ahead (the bench reports the share)."""

    @property
    def labels_this_session(self) -> int:
        """Labels this desk committed (less the ones it undid)."""
        return self._session_labels

    def next_pair(self, source: str = "human") -> ShownPair | None:
        """The pair to label now: the pending one if any, else the best (or a random control) pair.

        A new pair is recorded as an impression (shown to `source`), so it stays the pending one.
        """
        self._ahead = None
        self.settle()
        return self._on_screen(self._choose(source, record=True))

    def peek_pair(self, source: str = "human") -> ShownPair | None:
        """The pair `next_pair(source)` would give now, without recording anything (`apl next`)."""
        self.settle()
        return self._choose(source, record=False)

    def _choose(self, source: str, *, record: bool) -> ShownPair | None:
        pending = self.store.pending_impression(source)
        if pending is not None:
            shown, left, control, imp = pending
            return shown_pair(shown, left=left, control=control, impression_id=imp)
        shown_count = self.store.impression_count()
        probe = self._probe(source, shown_count)
        if probe is not None:
            return probe
        pick = self._pick(shown_count)
        if pick is None:
            return None
        imp = (self.store.record_impression(pick["shown"], left=pick["left"], control=pick["control"], source=source)
               if record else 0)
        return shown_pair(pick["shown"], left=pick["left"], control=pick["control"], impression_id=imp)

    def _on_screen(self, shown: ShownPair | None) -> ShownPair | None:
        self._current = shown
        return shown

    def _probe(self, source: str, shown_count: int) -> ShownPair | None:
        """Now and then (loop.probe_share, a person's pairs only) re-ask an old pair, sides swapped.

        Its own coin (not the control arm's), so turning probes on or off leaves the other draws
        of a given impression count as they were. Batch oracles are not probed: their consistency
        is not in question, and probes would spend their budget.
        """
        if not self._probe_due(source, shown_count):
            return None
        pick = self._probe_pick(source, shown_count)
        return None if pick is None else self._show_probe(pick, source)

    def _probe_pick(self, source: str, shown_count: int, pending: int = 0) -> dict[str, Any] | None:
        """The probe for impression `shown_count`, as if `pending` more labels were written; None if none qualifies.

        Finding a target reads the whole label log, so the app does it ahead (`read_ahead`).
        """
        loop = self.config.loop
        rng = random.Random(f"{loop.seed}:probe:{shown_count}")
        rng.random()
        target = self.store.probe_target(source, min_age=loop.probe_min_age, seed=rng.randrange(2**31),
                                         pending=pending)
        if target is None:
            return None
        label_id, cand, old_left = target
        shown = self.store.probe_shown(cand, label_id, pending=pending)
        if shown is None:
            return None
        left = "b" if old_left == "a" else "a"  # swapped: a consistent answer is the same a/b verdict
        return {"shown": shown, "left": left, "control": False, "probe_of": label_id}

    def _show_probe(self, pick: dict[str, Any], source: str) -> ShownPair:
        imp = self.store.record_impression(pick["shown"], left=pick["left"], control=False, source=source)
        return shown_pair(pick["shown"], left=pick["left"], control=False, impression_id=imp)

    def _pick_ahead(self, shown_count: int, after: ShownPair) -> dict[str, Any] | None:
        """What the key after `after`'s label will show: a probe when its coin says so (if one qualifies), else a pair."""
        if self._probe_due("human", shown_count):
            probe = self._probe_pick("human", shown_count, pending=1)
            if probe is not None:
                return probe
        pick = self._pick(shown_count, after)
        if pick is not None and pick["shown"]["labels_since_scored"] is not None:
            pick["shown"]["labels_since_scored"] += 1  # the pending label comes after its score too
        return pick

    def _pick_ahead_now(self, after: ShownPair) -> dict[str, Any] | None:
        """On the desk's thread: labels journaled before come first, then the pick and the ids it will use."""
        self._apply_journaled()
        writes = self.store.label_writes
        pick = self._pick_ahead(self.store.impression_count(), after)
        if pick is not None:
            pick["label_id"], pick["impression_id"] = self.store.allocate_ids()
            pick["label_writes"] = writes
        return pick

    def _probe_due(self, source: str, shown_count: int) -> bool:
        """Whether impression number `shown_count` flips the probe coin."""
        loop = self.config.loop
        if source != "human" or loop.probe_share <= 0:
            return False
        return random.Random(f"{loop.seed}:probe:{shown_count}").random() < loop.probe_share

    def _pick(self, shown_count: int, after: ShownPair | None = None) -> dict[str, Any] | None:
        """Choose the pair for impression number `shown_count`, as if `after` were already labeled."""
        a = self.config.acquisition
        exclude_prompts = not a.allow_relabel_prompts
        # Picked ahead, the pending label is not written yet: leave out what it will take out.
        skip = {"exclude": [after.candidate_id] if after else [],
                "exclude_prompt": after.prompt_id if after is not None and exclude_prompts else None}
        rng = random.Random(f"{self.config.loop.seed}:{shown_count}")
        control = rng.random() < a.control_share
        shown = None
        if control:
            shown = self.store.random_unlabeled(rng.randrange(2**31), exclude_labeled_prompts=exclude_prompts, **skip)
        if shown is None:
            control = False
            shown = self.store.best_unlabeled(a.name, exclude_labeled_prompts=exclude_prompts, **skip)
        if shown is None:
            return None
        left = choose_left(self.config.loop.seed, int(shown["candidate_id"]), shown_count)
        return {"shown": shown, "left": left, "control": control}

    def read_ahead(self) -> None:
        """Start picking the pair after the one on screen, on the desk's own thread (returns at once)."""
        current = self._current
        if (current is None or self._closed
                or (self._ahead is not None and self._ahead[0] == current.candidate_id)):
            return
        self._ahead = (current.candidate_id, self._thread().submit(self._pick_ahead_now, current))

    def _thread(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apl-desk",
                                            initializer=self._mark_desk_thread)
            self.store.before_read = self._before_read
        return self._pool

    def _mark_desk_thread(self) -> None:
        self._local.desk_thread = True

    def _before_read(self) -> None:
        """`Store.before_read`: a reader on any other thread sees the journaled labels (errors: see `settle`)."""
        if not self._journaled or getattr(self._local, "desk_thread", False):
            return
        try:
            self.settle()
        except AplError as e:  # the desk's own calls report it; another reader goes on without the label
            logger.warning("%s", e.message)

    def forget_read_ahead(self) -> None:
        """Drop a pick made ahead (the queue changed: a rescore, a new adapter); `read_ahead` again after."""
        self._ahead = None

    def close(self) -> None:
        """Write what the journal holds to DuckDB and stop the desk's thread (before the store closes)."""
        self._ahead = None
        self._closed = True
        try:
            self.settle()
        except AplError as e:  # the lines stay in the journal: the next open applies them
            logger.warning("%s", e.message)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            if self.store.before_read == self._before_read:
                self.store.before_read = None

    def label_and_next(self, shown: ShownPair, outcome: str, *, source: str = "human",
                       latency_ms: int | None = None, rationale: str | None = None,
                       sink: ProgressSink = ignore) -> ShownPair | None:
        """Save a verdict and return the next pair: journaled with a pick made ahead, else committed, then picked."""
        ahead, self._ahead = self._ahead, None
        pick = None
        if ahead is not None and ahead[0] == shown.candidate_id:
            try:
                pick = ahead[1].result(timeout=READ_AHEAD_WAIT_S)
            except Exception:  # noqa: BLE001 — a failed or slow pick is only a missed shortcut
                logger.debug("read-ahead pick not used", exc_info=True)
        # Labels or impressions written since the pick, other than by this desk's keys, may void it.
        if pick is None or source != "human" or pick["label_writes"] != self.store.label_writes:
            self.record_label(shown, outcome, source=source, latency_ms=latency_ms, rationale=rationale, sink=sink)
            return self.next_pair(source)
        self._check_outcome(outcome)
        entry = journal_entry(shown, outcome, pick, source=source, latency_ms=latency_ms, rationale=rationale)
        self.store.journal.append(entry)  # saved from here on: a crash replays it when the store opens
        self._journaled.append(entry)  # written to DuckDB by the desk's next job (status, pick) or a reader
        self._labeled(shown, outcome, source, sink)
        self.read_ahead_used += 1
        return self._on_screen(shown_pair(pick["shown"], left=pick["left"], control=pick["control"],
                                          impression_id=pick["impression_id"]))

    def _apply_journaled(self) -> None:
        """On the desk's thread: write the journaled lines to DuckDB in order (each one transaction)."""
        while self._journaled:
            self.store.apply_journaled(self._journaled[0])
            self._journaled.popleft()
            self.store.journal.applied()

    def settle(self) -> None:
        """Wait until every journaled label is in DuckDB (on the desk's own thread: write them now)."""
        if not self._journaled:  # emptied only after each line's commit, so empty means written
            return
        try:
            if getattr(self._local, "desk_thread", False):  # a status read there: never wait on itself
                self._apply_journaled()
            else:
                self._thread().submit(self._apply_journaled).result()
        except Exception as e:  # noqa: BLE001 — any failure is reported the same way; the line is kept
            raise StoreError(f"a saved label could not be written to the database: {first_line(e)}",
                             hint="it stays in labels.journal and is applied when the store is next opened") from e

    def record_label(self, shown: ShownPair, outcome: str, *, source: str = "human",
                     latency_ms: int | None = None, rationale: str | None = None,
                     sink: ProgressSink = ignore) -> int:
        """Commit a verdict (in the candidate's a/b terms) before anything else happens."""
        self._check_outcome(outcome)
        self.settle()
        label_id = self.store.record_label(shown.candidate_id, outcome, source=source, shown_left=shown.left,
                                           latency_ms=latency_ms, impression_id=shown.impression_id or None,
                                           control=shown.control, rationale=rationale, probe=shown.probe)
        self._labeled(shown, outcome, source, sink)
        return label_id

    @staticmethod
    def _check_outcome(outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise AplError(f"unknown outcome {outcome!r}", hint=f"one of {', '.join(OUTCOMES)}")

    def _labeled(self, shown: ShownPair, outcome: str, source: str, sink: ProgressSink) -> None:
        self._session_labels += 1
        sink(LabelRecorded(candidate_id=shown.candidate_id, outcome=outcome, source=source))

    def undo(self, source: str = "human") -> int | None:
        """Undo the newest effective label of this source; its pair is the next one served, same side."""
        self._ahead = None
        self.settle()
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
        self.settle()
        return round_due(self.config, self.store.loop_state())

    def wait_idle(self) -> None:
        """Wait until the desk's thread has done everything queued so far (journal writes, status reads, picks)."""
        if self._pool is not None:
            self._pool.submit(lambda: None).result()

    def status_soon(self) -> Future[DeskStatus]:
        """`status`, read on the desk's thread once the journaled labels are written (the UI never waits).

        After `close` (a timer firing while the app quits) the future comes back cancelled.
        """
        if self._closed:
            done: Future[DeskStatus] = Future()
            done.cancel()
            return done
        return self._thread().submit(self.status)

    def status(self) -> DeskStatus:
        """Counts for a status line (one small query, once the journaled labels are written)."""
        self.settle()
        state = self.store.loop_state()
        _, since, need = round_due(self.config, state)
        return DeskStatus(
            labels_total=state["labels"], labels_session=self._session_labels, pool_size=state["pool"],
            adapter_version=state["adapter_version"], labels_since_round=since, round_due_at=need,
            undone_in_adapter=state["undone_in_adapter"], next_round_resets=self.config.train.regime == "reset")


IMPRESSION_FIELDS = ("candidate_id", "acquisition", "score", "rank", "scored_by", "reward_a", "reward_b", "p_a",
                     "probe_of")
"""What an impression row keeps of the pair shown (the texts are in the store already)."""


def journal_entry(shown: ShownPair, outcome: str, pick: dict[str, Any], *, source: str,
                  latency_ms: int | None, rationale: str | None) -> dict[str, Any]:
    """The journal line of a key press: the label of `shown` and the impression of the pick shown after it."""
    label = {"id": pick["label_id"], "candidate_id": shown.candidate_id, "outcome": outcome, "source": source,
             "shown_left": shown.left, "latency_ms": latency_ms, "impression_id": shown.impression_id or None,
             "control": shown.control, "rationale": rationale, "probe": shown.probe}
    show = {"id": pick["impression_id"], "left": pick["left"], "control": pick["control"], "source": source,
            "shown": {k: pick["shown"].get(k) for k in IMPRESSION_FIELDS}}
    return {"label": label, "show": show}
