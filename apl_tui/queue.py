"""The label queue: which pair to show next, impressions, labels and undo (a mixin of `Store`).

`queue` holds every unlabeled train candidate with its freshest score. Labels delete from it and
undo puts back, in the same transaction as the label event, so the queue can never disagree with
the log. A concurrent rescore may touch the same row: DuckDB then refuses one of the two
transactions, and it is retried (the work is a few milliseconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from apl_tui.counters import CountersMixin, effective_of, is_preference
from apl_tui.records import ScoreRow
from apl_tui.rows import fetch_dict

T = TypeVar("T")

_SHOWN_KEYS = ("candidate_id", "prompt_id", "prompt", "completion_a", "completion_b", "acquisition", "score",
               "entropy", "reward_a", "reward_b", "p_a", "fallback", "scored_by", "labels_since_scored")
_SCORE_FIELDS = ("acquisition", "adapter_version", "score", "entropy", "reward_a", "reward_b", "p_a", "fallback")
_USABLE_SCORE = "adapter_version NOT IN (SELECT version FROM adapter_retirements)"
"""SQL condition on `scores`: not by a retired adapter (its scores never rank a pair again)."""
_QUEUE_SCORE_FIELDS = (*_SCORE_FIELDS, "scored_at", "label_clock")
"""What a queue row copies from its freshest score."""
_FRESHEST = (f"SELECT * FROM scores WHERE candidate_id = ? AND {_USABLE_SCORE} "
             "ORDER BY adapter_version DESC, scored_at DESC LIMIT 1")


def retry_conflicts(fn: Callable[[], T], attempts: int = 20) -> T:
    """Run a transaction, retrying when DuckDB reports a write-write conflict with another thread."""
    import duckdb

    for i in range(attempts):
        try:
            return fn()
        except duckdb.TransactionException as e:
            if "onflict" not in str(e) or i == attempts - 1:
                raise
            time.sleep(0.002 * (i + 1))
    raise AssertionError("unreachable")


def _excluding(where: list[str], params: list[Any], exclude: Iterable[int],
               prompt: int | None) -> tuple[list[str], list[Any]]:
    """Add the filters that leave out some candidates and a prompt (only when there are any)."""
    excluded = list(exclude)
    if excluded:
        where = [*where, "candidate_id NOT IN (SELECT unnest(?::BIGINT[]))"]
        params = [*params, excluded]
    if prompt is not None:
        where = [*where, "prompt_id <> ?"]
        params = [*params, prompt]
    return where, params


class QueueMixin(CountersMixin):
    """Methods of `Store` that read and change the queue; they use `self.cursor()`/`transaction()`."""

    # ---- writes that keep the queue in step ------------------------------------------------

    def _enqueue_candidates(self, cur: Any, ids: Sequence[int]) -> None:
        """Queue new train candidates (inside the caller's transaction) and count them into `pool`."""
        added = cur.execute(
            "INSERT INTO queue (candidate_id, prompt_id, prompt_labeled) "
            "SELECT c.id, c.prompt_id, c.prompt_id IN (SELECT c2.prompt_id FROM effective_labels e "
            "JOIN candidates c2 ON c2.id = e.candidate_id) FROM candidates c JOIN prompts p ON p.id = c.prompt_id "
            "WHERE p.split = 'train' AND c.id IN (SELECT unnest(?)) ORDER BY c.id RETURNING prompt_labeled",
            [list(ids)]).fetchall()
        self._bump(cur, {"pool": sum(1 for (labeled,) in added if not labeled)})

    def add_scores(self, rows: Sequence[ScoreRow]) -> None:
        """Append one chunk of scores and refresh their queue rows, as one transaction."""
        if not rows:
            return
        values = [(r.candidate_id, r.adapter_version, r.acquisition, r.score, r.entropy, r.reward_a, r.reward_b,
                   r.p_a, r.fallback) for r in rows]
        sets = ", ".join(f"{f} = i.{f}" for f in _SCORE_FIELDS)

        def write() -> None:
            with self.transaction() as cur:
                cur.execute("CREATE TEMP TABLE IF NOT EXISTS incoming_scores (candidate_id BIGINT, "
                            "adapter_version INTEGER, acquisition VARCHAR, score DOUBLE, entropy DOUBLE, "
                            "reward_a DOUBLE, reward_b DOUBLE, p_a DOUBLE, fallback VARCHAR)")
                cur.execute("DELETE FROM incoming_scores")
                cur.executemany("INSERT INTO incoming_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
                # The label clock now: "labels since scored" is then one subtraction.
                clock = cur.execute("SELECT coalesce(max(value), 0) FROM loop_counters "
                                    "WHERE name = 'label_events'").fetchone()[0]
                cur.execute("INSERT INTO scores (candidate_id, adapter_version, acquisition, score, entropy, "
                            "reward_a, reward_b, p_a, fallback, label_clock) SELECT *, ? FROM incoming_scores", [clock])
                # Never let an older adapter's score replace a fresher one.
                cur.execute(f"UPDATE queue SET {sets}, scored_at = current_timestamp, label_clock = ? "
                            "FROM incoming_scores i WHERE queue.candidate_id = i.candidate_id AND "
                            "(queue.adapter_version IS NULL OR i.adapter_version >= queue.adapter_version)", [clock])
                cur.execute("DELETE FROM incoming_scores")

        retry_conflicts(write)

    def record_label(self, candidate_id: int, outcome: str, *, source: str, shown_left: str | None = None,
                     latency_ms: int | None = None, impression_id: int | None = None, control: bool = False,
                     rationale: str | None = None, probe: bool = False) -> int:
        """Append a label event, committed before returning (nothing is lost on a crash).

        A probe label (`probe`) answers a consistency probe: it never becomes a training pair.
        The queue and the counters change in the same transaction. A queued candidate had no
        effective label, so the usual label reads nothing of the log; labeling a candidate that
        is not queued (another source's, or a test one) looks up its own events by index.
        """

        def write() -> int:
            with self.transaction() as cur:
                label_id, changes = self._write_label(cur, candidate_id, outcome, source, shown_left, latency_ms,
                                                      impression_id, control, rationale, probe)
                self._bump(cur, changes)
            return label_id

        return retry_conflicts(write)

    def _write_label(self, cur: Any, candidate_id: int, outcome: str, source: str, shown_left: str | None,
                     latency_ms: int | None, impression_id: int | None, control: bool,
                     rationale: str | None, probe: bool, new_id: int | None = None) -> tuple[int, dict[str, int]]:
        """Insert a label, update the queue; returns (label id, counter changes) for the caller to bump.

        `new_id`: an id taken from the `label_ids` sequence ahead of time (a journaled label).
        """
        label_id = int(cur.execute(
            "INSERT INTO labels (id, candidate_id, outcome, shown_left, source, latency_ms, impression_id, "
            "control, rationale, probe) VALUES (coalesce(?, nextval('label_ids')), ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            [new_id, candidate_id, outcome, shown_left, source, latency_ms, impression_id, control, rationale,
             probe]).fetchone()[0])
        if probe:  # a probe answer is an event, never the effective label: the queue and counts stay
            return label_id, {"label_events": 1, "last_label_id": label_id}
        gone = cur.execute("DELETE FROM queue WHERE candidate_id = ? RETURNING prompt_id, prompt_labeled",
                           [candidate_id]).fetchone()
        prior: tuple[int, str] | None = None
        pool = 0
        if gone is not None:  # it was queued, so it had no effective label
            prompt_id, pool = gone[0], (0 if gone[1] else -1)
        else:
            row = cur.execute("SELECT prompt_id FROM candidates WHERE id = ?", [candidate_id]).fetchone()
            prompt_id = row[0] if row else None
            prior = effective_of([e for e in self._candidate_events(cur, candidate_id) if e[0] != label_id])
        if prompt_id is not None:
            pool -= cur.execute("UPDATE queue SET prompt_labeled = true WHERE prompt_id = ? AND NOT prompt_labeled",
                                [prompt_id]).fetchone()[0]
        # A new label is always after the round mark; the one it replaces (rarely any) may not be.
        toward_round = int(outcome != "skip") - (self._toward_round(cur, prior) if prior else 0)
        return label_id, {"label_events": 1, "labels": prior is None, "pool": pool,
                          "preference_labels": is_preference(outcome) - is_preference(prior[1] if prior else None),
                          "labels_since_round": toward_round, "last_label_id": label_id}

    def _toward_round(self, cur: Any, label: tuple[int, str], mark: int | None = None) -> int:
        """1 if this effective label (id, outcome) counts toward the next round: not a skip, after the mark."""
        if mark is None:
            row = cur.execute("SELECT value FROM loop_counters WHERE name = 'adapter_mark'").fetchone()
            mark = int(row[0]) if row else 0
        return int(label[1] != "skip" and label[0] > mark)

    def undo_last(self, source: str = "human") -> tuple[int, str | None, bool] | None:
        """Undo this source's newest effective label (any depth).

        Returns (candidate id, side it was shown on the left, control flag), or None. It reads
        the log from the newest label back only as far as that label (a window that widens), its
        candidate's events and its prompt's candidates by index: the cost follows the undo's depth,
        not the log's size.
        """

        def write() -> tuple[int, str | None, bool] | None:
            with self.transaction() as cur:
                row = self._newest_effective(cur, source)
                if row is None:
                    return None
                label_id, cand, left, control, outcome, probe = row
                undo_id = int(cur.execute(
                    "INSERT INTO labels (candidate_id, outcome, undoes, source) VALUES (?, 'undo', ?, ?) RETURNING id",
                    [cand, label_id, source]).fetchone()[0])
                after = effective_of(self._candidate_events(cur, cand))
                # The undone label was the effective one unless it answered a probe or a newer label
                # of another source is.
                was = after if probe or (after is not None and after[0] > label_id) else (label_id, outcome)
                state = dict(cur.execute("SELECT name, value FROM loop_counters WHERE name IN "
                                         "('adapter_version', 'adapter_max_label', 'adapter_mark')").fetchall())
                mark = int(state.get("adapter_mark", 0))
                changes = {"last_label_id": undo_id,
                           "labels": -1 if after is None and was is not None else 0,
                           "preference_labels": is_preference(after[1] if after else None)
                           - is_preference(was[1] if was else None),
                           "labels_since_round": (self._toward_round(cur, after, mark) if after else 0)
                           - (self._toward_round(cur, was, mark) if was else 0),
                           "undone_in_adapter": 0 if probe else self._in_current_adapter(cur, label_id, outcome, state)}
                prompt_id = cur.execute("SELECT prompt_id FROM candidates WHERE id = ?", [cand]).fetchone()
                if prompt_id is not None and not probe:
                    changes["pool"] = self._requeue_after_undo(cur, cand, int(prompt_id[0]), back=after is None)
                self._bump(cur, changes)
            return int(cand), left, bool(control)

        return retry_conflicts(write)

    def _newest_effective(self, cur: Any, source: str) -> tuple[int, int, str | None, bool, str, bool] | None:
        """(id, candidate, shown_left, control, outcome, probe) of the source's newest label not undone."""
        last = cur.execute("SELECT value FROM loop_counters WHERE name = 'last_label_id'").fetchone()
        last = int(last[0]) if last else 0
        window = 256
        while True:
            # Label ids grow with time, so `id > lo` skips all older row groups (zone maps); an undo
            # is always newer than the label it undoes, so the same bound holds for undo events.
            lo = max(last - window, 0)
            row = cur.execute(
                "SELECT l.id, l.candidate_id, l.shown_left, coalesce(l.control, false), l.outcome, "
                "coalesce(l.probe, false) FROM labels l "
                "WHERE l.id > ? AND l.source = ? AND l.outcome <> 'undo' AND NOT EXISTS (SELECT 1 FROM labels u "
                "WHERE u.id > ? AND u.outcome = 'undo' AND u.undoes = l.id) ORDER BY l.id DESC LIMIT 1",
                [lo, source, lo]).fetchone()
            if row is not None or lo == 0:
                return None if row is None else (int(row[0]), int(row[1]), row[2], bool(row[3]), row[4], bool(row[5]))
            window *= 8

    def _in_current_adapter(self, cur: Any, label_id: int, outcome: str, state: dict[str, int]) -> int:
        """1 if the current adapter trained on this label (it knows it until retrained), else 0."""
        newer = label_id > state.get("adapter_max_label", 0)
        if not state.get("adapter_version") or newer or not is_preference(outcome):
            return 0  # the usual undo: a label newer than the last round
        row = cur.execute("SELECT list_contains(CAST(manifest->'label_ids' AS BIGINT[]), ?) FROM adapters "
                          "WHERE version = ?", [label_id, state["adapter_version"]]).fetchone()
        return int(bool(row and row[0]))

    def _requeue_after_undo(self, cur: Any, cand: int, prompt_id: int, *, back: bool) -> int:
        """Put an unlabeled candidate back with its freshest score, refresh its prompt's flag; returns Δ pool."""
        free = ("SELECT count(*) FILTER (WHERE NOT prompt_labeled), count(*) FROM queue WHERE prompt_id = ?")
        before = cur.execute(free, [prompt_id]).fetchone()[0]
        if back:
            cur.execute("INSERT INTO queue (candidate_id, prompt_id) SELECT c.id, c.prompt_id FROM candidates c "
                        "JOIN prompts p ON p.id = c.prompt_id WHERE c.id = ? AND p.split = 'train'", [cand])
            s = fetch_dict(cur.execute(_FRESHEST, [cand]))
            if s is not None:
                cur.execute(f"UPDATE queue SET {', '.join(f'{f} = ?' for f in _QUEUE_SCORE_FIELDS)} "
                            "WHERE candidate_id = ?", [s[f] for f in _QUEUE_SCORE_FIELDS] + [cand])
        # The prompt is labeled while any of its train candidates is not queued (has a label).
        siblings = cur.execute("SELECT count(*) FROM candidates WHERE prompt_id = ?", [prompt_id]).fetchone()[0]
        queued = cur.execute(free, [prompt_id]).fetchone()[1]
        cur.execute("UPDATE queue SET prompt_labeled = ? WHERE prompt_id = ?", [siblings > queued, prompt_id])
        return int(cur.execute(free, [prompt_id]).fetchone()[0]) - int(before)

    # ---- reads -----------------------------------------------------------------------------

    def pool_size(self, *, exclude_labeled_prompts: bool = True) -> int:
        """Unlabeled train candidates ready to show."""
        return int(self.cursor().execute("SELECT count(*) FROM queue WHERE NOT (prompt_labeled AND ?)",
                                         [exclude_labeled_prompts]).fetchone()[0])

    def unscored_ids(self, adapter_version: int, acquisition: str, limit: int | None = None) -> list[int]:
        """Queued candidates whose freshest score is not by this adapter and function (oldest first)."""
        rows = self.cursor().execute(
            "SELECT candidate_id FROM queue WHERE NOT prompt_labeled AND (adapter_version IS DISTINCT FROM ? "
            "OR acquisition IS DISTINCT FROM ?) ORDER BY candidate_id LIMIT ?",
            [adapter_version, acquisition, limit if limit is not None else 2**62]).fetchall()
        return [int(r[0]) for r in rows]

    def shown(self, candidate_id: int, rank: int | None = None) -> dict[str, Any] | None:
        """A candidate with texts, its freshest score (if queued) and staleness (labels since scored)."""
        cur = self.cursor()
        # Three primary-key lookups: a join here would scan whole tables (≈ 5 ms at 1M candidates).
        cand = cur.execute("SELECT id, prompt_id, completion_a, completion_b FROM candidates WHERE id = ?",
                           [candidate_id]).fetchone()
        if cand is None:
            return None
        prompt = cur.execute("SELECT text FROM prompts WHERE id = ?", [cand[1]]).fetchone()[0]
        q = cur.execute("SELECT acquisition, score, entropy, reward_a, reward_b, p_a, fallback, adapter_version, "
                        "label_clock FROM queue WHERE candidate_id = ?", [candidate_id]).fetchone()
        q = q or (None,) * 9
        # Labels since scored: the label clock now minus the clock the score was written at.
        since = None if q[8] is None else max(self.counter("label_events") - int(q[8]), 0)
        d = dict(zip(_SHOWN_KEYS, (cand[0], cand[1], prompt, cand[2], cand[3], *q[:8], since)))
        d["rank"] = rank
        return d

    def best_unlabeled(self, acquisition: str | None = None, *, exclude_labeled_prompts: bool = True,
                       exclude: Iterable[int] = (), exclude_prompt: int | None = None) -> dict[str, Any] | None:
        """The best queued candidate: scores of `acquisition` by the newest adapter first, then highest.

        A fresher adapter's scores always outrank stale ones, so a partial rescore is used at once.
        Candidates without such a score (just generated, or scored by another function) come after
        every scored one, oldest first. `exclude` (candidates) and `exclude_prompt` let a pick be
        made ahead, as if a pending label were already written.
        """
        # Filters are added only when they filter: each costs a pass over the column (≈ 1 ms at 1M),
        # and two narrow top-1 scans beat one ORDER BY over CASE expressions (≈ 3.5 vs 6 ms).
        where, params = ["true"], []
        if exclude_labeled_prompts:
            where.append("NOT prompt_labeled")
        where, params = _excluding(where, params, exclude, exclude_prompt)
        common = " AND ".join(where)
        scored = "acquisition = ?" if acquisition is not None else "score IS NOT NULL"
        row = self.cursor().execute(
            f"SELECT candidate_id FROM queue WHERE {common} AND {scored} "
            "ORDER BY adapter_version DESC, score DESC, candidate_id LIMIT 1",
            params + ([acquisition] if acquisition is not None else [])).fetchone()
        if row is None:
            row = self.cursor().execute(f"SELECT min(candidate_id) FROM queue WHERE {common}", params).fetchone()
            if row is None or row[0] is None:
                return None
        return self.shown(int(row[0]), rank=1)

    def random_unlabeled(self, seed: int, *, exclude_labeled_prompts: bool = True, exclude: Iterable[int] = (),
                         exclude_prompt: int | None = None) -> dict[str, Any] | None:
        """A uniformly random queued candidate (the control arm), reproducible for a seed."""
        where, params = _excluding(["NOT (prompt_labeled AND ?)"], [exclude_labeled_prompts], exclude, exclude_prompt)
        row = self.cursor().execute(
            f"SELECT candidate_id FROM queue WHERE {' AND '.join(where)} ORDER BY hash(candidate_id, ?) LIMIT 1",
            [*params, seed]).fetchone()
        return self.shown(int(row[0])) if row else None

    def impression_count(self) -> int:
        """Pairs ever put in front of a labeler (the clock of the control arm and side coin); a kept counter."""
        return self.counter("impressions")

    def record_impression(self, shown: dict[str, Any], *, left: str, control: bool, source: str) -> int:
        """Log that a pair was put in front of a labeler; returns the impression id."""

        def write() -> int:
            with self.transaction() as cur:
                imp = self._write_impression(cur, shown, left=left, control=control, source=source)
                self._bump(cur, {"impressions": 1, f"last_impression:{source}": imp})
            return imp

        return retry_conflicts(write)

    def _write_impression(self, cur: Any, shown: dict[str, Any], *, left: str, control: bool, source: str,
                          new_id: int | None = None) -> int:
        """Insert one impression with the prediction the pair is shown with (r̂_A, r̂_B, p(A≻B) by `scored_by`).

        The label that follows is a test of that model, which has not trained on it (prequential).
        `new_id`: an id taken from the `impression_ids` sequence ahead of time (a journaled pick).
        """
        probe_of = shown.get("probe_of")
        row = cur.execute(
            "INSERT INTO impressions (id, candidate_id, shown_left, control, acquisition, score, rank, scored_by, "
            "source, reward_a, reward_b, p_a, probe, probe_of) VALUES (coalesce(?, nextval('impression_ids')), "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [new_id, shown["candidate_id"], left, control, shown["acquisition"], shown["score"], shown["rank"],
             shown["scored_by"], source, shown.get("reward_a"), shown.get("reward_b"), shown.get("p_a"),
             probe_of is not None, probe_of]).fetchone()
        return int(row[0])

    def pending_impression(self, source: str = "human") -> tuple[dict[str, Any], str, bool, int] | None:
        """The pair last shown to this source if still unlabeled: (shown, left, control, impression id)."""
        last = self.counter(f"last_impression:{source}")
        if not last:
            return None
        cur = self.cursor()
        row = cur.execute("SELECT candidate_id, shown_left, control, rank, probe_of FROM impressions WHERE id = ?",
                          [last]).fetchone()
        if row is None:
            return None
        cand, left, control, rank, probe_of = row
        if probe_of is not None:  # a probe's pair is labeled already: pending until the probe is answered
            shown = self.probe_shown(cand, probe_of) if self.probe_pending(last) else None  # type: ignore[attr-defined]
            return None if shown is None else (shown, left, False, last)
        if not cur.execute("SELECT count(*) FROM queue WHERE candidate_id = ?", [cand]).fetchone()[0]:
            return None
        return self.shown(cand, rank), left, bool(control), last
