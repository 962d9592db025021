"""How an evaluation's measures read: one line for `apl eval`, table rows for `apl stats` and its screen.

Plain strings only (no Rich, no model), shared by the CLI and the TUI so both say the same. A value
missing from the row (an evaluation from before migration 9, a person's own evaluation, KL and PMI
turned off) reads "–".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DASH = "–"

GUARD_PROMPTS = 50
"""Test prompts `apl eval` measures KL and PMI on by default (they cost extra passes; 0 turns them off)."""

QUALITY_COLUMNS = ("adapter", "judge", "KL ± se", "PMI", "OOV", "dist-2", "rep", "on topic", "top word")
"""Headers of the quality table (KL in nats; rep = repeated bigrams within a completion); a reference
row comes first for each set of test prompts. Short, so the table fits 100 columns."""


def _num(x: Any, fmt: str = ".2f") -> str:
    return DASH if x is None else format(float(x), fmt)


def _pct(x: Any) -> str:
    return DASH if x is None else f"{100 * float(x):.0f}%"


def _top(word: Any, share: Any) -> str:
    return DASH if share is None else f"{word or DASH} {_pct(share)}"


def has_measures(row: Mapping[str, Any]) -> bool:
    """True when the evaluation row carries the measures (written by `apl eval` since migration 9)."""
    return row.get("guard_prompts") is not None


def measures_lines(row: Mapping[str, Any]) -> list[str]:
    """The measures of one `evals` row in a few short lines (≤ 100 columns), the reference's in brackets.

    >>> measures_lines({"guard_prompts": 2, "kl": 0.5, "kl_se": 0.1, "pmi": 1.0, "pmi_ref": 2.0, "oov": 0.1,
    ...                 "oov_ref": 0.05, "distinct2": 0.9, "distinct2_ref": 0.95, "repetition": 0.0,
    ...                 "repetition_ref": 0.1, "on_topic": 0.5, "on_topic_ref": 1.0, "top_word": "film",
    ...                 "top_word_share": 0.5, "top_word_ref": "story", "top_word_share_ref": 1.0})
    ['KL 0.50 ± 0.10 nats, PMI 1.00 (ref 2.00) on the first 2 prompts', 'OOV 10% (ref 5%), distinct-2 0.90 (ref 0.95), repeats 0% (ref 10%), on topic 50% (ref 100%)', 'top word film 50% (ref story 100%)']
    """
    if not has_measures(row):
        return ["no KL or quality measures (evaluated before they were recorded, or by a person)"]
    g = int(row["guard_prompts"])
    if g and row.get("kl") is not None:
        head = (f"KL {_num(row['kl'])} ± {_num(row.get('kl_se'))} nats, PMI {_num(row.get('pmi'))} "
                f"(ref {_num(row.get('pmi_ref'))}) on the first {g} prompt{'' if g == 1 else 's'}")
    else:
        head = "KL and PMI off (--guard-prompts 0)"
    guards = (f"OOV {_pct(row.get('oov'))} (ref {_pct(row.get('oov_ref'))}), "
              f"distinct-2 {_num(row.get('distinct2'))} (ref {_num(row.get('distinct2_ref'))}), "
              f"repeats {_pct(row.get('repetition'))} (ref {_pct(row.get('repetition_ref'))}), "
              f"on topic {_pct(row.get('on_topic'))} (ref {_pct(row.get('on_topic_ref'))})")
    top = (f"top word {_top(row.get('top_word'), row.get('top_word_share'))} "
           f"(ref {_top(row.get('top_word_ref'), row.get('top_word_share_ref'))})")
    return [head, guards, top]


def quality_rows(evals: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """Rows under `QUALITY_COLUMNS`: per set of test prompts the reference once, then each evaluation.

    The reference's completions are the same for every adapter evaluated on the same prompts and
    settings, so its row is shown once per settings (labelled with the prompt count).
    """
    rows: list[tuple[str, ...]] = []
    refs_shown: set[str] = set()
    for e in evals:
        key = str(e.get("settings_hash"))
        if has_measures(e) and key not in refs_shown:
            refs_shown.add(key)
            rows.append((f"ref n={e.get('n')}", DASH, "0" if e.get("kl") is not None else DASH,
                         _num(e.get("pmi_ref")), _pct(e.get("oov_ref")), _num(e.get("distinct2_ref")),
                         _pct(e.get("repetition_ref")), _pct(e.get("on_topic_ref")),
                         _top(e.get("top_word_ref"), e.get("top_word_share_ref"))))
        kl = DASH if e.get("kl") is None else f"{_num(e['kl'])}±{_num(e.get('kl_se'))}"
        rows.append((f"v{e['adapter_version']}", str(e["oracle"]), kl, _num(e.get("pmi")), _pct(e.get("oov")),
                     _num(e.get("distinct2")), _pct(e.get("repetition")), _pct(e.get("on_topic")),
                     _top(e.get("top_word"), e.get("top_word_share"))))
    return rows
