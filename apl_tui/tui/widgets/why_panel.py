"""'Why this pair': the acquisition facts, in screen terms (A = left pane, B = right pane)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from apl_tui.acquisition import HEAD_FUNCTIONS
from apl_tui.records import ShownPair

VERDICTS = {"left": "you chose A", "right": "you chose B", "tie": "tie", "both_bad": "both bad",
            "skip": "skipped"}
"""How a screen verdict reads in the 'last:' line."""

COMPACT_WIDTH = 100
"""Below this many columns the line uses short words, so it fits on one line."""


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "–" if value is None else format(value, fmt)


def screen_rewards(shown: ShownPair) -> tuple[float | None, float | None, float | None]:
    """(r̂ of the left pane, r̂ of the right pane, p(left ≻ right)) from the candidate's a/b terms.

    >>> from dataclasses import replace
    >>> s = ShownPair(1, 1, "p", "x", "y", "b", False, "certainty", 1.0, 1, None, 0.3, -0.2, 0.6,
    ...               None, 1, 0)
    >>> screen_rewards(s)
    (-0.2, 0.3, 0.4)
    """
    if shown.left == "a":
        return shown.reward_a, shown.reward_b, shown.p_a
    p_left = None if shown.p_a is None else round(1.0 - shown.p_a, 12)
    return shown.reward_b, shown.reward_a, p_left


def why_text(shown: ShownPair, compact: bool = False, *, labeled: bool = True) -> str:
    """The 'why this pair' line for a pair (shorter words when `compact`, for narrow terminals).

    Before the label (`labeled` False) nothing tells a control pair from an acquired one: the
    arms must look alike while a person decides. Probes are never named.
    """
    r_left, r_right, p_left = screen_rewards(shown)
    # Head functions carry the preference head's utilities there, not DPO's implicit reward.
    sym = "u" if shown.acquisition in HEAD_FUNCTIONS else "r̂"
    if compact:
        parts = [f"{shown.acquisition or 'unscored'} {_num(shown.score)}", f"#{shown.rank or '–'}",
                 f"H {_num(shown.entropy)}", f"{sym} {_num(r_left)}/{_num(r_right)}", f"p(A≻B) {_num(p_left)}"]
    else:
        parts = [f"{shown.acquisition or 'unscored'} {_num(shown.score)}", f"rank {shown.rank or '–'}",
                 f"entropy {_num(shown.entropy)}", f"{sym}A {_num(r_left)}", f"{sym}B {_num(r_right)}",
                 f"p(A≻B) {_num(p_left)}"]
    if shown.score is None and shown.entropy is None and shown.p_a is None:
        parts = [shown.acquisition or "unscored"] + parts[1:2]  # nothing measured: say only what it is
    if not labeled:  # a control pair has no rank: showing one would give the arm away
        del parts[1]
    if shown.control and labeled:
        parts.append("control" if compact else "random control pair")
    if shown.fallback:
        parts.append(f"fallback: {shown.fallback}")
    return " · ".join(parts)


def verdict_text(shown: ShownPair, verdict: str, compact: bool = False) -> str:
    """The 'last:' line shown after a label: what was chosen and why that pair was asked."""
    return f"last: {VERDICTS.get(verdict, verdict)} · {why_text(shown, compact)}"


class WhyPanel(Static):
    """One line: the previous pair's verdict and reasons (blind mode) or the current pair's reasons."""

    @property
    def _compact(self) -> bool:
        return self.app.size.width < COMPACT_WIDTH

    def show_current(self, shown: ShownPair | None) -> None:
        """Reveal the reasons for the pair on screen (loop.reveal = "always")."""
        # Text, not markup: acquisition names and fallbacks come from settings and stores.
        self.update(Text("" if shown is None else f"why: {why_text(shown, self._compact, labeled=False)}"))

    def show_last(self, shown: ShownPair, verdict: str) -> None:
        """After a label: the verdict just given and why that pair was asked."""
        self.update(Text(verdict_text(shown, verdict, self._compact)))

    def clear(self) -> None:
        """Nothing to show (e.g. right after an undo)."""
        self.update("")
