"""Consistency probes in the store: pick an old pair to ask again, sides swapped (a mixin of `Store`).

A probe re-shows a pair its labeler answered at least `min_age` label events ago, with the sides
swapped. Its impression and label are flagged (`probe`), and `effective_labels` ignores probe
labels, so the original label stays the one that trains; the probe only measures agreement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apl_tui.counters import Event, effective_of
from apl_tui.queue import _USABLE_SCORE

_FRESHEST = ("SELECT acquisition, score, entropy, reward_a, reward_b, p_a, fallback, adapter_version, scored_at "
             f"FROM scores WHERE candidate_id = ? AND {_USABLE_SCORE} ORDER BY adapter_version DESC, scored_at DESC "
             "LIMIT 1")

PROBE_PAGE = 16
"""Labels checked per page when looking for a probe target."""
PROBE_PAGES = 4
"""Pages tried before ranking every effective label at once."""


class ProbeMixin:
    """Methods of `Store` for consistency probes; they use `self.cursor()` and `self.shown()`."""

    cursor: Callable[[], Any]
    shown: Callable[..., dict[str, Any] | None]
    _candidate_events: Callable[[Any, int], list[Event]]

    def probe_target(self, source: str, *, min_age: int, seed: int,
                     pending: int = 0) -> tuple[int, int, str | None] | None:
        """A label of `source` old enough to ask again: (label id, candidate id, side it was shown left).

        Only verdicts (a, b, tie, both bad) of pairs never probed before qualify; "old enough"
        means at least `min_age` label events came after it. None when nothing qualifies.
        `pending` label events not written yet count as written (a probe picked ahead, while the
        label before it is being made). This reads the whole label log: never on a key press.
        """
        cur = self.cursor()
        offset = min_age - 1 - pending
        edge: tuple[int] | None = (2**62,)  # the pending label itself is the edge: every written label is older
        if offset >= 0:
            edge = cur.execute("SELECT id FROM labels WHERE outcome <> 'undo' ORDER BY id DESC LIMIT 1 OFFSET ?",
                               [offset]).fetchone()
        if edge is None:
            return None
        # The first qualifying label in hash order, as one query over `effective_labels` would give
        # it; but that view ranks every label of every candidate (≈ 100 ms at 1M labels), so the
        # label log's verdicts are taken in hash order a page at a time (one narrow scan, ≈ 10×
        # cheaper) and each is checked by index: still its pair's effective label, never probed.
        for page in range(PROBE_PAGES):
            rows = cur.execute(
                "SELECT id, candidate_id, shown_left FROM labels WHERE source = ? AND id < ? "
                "AND outcome IN ('a', 'b', 'tie', 'both_bad') AND NOT coalesce(probe, false) "
                "ORDER BY hash(id, ?) LIMIT ? OFFSET ?", [source, edge[0], seed, PROBE_PAGE, page * PROBE_PAGE]).fetchall()
            for label_id, cand, left in rows:
                if self.probe_still_stands(int(label_id), int(cand)) and not cur.execute(
                        "SELECT count(*) FROM impressions WHERE coalesce(probe, false) AND candidate_id = ?",
                        [cand]).fetchone()[0]:
                    return int(label_id), int(cand), left
            if len(rows) < PROBE_PAGE:
                return None
        row = cur.execute(  # most verdicts were undone, replaced or probed: rank them all at once
            "SELECT e.id, e.candidate_id, e.shown_left FROM effective_labels e WHERE e.source = ? AND e.id < ? "
            "AND e.outcome IN ('a', 'b', 'tie', 'both_bad') AND NOT EXISTS (SELECT 1 FROM impressions i "
            "WHERE coalesce(i.probe, false) AND i.candidate_id = e.candidate_id) "
            "ORDER BY hash(e.id, ?) LIMIT 1", [source, edge[0], seed]).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), row[2])

    def probe_still_stands(self, label_id: int, candidate_id: int) -> bool:
        """Whether a label is still its pair's effective label (an index lookup)."""
        live = effective_of(self._candidate_events(self.cursor(), candidate_id))
        return live is not None and live[0] == label_id

    def probe_shown(self, candidate_id: int, probe_of: int, pending: int = 0) -> dict[str, Any] | None:
        """A labeled candidate as `shown` gives it, with its freshest score so it reads like any pair.

        `pending`: label events not written yet that come after its score (see `probe_target`).
        """
        shown = self.shown(candidate_id, rank=1)
        if shown is None:
            return None
        if shown["acquisition"] is None:
            cur = self.cursor()
            s = cur.execute(_FRESHEST, [candidate_id]).fetchone()
            if s is not None:
                keys = ("acquisition", "score", "entropy", "reward_a", "reward_b", "p_a", "fallback", "scored_by")
                shown.update(zip(keys, s[:8]))
                shown["labels_since_scored"] = pending + cur.execute(
                    "SELECT count(*) FROM labels WHERE outcome <> 'undo' AND created_at > ?", [s[8]]).fetchone()[0]
        shown["probe_of"] = probe_of
        return shown

    def probe_pending(self, impression_id: int) -> bool:
        """Whether a probe impression still waits for its answer."""
        return not self.cursor().execute("SELECT count(*) FROM labels WHERE impression_id = ?",
                                         [impression_id]).fetchone()[0]

    def last_undone_probe(self, source: str) -> int | None:
        """If this source's newest undo took back a probe answer: the label that probe re-asked."""
        row = self.cursor().execute(
            "SELECT i.probe_of FROM labels u JOIN labels l ON l.id = u.undoes JOIN impressions i "
            "ON i.id = l.impression_id WHERE u.source = ? AND u.outcome = 'undo' ORDER BY u.id DESC LIMIT 1",
            [source]).fetchone()
        return None if row is None or row[0] is None else int(row[0])
