"""The stats screen: labeling rate, biases, whether labeling pays off, adapters, training curves.

Everything is read when the screen opens (and on r), never on a labeling key press.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Sparkline, Static

SERIES = (("loss", "loss"), ("rewards/margins", "reward margin"), ("rewards/accuracies", "reward accuracy"))
"""Training metrics drawn as sparklines: (train_metrics column, label)."""


BLOCKS = "▁▂▃▄▅▆▇█"
"""Eighth-blocks for text sparklines on a fixed 0–1 scale (Textual's Sparkline rescales to min–max)."""


def unit_spark(values: list[float], width: int = 60) -> str:
    """A one-line sparkline of values in [0, 1] on a fixed scale, newest `width` values.

    >>> unit_spark([0.0, 0.5, 1.0])
    '▁▅█'
    """
    vals = values[-width:]
    return "".join(BLOCKS[min(len(BLOCKS) - 1, max(0, round(v * (len(BLOCKS) - 1))))] for v in vals)


def evidence_table(ev: Any) -> Group:
    """Prequential accuracy, the labeler's consistency, the arms side by side, the curves."""
    from apl_tui.evidence import arms_rows, evidence_lines

    lines = Table(box=None, show_header=False, pad_edge=False)
    lines.add_column(style="bold", min_width=26)
    lines.add_column()
    for head, text in evidence_lines(ev):
        lines.add_row(head, text)
    arms = Table(box=None, pad_edge=False, header_style="bold")
    arms.add_column("", style="bold", min_width=26)
    arms.add_column("acquired")
    arms.add_column("random control")
    for row in arms_rows(ev):
        arms.add_row(*row)
    curves = Table(box=None, show_header=False, pad_edge=False)
    curves.add_column(style="bold", min_width=26)
    curves.add_column()
    for arm in ("acquired", "control"):
        pts = ev.curve.get(arm, [])
        curve = unit_spark([y for _, y in pts]) if pts else "–"
        curves.add_row(f"accuracy curve, {arm}", f"{curve}  (0–1, rolling 20, {len(pts)} labels)")
    return Group(lines, arms, Text(ev.sentence), curves)


def win_rate_lines(s: dict[str, Any]) -> str:
    """One fixed-scale sparkline of win-rate per adapter for each judge (oracles and human)."""
    by: dict[str, list[float]] = {}
    for e in s["evals"]:
        if e["win_rate"] is not None:
            by.setdefault(e["oracle"], []).append(e["win_rate"])
    return "\n".join(f"{judge:<10} {unit_spark(v)}  last {v[-1]:.2f} (0–1 per adapter)" for judge, v in by.items())


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def summary_table(s: dict[str, Any]) -> Table:
    """The headline numbers of `queries.stats` as a two-column table."""
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items())) or "none"
    rate = s.get("labels_per_hour")
    t.add_row("labels", f"{s['labels']} ({outcomes})")
    t.add_row("labels per hour", "–" if rate is None else f"{rate:.0f}")
    t.add_row("pool", f"{s['pool']} unlabeled of {s['candidates']} candidates")
    t.add_row("left-choice rate", f"{_pct(s['left_choice_rate'])} of {s['decided']} decided (50% is unbiased)")
    t.add_row("tie / skip rate", f"{_pct(s['tie_rate'])} / {_pct(s['skip_rate'])}")
    t.add_row("longer won", _pct(s["longer_won_rate"]))
    control = s.get("control_labels", {})
    t.add_row("control arm", f"{control.get(True, 0)} random control labels, {control.get(False, 0)} acquired")
    return t


def adapters_table(s: dict[str, Any]) -> Table:
    """One row per adapter version with its final loss, accuracy and win-rates."""
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("version", "labels", "regime", "loss", "accuracy", "win-rate"):
        t.add_column(col)
    wins: dict[int, list[str]] = {}
    for e in s["evals"]:
        wins.setdefault(e["adapter_version"], []).append(
            f"{_pct(e['win_rate'])}±{_pct(e['stderr'])} ({e['oracle']}, n={e['n']})")
    for a in s["adapters"]:
        loss = "–" if a["loss"] is None else f"{a['loss']:.3f}"
        name = f"v{a['version']}" + (" retired" if a["retired"] else "")
        # Text, not markup: oracle names are what the user typed (python:module:function).
        t.add_row(name, str(a["labels_used"]), Text(str(a["regime"])), loss, _pct(a["accuracy"]),
                  Text("; ".join(wins.get(a["version"], [])) or "–"))
    return t


def quality_table(s: dict[str, Any]) -> Table:
    """KL to the reference, prompt relevance and quality guards per evaluation (as `apl stats`)."""
    from apl_tui.eval_report import QUALITY_COLUMNS, quality_rows

    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in QUALITY_COLUMNS:
        t.add_column(col)
    for row in quality_rows(s["evals"]):
        t.add_row(*(Text(c) for c in row))
    return t


class StatsScreen(Screen[None]):
    """Read on open (and on r) from the live store; escape or g goes back."""

    BINDINGS = [
        Binding("escape,g,q", "close", "back to labeling"),
        Binding("r", "reload", "refresh"),
    ]

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store
        """The open Store; read on the UI thread's cursor."""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="stats-box"):
            yield Static(id="stats-summary")
            yield Static("is my labeling paying off? (95% intervals)", classes="stats-heading")
            yield Static(id="stats-evidence")
            yield Static("adapters", classes="stats-heading")
            yield Static(id="stats-adapters")
            yield Static(id="stats-winrates")
            yield Static("quality of evaluated completions (KL, PMI, guards)", classes="stats-heading")
            yield Static(id="stats-quality")
            for column, label in SERIES:
                yield Static(label, classes="stats-heading", id=f"title-{_css_id(column)}")
                yield Sparkline([], id=f"spark-{_css_id(column)}", summary_function=max)
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        """Read the numbers again."""
        from apl_tui.evidence import evidence
        from apl_tui.queries import metric_series, stats

        cur = self.store.cursor()
        s = stats(cur)
        self.query_one("#stats-summary", Static).update(summary_table(s))
        self.query_one("#stats-evidence", Static).update(evidence_table(evidence(cur)))
        self.query_one("#stats-winrates", Static).update(win_rate_lines(s))
        adapters = self.query_one("#stats-adapters", Static)
        adapters.update(adapters_table(s) if s["adapters"] else "no adapter trained yet")
        self.query_one("#stats-quality", Static).update(
            quality_table(s) if s["evals"] else "no evaluations yet (apl eval, apl label --eval)")
        for column, label in SERIES:
            series = metric_series(cur, column)
            last = f"last {series[-1]:.3f}, {len(series)} steps" if series else "no training steps yet"
            self.query_one(f"#title-{_css_id(column)}", Static).update(f"{label}: {last}")
            self.query_one(f"#spark-{_css_id(column)}", Sparkline).data = series

    def action_close(self) -> None:
        """Back to labeling."""
        self.dismiss(None)


def _css_id(name: str) -> str:
    return name.replace("/", "-")
