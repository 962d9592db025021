"""Per-prompt evaluation results in the store (SQL only; mixed into `Store`).

`apl eval` writes each chunk's results in one transaction as it finishes, so a rerun after
Ctrl-C (or a crash) continues with the next unjudged prompt instead of starting over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

RESULTS = ("win", "loss", "tie", "unparseable")
"""An item's result, from the adapter's side."""


@dataclass(frozen=True)
class EvalItem:
    """One judged test prompt: the adapter's completion against the reference's."""

    idx: int
    """Position in the evaluation's prompt list (the resume point)."""
    prompt_id: int
    result: str
    """win, loss, tie or unparseable (for the adapter)."""
    policy_text: str
    reference_text: str
    kl: float | None = None
    """log π_θ(y|x) − log π_ref(y|x) of one y ~ π_θ at T = 1 (None past the first `guard_prompts`)."""
    pmi: float | None = None
    """Prompt relevance of the adapter's completion under the reference, log π_ref(y|x) − log π_ref(y|∅)."""
    pmi_ref: float | None = None
    """The same for the reference's completion."""


class EvalItemsMixin:
    """Reads and writes `eval_items`; the host class provides `cursor()` and `transaction()`."""

    def cursor(self) -> Any:  # provided by Store
        raise NotImplementedError

    def transaction(self) -> Any:  # provided by Store
        raise NotImplementedError

    def eval_results(self, adapter_version: int, oracle: str, settings_hash: str) -> dict[int, str]:
        """Results judged so far for one evaluation: {idx: result}."""
        rows = self.cursor().execute(
            "SELECT idx, result FROM eval_items WHERE adapter_version = ? AND oracle = ? AND settings_hash = ?",
            [adapter_version, oracle, settings_hash]).fetchall()
        return {int(i): str(r) for i, r in rows}

    def eval_items(self, adapter_version: int, oracle: str, settings_hash: str) -> dict[int, EvalItem]:
        """Every item judged so far for one evaluation, with its texts and measures: {idx: item}."""
        rows = self.cursor().execute(
            "SELECT idx, prompt_id, result, policy_text, reference_text, kl, pmi, pmi_ref FROM eval_items "
            "WHERE adapter_version = ? AND oracle = ? AND settings_hash = ?",
            [adapter_version, oracle, settings_hash]).fetchall()
        return {int(r[0]): EvalItem(int(r[0]), int(r[1]), str(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows}

    def add_eval_items(self, adapter_version: int, oracle: str, settings_hash: str,
                       items: Sequence[EvalItem]) -> None:
        """Record a chunk of judged prompts in one transaction (a rerun never duplicates one)."""
        if not items:
            return
        with self.transaction() as cur:
            cur.executemany(
                "INSERT OR REPLACE INTO eval_items (adapter_version, oracle, settings_hash, idx, prompt_id, result, "
                "policy_text, reference_text, kl, pmi, pmi_ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[adapter_version, oracle, settings_hash, it.idx, it.prompt_id, it.result, it.policy_text,
                  it.reference_text, it.kl, it.pmi, it.pmi_ref] for it in items])
