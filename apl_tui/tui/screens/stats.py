"""The stats screen: labeling rate, biases, adapters with win-rates, training curves."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Sparkline, Static

SERIES = (("loss", "loss"), ("rewards/margins", "reward margin"), ("rewards/accuracies", "reward accuracy"))
"""Training metrics drawn as sparklines: (train_metrics column, label)."""


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
            yield Static("adapters", classes="stats-heading")
            yield Static(id="stats-adapters")
            for column, label in SERIES:
                yield Static(label, classes="stats-heading", id=f"title-{_css_id(column)}")
                yield Sparkline([], id=f"spark-{_css_id(column)}", summary_function=max)
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        """Read the numbers again."""
        from apl_tui.queries import metric_series, stats

        cur = self.store.cursor()
        s = stats(cur)
        self.query_one("#stats-summary", Static).update(summary_table(s))
        adapters = self.query_one("#stats-adapters", Static)
        adapters.update(adapters_table(s) if s["adapters"] else "no adapter trained yet")
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
