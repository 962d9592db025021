"""Counters kept in step with the label log (a mixin of `Store`): what a key press reads instead of aggregates.

`loop_counters` holds one row per name (labels, preference_labels, label_events, impressions,
pool, the current adapter's version/clock/newest label, undone_in_adapter, and the newest label
and per-source impression ids). Every write that changes what they count changes them in the
same transaction, so they can never disagree with the log; `migrations.COUNTERS_SELECT` is their
definition and `recount` rebuilds them from it. One row per name keeps DuckDB's row-level write
conflicts narrow: a label and a pool refill touch the same row only for `pool`, and the loser is
retried (see `queue.retry_conflicts`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from apl_tui.migrations import ADAPTER_COUNTERS_SELECT, COUNTERS_SELECT

SET_PREFIX = "last_"
"""Counters whose name starts with this hold the newest id (a bump sets them); the others add."""


def is_preference(outcome: str | None) -> int:
    """1 for an a/b verdict, else 0 (what `preference_labels` counts)."""
    return int(outcome in ("a", "b"))


Event = tuple[int, str, "int | None", bool]
"""One label event of a candidate: (id, outcome, undoes, probe)."""


def effective_of(events: list[Event]) -> tuple[int, str] | None:
    """The effective label among one candidate's events: the newest not undone and not a probe answer.

    >>> effective_of([(1, "a", None, False), (2, "undo", 1, False), (3, "b", None, False)])
    (3, 'b')
    >>> effective_of([(1, "a", None, False), (2, "undo", 1, False), (4, "b", None, True)]) is None
    True
    """
    undone = {u for _, o, u, _ in events if o == "undo"}
    live = [(i, o) for i, o, _, probe in events if o != "undo" and not probe and i not in undone]
    return max(live) if live else None


class CountersMixin:
    """Methods of `Store` that read and keep the counters; they use `self.cursor()`/`transaction()`."""

    cursor: Callable[[], Any]
    transaction: Callable[[], Any]
    _local: Any
    label_writes = 0
    """Label and impression writes this process made through the store (in memory, any thread): a pick
    made ahead is stale if it changed since (`LabelDesk`), with no query to find out."""

    def counters(self) -> dict[str, int]:
        """Every kept counter by name (one read of a table of a dozen rows)."""
        return {n: int(v) for n, v in self.cursor().execute("SELECT name, value FROM loop_counters").fetchall()}

    def counter(self, name: str) -> int:
        """One kept counter (0 when it does not exist yet)."""
        row = self.cursor().execute("SELECT value FROM loop_counters WHERE name = ?", [name]).fetchone()
        return int(row[0]) if row else 0

    def recounted(self) -> dict[str, int]:
        """The counters aggregated over the log now (what the kept ones must equal); reads everything."""
        return {n: int(v) for n, v in self.cursor().execute(COUNTERS_SELECT).fetchall()}

    def recount(self) -> None:
        """Rebuild the counters from the log (after a bulk load that bypassed the kept writes)."""
        with self.transaction() as cur:
            self._recount(cur)

    def _recount(self, cur: Any) -> None:
        self._local.label_write = True
        cur.execute("DELETE FROM loop_counters")
        cur.execute(f"INSERT INTO loop_counters {COUNTERS_SELECT}")

    def _recount_adapter(self, cur: Any) -> None:
        """Recompute the current adapter's counters (after a round is recorded or a version retired)."""
        cur.execute(f"INSERT OR REPLACE INTO loop_counters {ADAPTER_COUNTERS_SELECT}")

    def _bump(self, cur: Any, changes: Mapping[str, int]) -> None:
        """Add to counters (or set the `last_*` ones) in one statement, inside the caller's transaction.

        This runs on every key press, so its form is the cheapest measured: a plain UPDATE of
        every row (a dozen) with the names bound and the integers written in (they are `int`s);
        a WHERE on the names, bound integers, an upsert or an UPDATE … FROM each cost 2-4× more.
        Names it did not find (a new source) are then inserted with their change as value.
        """
        changes = {k: int(v) for k, v in changes.items() if v or k.startswith(SET_PREFIX)}
        if not changes:
            return
        if set(changes) - {"pool"}:  # a label, an undo or an impression (not new candidates)
            self._local.label_write = True  # counted once committed (`Store.transaction`)
        sets = {k: v for k, v in changes.items() if k.startswith(SET_PREFIX)}
        adds = {k: v for k, v in changes.items() if k not in sets}
        expr = "value"
        if adds:
            expr += " + CASE name " + " ".join(f"WHEN ? THEN {v:d}" for v in adds.values()) + " ELSE 0 END"
        if sets:
            expr = "CASE name " + " ".join(f"WHEN ? THEN {v:d}" for v in sets.values()) + f" ELSE {expr} END"
        found = {r[0] for r in cur.execute(f"UPDATE loop_counters SET value = {expr} RETURNING name",
                                           [*sets, *adds]).fetchall()}
        missing = [k for k in changes if k not in found]
        if missing:  # they start from 0, so their value is the change itself
            cur.execute("INSERT INTO loop_counters SELECT unnest(?::VARCHAR[]), unnest(?::BIGINT[])",
                        [missing, [changes[k] for k in missing]])

    def _candidate_events(self, cur: Any, candidate_id: int) -> list[Event]:
        """Every label event of one candidate (an index lookup, not a scan of the log)."""
        return [(int(i), o, u, bool(p)) for i, o, u, p in cur.execute(
            "SELECT id, outcome, undoes, coalesce(probe, false) FROM labels WHERE candidate_id = ?",
            [candidate_id]).fetchall()]
