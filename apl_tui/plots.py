"""`apl stats --plot`: the evidence as pictures (matplotlib, from the `plot` extra).

Three panels: prequential accuracy over labels (acquired vs control), win-rate vs the reference
per adapter with error bars (one series per judge, human included), and the final training loss
and reward margin of each round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apl_tui.atomic import atomic_file
from apl_tui.errors import AplError
from apl_tui.evidence import Evidence


@dataclass(frozen=True)
class PlotData:
    """What the three panels draw, read from the store beforehand (no SQL while drawing)."""

    curve: dict[str, list[tuple[int, float]]]
    """Rolling prequential accuracy per arm: (label ordinal, accuracy)."""
    win_rates: dict[str, list[tuple[int, float, float]]]
    """Per judge: (adapter version, win-rate, standard error)."""
    rounds: list[tuple[int, float | None, float | None]]
    """Per adapter: (version, final loss, final reward margin)."""


def gather(con: Any, ev: Evidence) -> PlotData:
    """Read what the plot needs (the newest evaluation per adapter, judge and settings)."""
    wins: dict[str, list[tuple[int, float, float]]] = {}
    for v, oracle, rate, se in con.execute(
            "SELECT adapter_version, oracle, win_rate, stderr FROM evals WHERE win_rate IS NOT NULL "
            "QUALIFY row_number() OVER (PARTITION BY adapter_version, oracle ORDER BY created_at DESC) = 1 "
            "ORDER BY oracle, adapter_version").fetchall():
        wins.setdefault(oracle, []).append((int(v), float(rate), float(se or 0.0)))
    rounds = [(int(v), loss, margin) for v, loss, margin in con.execute(
        "SELECT version, (metrics->>'loss')::DOUBLE, (metrics->>'rewards/margins')::DOUBLE FROM adapters "
        "ORDER BY version").fetchall()]
    return PlotData(curve=ev.curve, win_rates=wins, rounds=rounds)


def write_plot(data: PlotData, path: Path) -> None:
    """Draw the three panels into a PNG, written whole (a temporary file renamed into place)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as e:
        raise AplError("matplotlib is not installed", hint="pip install 'apl-tui[plot]'") from e
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    for arm, style in (("acquired", "-"), ("control", "--")):
        pts = data.curve.get(arm, [])
        if pts:
            ax1.plot([x for x, _ in pts], [y for _, y in pts], style, marker=".", label=f"{arm} (n={len(pts)})")
    ax1.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax1.set(title="prequential accuracy (rolling 20)", xlabel="label", ylabel="model predicted the choice",
            ylim=(-0.02, 1.02))
    _legend_or_note(ax1, "no predictions yet (warm-up pairs predict nothing)")
    for k, (oracle, pts) in enumerate(sorted(data.win_rates.items())):
        xs = [v + 0.08 * k for v, _, _ in pts]
        ax2.errorbar(xs, [r for _, r, _ in pts], yerr=[1.96 * se for _, _, se in pts], fmt="o-", capsize=3,
                     label=oracle)
    ax2.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax2.set(title="win-rate vs reference (95% bars)", xlabel="adapter version", ylabel="win-rate", ylim=(-0.02, 1.02))
    _legend_or_note(ax2, "no evaluations yet (apl eval, apl label --eval)")
    if data.rounds:
        vs = [v for v, _, _ in data.rounds]
        ax3.plot(vs, [float("nan") if x is None else x for _, x, _ in data.rounds], "o-", label="final loss")
        ax3.plot(vs, [float("nan") if x is None else x for _, _, x in data.rounds], "s--", label="reward margin")
    ax3.set(title="training per round", xlabel="adapter version")
    _legend_or_note(ax3, "no rounds yet")
    versions = sorted({v for pts in data.win_rates.values() for v, _, _ in pts} | {v for v, _, _ in data.rounds})
    for ax in (ax2, ax3):  # adapter versions are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if versions:
            ax.set_xlim(versions[0] - 0.5, versions[-1] + 0.5)
    fig.tight_layout()
    try:
        with atomic_file(Path(path)) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    except OSError as e:
        raise AplError(f"cannot write {path}: {e.strerror}", hint="check the folder exists and is writable") from e
    finally:
        plt.close(fig)


def _legend_or_note(ax: Any, note: str) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="grey")
