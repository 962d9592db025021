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

from apl_tui.records import ScoreRow

T = TypeVar("T")

_SHOWN_KEYS = ("candidate_id", "prompt_id", "prompt", "completion_a", "completion_b", "acquisition", "score",
               "entropy", "reward_a", "reward_b", "p_a", "fallback", "scored_by", "labels_since_scored")
_SCORE_FIELDS = ("acquisition", "adapter_version", "score", "entropy", "reward_a", "reward_b", "p_a", "fallback")
_USABLE_SCORE = "adapter_version NOT IN (SELECT version FROM adapter_retirements)"
"""SQL condition on `scores`: not by a retired adapter (its scores never rank a pair again)."""
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


class QueueMixin:
    """Methods of `Store` that read and change the queue; they use `self.cursor()`/`transaction()`."""

    cursor: Callable[[], Any]
    transaction: Callable[[], Any]

    # ---- writes that keep the queue in step ------------------------------------------------

    def _enqueue_candidates(self, cur: Any, ids: Sequence[int]) -> None:
        cur.execute(
            "INSERT INTO queue (candidate_id, prompt_id, prompt_labeled) "
            "SELECT c.id, c.prompt_id, c.prompt_id IN (SELECT c2.prompt_id FROM effective_labels e "
            "JOIN candidates c2 ON c2.id = e.candidate_id) FROM candidates c JOIN prompts p ON p.id = c.prompt_id "
            "WHERE p.split = 'train' AND c.id IN (SELECT unnest(?)) ORDER BY c.id", [list(ids)])

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
                cur.execute("INSERT INTO scores (candidate_id, adapter_version, acquisition, score, entropy, "
                            "reward_a, reward_b, p_a, fallback) SELECT * FROM incoming_scores")
                # Never let an older adapter's score replace a fresher one.
                cur.execute(f"UPDATE queue SET {sets}, scored_at = current_timestamp FROM incoming_scores i "
                            "WHERE queue.candidate_id = i.candidate_id AND (queue.adapter_version IS NULL "
                            "OR i.adapter_version >= queue.adapter_version)")
                cur.execute("DELETE FROM incoming_scores")

        retry_conflicts(write)

    def record_label(self, candidate_id: int, outcome: str, *, source: str, shown_left: str | None = None,
                     latency_ms: int | None = None, impression_id: int | None = None, control: bool = False,
                     rationale: str | None = None, probe: bool = False) -> int:
        """Append a label event, committed before returning (nothing is lost on a crash).

        A probe label (`probe`) answers a consistency probe: it never becomes a training pair.
        """

        def write() -> int:
            with self.transaction() as cur:
                row = cur.execute(
                    "INSERT INTO labels (candidate_id, outcome, shown_left, source, latency_ms, impression_id, "
                    "control, rationale, probe) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    [candidate_id, outcome, shown_left, source, latency_ms, impression_id, control,
                     rationale, probe]).fetchone()
                cur.execute("DELETE FROM queue WHERE candidate_id = ?", [candidate_id])
                cur.execute("UPDATE queue SET prompt_labeled = true WHERE NOT prompt_labeled AND prompt_id = "
                            "(SELECT prompt_id FROM candidates WHERE id = ?)", [candidate_id])
            return int(row[0])

        return retry_conflicts(write)

    def undo_last(self, source: str = "human") -> tuple[int, str | None, bool] | None:
        """Undo this source's newest effective label (any depth).

        Returns (candidate id, side it was shown on the left, control flag), or None.
        """

        def write() -> tuple[int, str | None, bool] | None:
            with self.transaction() as cur:
                row = cur.execute(
                    "SELECT l.id, l.candidate_id, l.shown_left, coalesce(l.control, false) FROM labels l "
                    "WHERE l.source = ? AND l.outcome <> 'undo' AND NOT EXISTS (SELECT 1 FROM labels u "
                    "WHERE u.outcome = 'undo' AND u.undoes = l.id) ORDER BY l.id DESC LIMIT 1", [source]).fetchone()
                if row is None:
                    return None
                label_id, cand, left, control = row
                cur.execute("INSERT INTO labels (candidate_id, outcome, undoes, source) VALUES (?, 'undo', ?, ?)",
                            [cand, label_id, source])
                still = cur.execute("SELECT count(*) FROM effective_labels WHERE candidate_id = ?",
                                    [cand]).fetchone()[0]
                if not still:
                    self._enqueue_candidates(cur, [cand])
                    fresh = cur.execute(_FRESHEST, [cand])
                    srow = fresh.fetchone()
                    if srow is not None:
                        s = dict(zip([d[0] for d in fresh.description], srow))
                        cur.execute(f"UPDATE queue SET {', '.join(f'{f} = ?' for f in _SCORE_FIELDS)}, "
                                    "scored_at = ? WHERE candidate_id = ?",
                                    [s[f] for f in _SCORE_FIELDS] + [s["scored_at"], cand])
                cur.execute("UPDATE queue SET prompt_labeled = (prompt_id IN (SELECT c.prompt_id FROM "
                            "effective_labels e JOIN candidates c ON c.id = e.candidate_id)) WHERE prompt_id = "
                            "(SELECT prompt_id FROM candidates WHERE id = ?)", [cand])
            return int(cand), left, bool(control)

        return retry_conflicts(write)

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
                        "scored_at FROM queue WHERE candidate_id = ?", [candidate_id]).fetchone()
        q = q or (None,) * 9
        since = None
        if q[8] is not None:
            since = cur.execute("SELECT count(*) FROM labels WHERE outcome <> 'undo' AND created_at > ?",
                                [q[8]]).fetchone()[0]
        d = dict(zip(_SHOWN_KEYS, (cand[0], cand[1], prompt, cand[2], cand[3], *q[:8], since)))
        d["rank"] = rank
        return d

    def best_unlabeled(self, acquisition: str | None = None, *, exclude_labeled_prompts: bool = True,
                       exclude: Iterable[int] = ()) -> dict[str, Any] | None:
        """The best queued candidate: scores of `acquisition` by the newest adapter first, then highest.

        A fresher adapter's scores always outrank stale ones, so a partial rescore is used at once.
        Candidates without such a score (just generated, or scored by another function) come after
        every scored one, oldest first.
        """
        # Filters are added only when they filter: each costs a pass over the column (≈ 1 ms at 1M),
        # and two narrow top-1 scans beat one ORDER BY over CASE expressions (≈ 3.5 vs 6 ms).
        where, params = ["true"], []
        if exclude_labeled_prompts:
            where.append("NOT prompt_labeled")
        excluded = list(exclude)
        if excluded:
            where.append("candidate_id NOT IN (SELECT unnest(?::BIGINT[]))")
            params.append(excluded)
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

    def random_unlabeled(self, seed: int, *, exclude_labeled_prompts: bool = True) -> dict[str, Any] | None:
        """A uniformly random queued candidate (the control arm), reproducible for a seed."""
        row = self.cursor().execute(
            "SELECT candidate_id FROM queue WHERE NOT (prompt_labeled AND ?) "
            "ORDER BY hash(candidate_id, ?) LIMIT 1", [exclude_labeled_prompts, seed]).fetchone()
        return self.shown(int(row[0])) if row else None

    def impression_count(self) -> int:
        """Pairs ever put in front of a labeler (the clock of the control arm and side coin)."""
        return int(self.cursor().execute("SELECT count(*) FROM impressions").fetchone()[0])

    def record_impression(self, shown: dict[str, Any], *, left: str, control: bool, source: str) -> int:
        """Log that a pair was put in front of a labeler; returns the impression id.

        It keeps the prediction the pair was shown with (r̂_A, r̂_B, p(A≻B) by `scored_by`): the
        label that follows is a test of that model, which has not trained on it (prequential).
        """
        probe_of = shown.get("probe_of")
        row = self.cursor().execute(
            "INSERT INTO impressions (candidate_id, shown_left, control, acquisition, score, rank, scored_by, "
            "source, reward_a, reward_b, p_a, probe, probe_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            [shown["candidate_id"], left, control, shown["acquisition"], shown["score"], shown["rank"],
             shown["scored_by"], source, shown.get("reward_a"), shown.get("reward_b"), shown.get("p_a"),
             probe_of is not None, probe_of]).fetchone()
        return int(row[0])

    def pending_impression(self, source: str = "human") -> tuple[dict[str, Any], str, bool, int] | None:
        """The pair last shown to this source if still unlabeled: (shown, left, control, impression id)."""
        row = self.cursor().execute(
            "SELECT i.id, i.candidate_id, i.shown_left, i.control, i.rank, i.probe_of FROM impressions i "
            "WHERE i.source = ? ORDER BY i.id DESC LIMIT 1", [source]).fetchone()
        if row is None:
            return None
        imp_id, cand, left, control, rank, probe_of = row
        if probe_of is not None:  # a probe's pair is labeled already: pending until the probe is answered
            shown = self.probe_shown(cand, probe_of) if self.probe_pending(imp_id) else None  # type: ignore[attr-defined]
            return None if shown is None else (shown, left, False, int(imp_id))
        if not self.cursor().execute("SELECT count(*) FROM queue WHERE candidate_id = ?", [cand]).fetchone()[0]:
            return None
        return self.shown(cand, rank), left, bool(control), int(imp_id)
