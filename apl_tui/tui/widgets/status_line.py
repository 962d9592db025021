"""The status line: labels, pool, adapter, what the worker does, and how stale the ranking is."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from apl_tui.records import ShownPair

COMPACT_WIDTH = 120
"""Below this many columns the status line uses its short form, so it fits on one line."""


def staleness_text(shown: ShownPair | None) -> str:
    """How old the ranking of the pair on screen is.

    >>> staleness_text(None)
    ''
    """
    if shown is None:
        return ""
    if shown.scored_by is None:
        return "unscored"
    ago = shown.labels_since_scored
    ago_text = "" if ago is None else f", {ago} label{'' if ago == 1 else 's'} ago"
    by = f"v{shown.scored_by}" if shown.scored_by else "base"
    return f"scored by {by}{ago_text}"


def undone_text(status: Any, compact: bool = False) -> str:
    """Say when the current adapter was trained on labels that were undone since.

    >>> from types import SimpleNamespace as S
    >>> undone_text(S(adapter_version=3, undone_in_adapter=1, next_round_resets=True))
    'v3 trained on 1 undone label; retrains next round'
    >>> undone_text(S(adapter_version=3, undone_in_adapter=2, next_round_resets=False), compact=True)
    'v3: 2 undone'
    """
    n = getattr(status, "undone_in_adapter", 0)
    if not n or not status.adapter_version:
        return ""
    if compact:
        return f"v{status.adapter_version}: {n} undone"
    after = ("retrains next round" if status.next_round_resets
             else "their effect lingers (continue regime)")
    return f"v{status.adapter_version} trained on {n} undone label{'' if n == 1 else 's'}; {after}"


SHORT_WORDS = (("training step", "train"), ("generating", "gen"), ("scoring", "score"), ("reference", "ref"))
"""Shorter words for the worker's activity in the compact status line."""


def _short_activity(activity: str) -> str:
    for long, short in SHORT_WORDS:
        if activity.startswith(long):
            return short + activity[len(long):]
    return activity


def status_text(status: Any, activity: str, per_hour: float | None, shown: ShownPair | None,
                compact: bool = False) -> str:
    """One line of facts, most important first, separated by ' │ ' (shorter words when compact).

    `status` is the desk's DeskStatus (labels_total, labels_session, pool_size,
    adapter_version, labels_since_round, round_due_at); None before the first read.
    """
    parts: list[str] = []
    if status is not None:
        rate = "–" if per_hour is None else f"{per_hour:.0f}"
        adapter = f"v{status.adapter_version}" if status.adapter_version else "base"
        # Labels toward the next round: effective verdicts since the last round (no skips, no undone).
        since, need = status.labels_since_round, status.round_due_at
        toward = f"{since}/{need}" if since < need else "round due"
        total = f"{status.labels_total} label{'' if status.labels_total == 1 else 's'}"
        if compact:
            parts.append(f"{total} ({status.labels_session} now, {rate}/h)")
            parts.append(f"pool {status.pool_size}")
            parts.append(f"{adapter} {toward}" + (" eval" if getattr(status, "progress", "round") == "eval" else ""))
        else:
            parts.append(f"{total} / {status.labels_session} now / {rate}/h")
            parts.append(f"pool {status.pool_size}")
            if getattr(status, "progress", "round") == "eval":
                parts.append(f"adapter {adapter} (eval {since}/{need})")
            else:
                parts.append(f"adapter {adapter} (next round {toward})")
        undone = undone_text(status, compact)
        if undone:
            parts.append(undone)
    if activity:
        parts.append(_short_activity(activity) if compact else activity)
    stale = staleness_text(shown)
    if stale:
        parts.append(stale.replace("scored by ", "by ").replace(" labels ago", " ago").replace(" label ago", " ago")
                     if compact else stale)
    return (" · " if compact else " │ ").join(parts)


class StatusLine(Static):
    """The bottom status line; the app calls `refresh_status` with fresh facts."""

    def refresh_status(self, status: Any, activity: str, per_hour: float | None,
                       shown: ShownPair | None) -> None:
        """Redraw from the given facts (reads nothing itself)."""
        compact = self.app.size.width < COMPACT_WIDTH
        # Text, not markup: the activity may quote an error or a path with [brackets] in it.
        self.update(Text(status_text(status, activity, per_hour, shown, compact=compact)))
