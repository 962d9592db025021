"""Comparing finished shared-pool runs that differ in their settings (a sweep of training values).

`apl experiment --report DIR`, where DIR holds one run folder per setting (each with its
settings.json, as `apl experiment -o DIR/NAME --set ...` writes): one table row per setting and
label count (judge win-rate and KL with their standard errors over seeds, PMI and guards), and
sweep.png, win-rate against KL (the reward–KL frontier the DPO paper compares methods on).
Settings are named by the values that differ between the folders, nothing else.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from apl_tui.errors import AplError


def run_folders(folder: Path) -> list[Path]:
    """The finished run folders directly under `folder` (those with settings.json and points)."""
    return sorted(d for d in folder.iterdir()
                  if d.is_dir() and (d / "settings.json").exists() and any((d / "shared").glob("s*/points/*.json")))


def varying(settings: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The "section.key" names whose value is not the same in every run.

    >>> varying({"a": {"train": {"beta": 0.1, "epochs": 4}}, "b": {"train": {"beta": 0.3, "epochs": 4}}})
    ['train.beta']
    """
    keys = sorted({f"{s}.{k}" for one in settings.values() for s, table in one.items() for k in table})
    def value(one: dict[str, dict[str, Any]], name: str) -> Any:
        section, key = name.split(".", 1)
        return json.dumps(one.get(section, {}).get(key), sort_keys=True)
    return [k for k in keys if len({value(one, k) for one in settings.values()}) > 1]


def summarise(folder: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(varying setting names, one row per run × label count × arm) over every run under `folder`."""
    from apl_tui.evaluation import mean_se
    from apl_tui.experiment_report import load_points

    runs = run_folders(folder)
    if not runs:
        raise AplError(f"no finished runs under {folder}", hint="each run is a folder made by apl experiment -o DIR/NAME")
    settings = {d.name: json.loads((d / "settings.json").read_text()) for d in runs}
    names = varying(settings)
    rows = []
    for d in runs:
        points = load_points(d)
        for arm in sorted({p["method"] for p in points}):
            for labels in sorted({p["labels"] for p in points if p["method"] == arm}):
                sel = [p for p in points if p["method"] == arm and p["labels"] == labels]
                win, win_se = mean_se([p["win_rate"] for p in sel])
                kl, kl_se = mean_se([p["kl"] for p in sel])
                rows.append({"run": d.name, "setting": {n: settings[d.name][n.split(".")[0]][n.split(".", 1)[1]]
                                                        for n in names},
                             "arm": arm, "labels": labels, "seeds": len(sel), "win_rate": win, "win_se": win_se,
                             "kl": kl, "kl_se": kl_se,
                             **{k: statistics.fmean(p[k] for p in sel) for k in
                                ("vader_win_rate", "pmi", "g_oov", "g_distinct2", "g_on_topic", "g_top_word_share")}})
    return names, rows


def markdown(names: list[str], rows: list[dict[str, Any]]) -> str:
    """The sweep table, one row per run × arm × label count."""
    head = "| " + " | ".join(names or ["run"]) + " | arm | labels | seeds | judge win ± s.e. | KL ± s.e. | vader win | PMI " \
           "| OOV | distinct-2 | on topic | top word share |"
    lines = [head, "|---" * (len(names or ["run"]) + 11) + "|"]
    for r in rows:
        first = [str(r["setting"][n]) for n in names] if names else [r["run"]]
        lines.append(f"| {' | '.join(first)} | {r['arm']} | {r['labels']} | {r['seeds']} | {r['win_rate']:.3f} ± "
                     f"{r['win_se']:.3f} | {r['kl']:.1f} ± {r['kl_se']:.1f} | {r['vader_win_rate']:.3f} | {r['pmi']:.2f} | "
                     f"{r['g_oov']:.3f} | {r['g_distinct2']:.3f} | {r['g_on_topic']:.3f} | {r['g_top_word_share']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(names: list[str], rows: list[dict[str, Any]], path: Path) -> bool:
    """sweep.png: judge win-rate against KL, one marker per run and label count; False without matplotlib."""
    from apl_tui.experiment_report import pyplot, save

    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for run in dict.fromkeys(r["run"] for r in rows):
        sel = [r for r in rows if r["run"] == run]
        label = ", ".join(f"{n.split('.', 1)[1]} {sel[0]['setting'][n]}" for n in names) or run
        ax.errorbar([r["kl"] for r in sel], [r["win_rate"] for r in sel], xerr=[r["kl_se"] for r in sel],
                    yerr=[r["win_se"] for r in sel], marker="o", capsize=2, label=label)
        for r in sel:
            ax.annotate(str(r["labels"]), (r["kl"], r["win_rate"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="KL to the reference (nats per completion)", ylabel="soft win-rate vs reference (judge)")
    ax.set_title("training settings: reward–KL (numbers: labels; bars: s.e. over seeds)", fontsize=8)
    ax.legend(fontsize=6)
    save(fig, path)
    return True


def render(folder: Path) -> str:
    """Write sweep.md and sweep.png under `folder`; returns the markdown."""
    names, rows = summarise(folder)
    text = markdown(names, rows)
    (folder / "sweep.md").write_text(text)
    plot(names, rows, folder / "sweep.png")
    return text
