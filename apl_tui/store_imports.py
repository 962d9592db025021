"""Bulk writes of imported candidates and their verdicts (a mixin of `Store`).

One transaction per file: prompts, candidates (origin 'imported'), labels (source 'imported')
and queue rows all land together or not at all. Rows travel as an Arrow table that DuckDB scans
directly (bound data, no SQL formatting), which keeps a 100k-row file to one statement per table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_INCOMING = "apl_incoming_pairs"


class ImportMixin:
    """Methods of `Store` that write imported pairs; they use `self.transaction()`."""

    transaction: Callable[[], Any]
    _enqueue_candidates: Callable[[Any, Sequence[int]], None]
    _recount: Callable[[Any], None]

    def add_imported_pairs(self, pairs: Sequence[Any], *, source: str,
                           label_source: str = "imported") -> dict[str, int]:
        """Write `ImportedPair`s to the train split; returns counts of new prompts, candidates, labels.

        A pair already in the store (same prompt and texts, in either order, or repeated in the
        file) is skipped with its verdict, so importing the same file twice changes nothing.
        """
        import pyarrow as pa

        if not pairs:
            return {"prompts": 0, "candidates": 0, "labels": 0}
        table = pa.table({
            "pos": pa.array(range(len(pairs)), pa.int64()),
            "prompt": [p.prompt for p in pairs],
            "a": [p.completion_a for p in pairs],
            "b": [p.completion_b for p in pairs],
            "tokens_a": pa.array([p.tokens_a for p in pairs], pa.int32()),
            "tokens_b": pa.array([p.tokens_b for p in pairs], pa.int32()),
            "eos_a": pa.array([p.eos_a for p in pairs], pa.bool_()),
            "eos_b": pa.array([p.eos_b for p in pairs], pa.bool_()),
            "outcome": pa.array([p.outcome for p in pairs], pa.string()),
        })
        with self.transaction() as cur:
            cur.register(_INCOMING, table)
            try:
                return self._write_imported(cur, source, label_source)
            finally:
                cur.unregister(_INCOMING)

    def _write_imported(self, cur: Any, source: str, label_source: str) -> dict[str, int]:
        clash = cur.execute(
            f"SELECT any_value(i.prompt) FROM {_INCOMING} i JOIN prompts p ON p.text = i.prompt "
            "WHERE p.split <> 'train'").fetchall()[0][0]
        if clash is not None:
            from apl_tui.errors import ImportDataError

            raise ImportDataError(f"prompt {clash[:60]!r} is already a test prompt; nothing imported",
                                  hint="imported completions are for labeling: keep test prompts out of the file")
        prompts = cur.execute(
            "INSERT INTO prompts (text, split, source) SELECT prompt, 'train', ? FROM "
            f"(SELECT prompt, min(pos) AS pos FROM {_INCOMING} GROUP BY prompt) i "
            "WHERE NOT EXISTS (SELECT 1 FROM prompts p WHERE p.text = i.prompt) ORDER BY pos",
            [source]).fetchall()[0][0]
        cur.execute(
            "CREATE OR REPLACE TEMP TABLE apl_new_pairs AS "
            f"SELECT i.*, p.id AS prompt_id FROM {_INCOMING} i JOIN prompts p ON p.text = i.prompt "
            "WHERE NOT EXISTS (SELECT 1 FROM candidates c WHERE c.prompt_id = p.id AND "
            "((c.completion_a = i.a AND c.completion_b = i.b) OR (c.completion_a = i.b AND c.completion_b = i.a))) "
            "QUALIFY row_number() OVER (PARTITION BY i.prompt, least(i.a, i.b), greatest(i.a, i.b) "
            "ORDER BY i.pos) = 1")
        try:
            # Pairs are unique per prompt from here on, so (prompt, a, b) finds each new id again.
            ids = [int(r[0]) for r in cur.execute(
                "INSERT INTO candidates (prompt_id, completion_a, completion_b, eos_a, eos_b, tokens_a, tokens_b, "
                "adapter_version, origin) SELECT prompt_id, a, b, eos_a, eos_b, tokens_a, tokens_b, 0, 'imported' "
                "FROM apl_new_pairs ORDER BY pos RETURNING id").fetchall()]
            labels = cur.execute(
                "INSERT INTO labels (candidate_id, outcome, source) SELECT c.id, n.outcome, ? FROM apl_new_pairs n "
                "JOIN candidates c ON c.prompt_id = n.prompt_id AND c.completion_a = n.a AND c.completion_b = n.b "
                "WHERE n.outcome IS NOT NULL ORDER BY n.pos", [label_source]).fetchall()[0][0]
            unlabeled = [int(r[0]) for r in cur.execute(
                "SELECT c.id FROM apl_new_pairs n JOIN candidates c ON c.prompt_id = n.prompt_id "
                "AND c.completion_a = n.a AND c.completion_b = n.b WHERE n.outcome IS NULL").fetchall()]
            if unlabeled:
                self._enqueue_candidates(cur, unlabeled)
            if labels:
                cur.execute("UPDATE queue SET prompt_labeled = true WHERE NOT prompt_labeled AND prompt_id IN "
                            "(SELECT prompt_id FROM apl_new_pairs WHERE outcome IS NOT NULL)")
            if labels:  # a bulk load: the counters are recounted once, not kept row by row
                self._recount(cur)
        finally:
            cur.execute("DROP TABLE IF EXISTS apl_new_pairs")
        return {"prompts": int(prompts), "candidates": len(ids), "labels": int(labels)}
