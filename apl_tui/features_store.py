"""Feature columns of candidates (φ per completion) for the preference head (a mixin of `Store`).

φ(x, y) is the reference model's last hidden state mean-pooled over a completion (see
`Policy.sequence_logps(features=True)`), computed in the same pass as the cached reference
log-probs and stored beside them (`candidates.phi_a`, `phi_b`, migration 8), so a restart never
recomputes it. A completion shared by several pairs of a prompt is stored with each pair: simpler
than a completions table, at the price of N−1 copies (N = 4: 2.3 kB each at d = 576).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from apl_tui.rows import fetch_dicts


class FeatureMixin:
    """Methods of `Store` that read and write candidate features."""

    cursor: Callable[[], Any]
    transaction: Callable[[], Any]

    def set_features(self, values: Sequence[tuple[int, Sequence[float], Sequence[float]]]) -> None:
        """Store (id, φ_a, φ_b) for candidates, in one transaction."""
        if not values:
            return
        with self.transaction() as cur:
            cur.executemany("UPDATE candidates SET phi_a = ?, phi_b = ? WHERE id = ?",
                            [([float(v) for v in a], [float(v) for v in b], int(i)) for i, a, b in values])

    def missing_features(self) -> list[dict[str, Any]]:
        """Train candidates the head may read (queued or labeled) whose features are not stored yet."""
        cur = self.cursor().execute(
            "SELECT c.id, p.text AS prompt, c.completion_a, c.completion_b, c.eos_a, c.eos_b "
            "FROM candidates c JOIN prompts p ON p.id = c.prompt_id "
            "WHERE p.split = 'train' AND c.phi_a IS NULL AND (c.id IN (SELECT candidate_id FROM queue) "
            "OR c.id IN (SELECT candidate_id FROM effective_labels)) ORDER BY c.id")
        return fetch_dicts(cur)

    def head_pool(self) -> list[dict[str, Any]]:
        """Queued candidates of unlabeled prompts with their features: what head functions rank."""
        cur = self.cursor().execute(
            "SELECT c.id, c.prompt_id, c.completion_a, c.completion_b, c.phi_a, c.phi_b "
            "FROM queue q JOIN candidates c ON c.id = q.candidate_id "
            "WHERE NOT q.prompt_labeled AND c.phi_a IS NOT NULL ORDER BY c.id")
        return fetch_dicts(cur)

    def ab_label_count(self) -> int:
        """Effective a/b labels (what the head learns from)."""
        return int(self.cursor().execute(
            "SELECT count(*) FROM effective_labels WHERE outcome IN ('a', 'b')").fetchone()[0])

    def head_labels(self) -> list[tuple[list[float], list[float], bool]]:
        """(φ_a, φ_b, A won) of every effective a/b label with features, oldest first."""
        rows = self.cursor().execute(
            "SELECT c.phi_a, c.phi_b, e.outcome = 'a' FROM effective_labels e JOIN candidates c "
            "ON c.id = e.candidate_id WHERE e.outcome IN ('a', 'b') AND c.phi_a IS NOT NULL ORDER BY e.id").fetchall()
        return [(a, b, bool(won)) for a, b, won in rows]
