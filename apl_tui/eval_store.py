"""Human evaluation in the store (a mixin of `Store`): blind pairs of adapter vs reference, verdicts.

`eval_pairs` holds, per adapter and evaluation settings, one pair per test prompt: the adapter's
completion and the reference's, with the side the adapter's went to. `eval_judgments` is an
append-only log like `labels` (undo is an event). The running tally is kept in `evals` with
oracle 'human', replaced in the same transaction as each verdict, so `apl stats` shows it beside
the oracles' win-rates. None of it touches labels, the queue or training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

HUMAN = "human"
"""The `evals.oracle` of a person's own evaluation."""

_EFFECTIVE = """
SELECT * EXCLUDE (rn) FROM (
    SELECT j.*, row_number() OVER (PARTITION BY j.eval_pair_id ORDER BY j.id DESC) AS rn
    FROM eval_judgments j
    WHERE j.outcome <> 'undo' AND NOT EXISTS (SELECT 1 FROM eval_judgments u WHERE u.outcome = 'undo'
                                              AND u.undoes = j.id)
) WHERE rn = 1
"""


@dataclass(frozen=True)
class EvalPair:
    """One blind pair of an evaluation: the adapter's completion on `policy_side`, the reference's on the other."""

    id: int
    position: int
    prompt_id: int
    prompt: str
    completion_a: str
    completion_b: str
    policy_side: str


class EvalStoreMixin:
    """Methods of `Store` for `apl label --eval`; they use `self.cursor()` and `self.transaction()`."""

    cursor: Callable[[], Any]
    transaction: Callable[[], Any]

    def eval_pairs_made(self, adapter_version: int, settings_hash: str) -> int:
        """How many pairs of this evaluation exist (they are made in test-prompt order)."""
        return int(self.cursor().execute(
            "SELECT count(*) FROM eval_pairs WHERE adapter_version = ? AND settings_hash = ?",
            [adapter_version, settings_hash]).fetchone()[0])

    def add_eval_pairs(self, adapter_version: int, settings_hash: str, settings: dict[str, Any],
                       rows: Sequence[tuple[int, int, str, str, str]]) -> None:
        """Append pairs (position, prompt id, adapter's text, reference's text, adapter's side), one transaction."""
        with self.transaction() as cur:
            cur.executemany(
                "INSERT INTO eval_pairs (adapter_version, settings_hash, settings, position, prompt_id, "
                "completion_policy, completion_reference, policy_side) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(adapter_version, settings_hash, json.dumps(settings), *r) for r in rows])

    def next_eval_pair(self, adapter_version: int, settings_hash: str, source: str) -> EvalPair | None:
        """The first pair of this evaluation without a standing verdict from `source`."""
        cur = self.cursor().execute(
            "SELECT e.id, e.position, e.prompt_id, p.text, e.completion_policy, e.completion_reference, "
            f"e.policy_side FROM eval_pairs e JOIN prompts p ON p.id = e.prompt_id WHERE e.adapter_version = ? "
            f"AND e.settings_hash = ? AND e.id NOT IN (SELECT eval_pair_id FROM ({_EFFECTIVE}) WHERE source = ?) "
            "ORDER BY e.position LIMIT 1", [adapter_version, settings_hash, source])
        row = cur.fetchone()
        if row is None:
            return None
        pid, pos, prompt_id, prompt, mine, ref, side = row
        a, b = (mine, ref) if side == "a" else (ref, mine)
        return EvalPair(int(pid), int(pos), int(prompt_id), prompt, a, b, side)

    def eval_counts(self, adapter_version: int, settings_hash: str, source: str) -> tuple[int, int]:
        """(pairs with a standing verdict from `source`, pairs made) of this evaluation."""
        row = self.cursor().execute(
            f"SELECT (SELECT count(*) FROM ({_EFFECTIVE}) j JOIN eval_pairs e ON e.id = j.eval_pair_id "
            "WHERE e.adapter_version = ? AND e.settings_hash = ? AND j.source = ?), "
            "(SELECT count(*) FROM eval_pairs WHERE adapter_version = ? AND settings_hash = ?)",
            [adapter_version, settings_hash, source, adapter_version, settings_hash]).fetchone()
        return int(row[0]), int(row[1])

    def record_eval_judgment(self, eval_pair_id: int, outcome: str, *, source: str, shown_left: str,
                             latency_ms: int | None, settings: dict[str, Any]) -> int:
        """Append a verdict and replace this evaluation's `evals` row, in one transaction."""
        with self.transaction() as cur:
            row = cur.execute(
                "INSERT INTO eval_judgments (eval_pair_id, outcome, shown_left, source, latency_ms) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id", [eval_pair_id, outcome, shown_left, source, latency_ms]
            ).fetchone()
            self._write_tally(cur, eval_pair_id, source, settings)
        return int(row[0])

    def undo_eval_judgment(self, adapter_version: int, settings_hash: str, source: str,
                           settings: dict[str, Any]) -> int | None:
        """Undo the newest standing verdict of `source` in this evaluation; returns its pair id."""
        with self.transaction() as cur:
            row = cur.execute(
                f"SELECT j.id, j.eval_pair_id FROM ({_EFFECTIVE}) j JOIN eval_pairs e ON e.id = j.eval_pair_id "
                "WHERE e.adapter_version = ? AND e.settings_hash = ? AND j.source = ? ORDER BY j.id DESC LIMIT 1",
                [adapter_version, settings_hash, source]).fetchone()
            if row is None:
                return None
            cur.execute("INSERT INTO eval_judgments (eval_pair_id, outcome, undoes, source) VALUES (?, 'undo', ?, ?)",
                        [row[1], row[0], source])
            self._write_tally(cur, int(row[1]), source, settings)
        return int(row[1])

    def _write_tally(self, cur: Any, eval_pair_id: int, source: str, settings: dict[str, Any]) -> None:
        """Recount this evaluation's standing verdicts and replace its `evals` row (oracle = source)."""
        version, digest = cur.execute("SELECT adapter_version, settings_hash FROM eval_pairs WHERE id = ?",
                                      [eval_pair_id]).fetchone()
        wins, losses, ties, skips = cur.execute(
            f"SELECT count(*) FILTER (WHERE j.outcome = e.policy_side), "
            "count(*) FILTER (WHERE j.outcome IN ('a', 'b') AND j.outcome <> e.policy_side), "
            "count(*) FILTER (WHERE j.outcome IN ('tie', 'both_bad')), count(*) FILTER (WHERE j.outcome = 'skip') "
            f"FROM ({_EFFECTIVE}) j JOIN eval_pairs e ON e.id = j.eval_pair_id "
            "WHERE e.adapter_version = ? AND e.settings_hash = ? AND j.source = ?",
            [version, digest, source]).fetchone()
        decided = wins + losses
        rate = wins / decided if decided else None
        stderr = (rate * (1 - rate) / decided) ** 0.5 if decided else None
        cur.execute("DELETE FROM evals WHERE adapter_version = ? AND oracle = ? AND settings_hash = ?",
                    [version, source, digest])
        cur.execute("INSERT INTO evals (adapter_version, oracle, settings_hash, settings, n, wins, losses, ties, "
                    "unparseable, win_rate, stderr, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [version, source, digest, json.dumps(settings), wins + losses + ties + skips,
                     wins, losses, ties, skips, rate, stderr, None])
