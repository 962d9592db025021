"""Outputs of a shared-pool experiment, re-rendered from its finished points (`apl experiment --report DIR`).

- results.csv: one row per arm × seed × label count (every metric, timings);
- per_prompt.parquet: one row per evaluated test prompt (completions, judge and vader scores, PMI, KL);
- curves.png: soft win-rate by the judge vs labels (mean ± s.e. over seeds);
- paired.png: each arm's paired difference to random at the last label count with its 95 % interval,
  the A/A interval drawn as the noise band;
- reward_kl.png: win-rate vs KL to the reference, one dot per adapter;
- report.md: the tables below, for the README.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
from pathlib import Path
from typing import Any

from apl_tui import paired_stats as ps

logger = logging.getLogger(__name__)

BASELINE = "random"
COLUMNS = ("method", "seed", "labels", "win_rate", "win_se", "wins", "losses", "ties", "vader_win_rate", "kl", "kl_se",
           "pmi", "pmi_ref", "judge_mean", "vader_mean", "tokens_mean", "g_oov", "g_repetition", "g_distinct2",
           "g_repeated_3grams", "g_film", "g_on_topic", "g_top_word", "g_top_word_share", "ref_g_oov",
           "ref_g_distinct2", "ref_g_film", "ref_g_on_topic", "pairs", "ties_in_labels", "n", "seconds", "select_s",
           "train_s", "eval_s")


def load_points(out: Path) -> list[dict[str, Any]]:
    """Every finished point under `out/shared`, the shared warm-up repeated under each arm of its seed."""
    from apl_tui.shared_pool import WARMUP

    rows: list[dict[str, Any]] = []
    for seed_dir in sorted((out / "shared").glob("s*")):
        points = [json.loads(f.read_text()) for f in sorted((seed_dir / "points").glob("*.json"))]
        warm = [p for p in points if p["method"] == WARMUP]
        arms = sorted({p["method"] for p in points} - {WARMUP})
        rows += [p for p in points if p["method"] != WARMUP]
        rows += [w | {"method": arm} for w in warm for arm in arms]
    return sorted(rows, key=lambda r: (r["method"], r["seed"], r["labels"]))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """results.csv: the same bytes for the same points, whichever process computed them."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})


def write_parquet(out: Path, path: Path) -> bool:
    """per_prompt.parquet from every point's per-prompt rows; False when pandas/pyarrow are missing."""
    try:
        import pandas as pd
    except ImportError:
        return False
    frames = []
    for f in sorted((out / "shared").glob("s*/per_prompt/*.json")):
        frames.append(pd.DataFrame(json.loads(f.read_text())))
    if not frames:
        return False
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
    return True


def by_seed(rows: list[dict[str, Any]], metric: str = "win_rate") -> dict[str, dict[int, dict[int, float]]]:
    """method → seed → labels → metric value."""
    out: dict[str, dict[int, dict[int, float]]] = {}
    for r in rows:
        if r.get(metric) is not None:
            out.setdefault(r["method"], {}).setdefault(r["seed"], {})[r["labels"]] = float(r[metric])
    return out


def paired_table(rows: list[dict[str, Any]], metric: str = "win_rate") -> list[dict[str, Any]]:
    """Per arm (not random): paired difference to random at the last label count and in AUC, Holm-adjusted."""
    data = by_seed(rows, metric)
    base = data.get(BASELINE, {})
    results: list[dict[str, Any]] = []
    for arm, seeds in sorted(data.items()):
        if arm == BASELINE:
            continue
        common = sorted(s for s in seeds if s in base and seeds[s].keys() == base[s].keys())
        if len(common) < 2:
            continue
        last = max(seeds[common[0]])
        final = ps.paired_interval([seeds[s][last] - base[s][last] for s in common])
        area = ps.paired_interval([ps.auc(list(seeds[s].items())) - ps.auc(list(base[s].items())) for s in common])
        reach = ps.labels_to_reach_interval({s: seeds[s] for s in common}, {s: base[s] for s in common})
        results.append({"method": arm, "labels": last, "seeds": len(common), "final": final, "auc": area,
                        "reach": reach})
    adjusted = ps.holm({r["method"]: r["final"].p for r in results if r["method"] != "aa"})
    for r in results:
        r["holm_p"] = adjusted.get(r["method"])
    return results


def prompt_paired(out: Path, labels: int) -> dict[str, tuple[float, float, int]]:
    """Per arm: mean and s.e. of (arm − random) soft outcomes over every (seed, test prompt) pair.

    Pairs prompts within a seed, so it measures evaluation noise only, not the training and
    selection noise between seeds (the A/A row shows that part); read it next to the per-seed table.
    """
    from apl_tui.evaluation import mean_se

    per: dict[str, dict[tuple[int, int], float]] = {}
    for f in sorted((out / "shared").glob(f"s*/per_prompt/*-{labels}.json")):
        for r in json.loads(f.read_text()):
            if r["outcome"] is not None:
                per.setdefault(r["method"], {})[(r["seed"], r["prompt_id"])] = float(r["outcome"])
    base = per.get(BASELINE, {})
    result = {}
    for arm, outcomes in sorted(per.items()):
        if arm == BASELINE:
            continue
        diffs = [v - base[k] for k, v in outcomes.items() if k in base]
        mean, se = mean_se(diffs)
        if mean is not None:
            result[arm] = (mean, se or 0.0, len(diffs))
    return result


def curves(rows: list[dict[str, Any]], metric: str = "win_rate") -> dict[str, list[tuple[int, float, float, int]]]:
    """method → [(labels, mean over seeds, s.e. over seeds, seeds)]."""
    out: dict[str, list[tuple[int, float, float, int]]] = {}
    for arm, seeds in sorted(by_seed(rows, metric).items()):
        for labels in sorted({b for s in seeds.values() for b in s}):
            vals = [s[labels] for s in seeds.values() if labels in s]
            se = statistics.stdev(vals) / len(vals) ** 0.5 if len(vals) > 1 else 0.0
            out.setdefault(arm, []).append((labels, statistics.fmean(vals), se, len(vals)))
    return out


def _fmt_reach(reach: tuple[float | None, float | None, float | None]) -> str:
    point, lo, hi = reach
    def show(v: float | None) -> str:
        return "not reached" if v is None else f"{v:.0f}"

    return f"{show(point)} [{show(lo)}, {show(hi)}]"


def markdown(rows: list[dict[str, Any]], out: Path | None = None) -> str:
    """The report's tables: curves, paired differences, KL and guards at the last label count."""
    lines = ["| arm | " + " | ".join(f"{b} labels" for b, *_ in next(iter(curves(rows).values()), [])) + " |"]
    c = curves(rows)
    lines.append("|---" * (1 + len(next(iter(c.values()), []))) + "|")
    for arm, pts in c.items():
        lines.append(f"| {arm} ({pts[0][3]} seeds) | " + " | ".join(f"{m:.3f} ± {s:.3f}" for _, m, s, _ in pts) + " |")
    lines += ["", "| arm − random | at last point [95 % CI] | Holm p | AUC diff [95 % CI] | labels to reach random's final |",
              "|---|---|---|---|---|"]
    for r in paired_table(rows):
        f, a = r["final"], r["auc"]
        holm_p = "–" if r["holm_p"] is None else f"{r['holm_p']:.3f}"
        lines.append(f"| {r['method']} ({r['seeds']} seeds, {r['labels']} labels) | {f.mean:+.3f} [{f.low:+.3f}, "
                     f"{f.high:+.3f}] | {holm_p} | {a.mean:+.3f} [{a.low:+.3f}, {a.high:+.3f}] | {_fmt_reach(r['reach'])} |")
    last = max((r["labels"] for r in rows), default=0)
    if out is not None:
        lines += ["", f"Per test prompt at {last} labels, pooled over seeds (evaluation noise only):", "",
                  "| arm − random | mean ± s.e. | prompt × seed pairs |", "|---|---|---|"]
        for arm, (mean, se, n) in prompt_paired(out, last).items():
            lines.append(f"| {arm} | {mean:+.3f} ± {se:.3f} | {n} |")
    keys = ("win_rate", "vader_win_rate", "kl", "pmi", "g_oov", "g_distinct2", "g_repetition", "g_film", "g_on_topic",
            "g_top_word_share")
    reference = (f"At {last} labels (means over seeds; reference: PMI {_mean(rows, 'pmi_ref'):.2f}, OOV "
                 f"{_mean(rows, 'ref_g_oov'):.3f}, distinct-2 {_mean(rows, 'ref_g_distinct2'):.3f}, film "
                 f"{_mean(rows, 'ref_g_film'):.3f}, on topic {_mean(rows, 'ref_g_on_topic'):.3f}):")
    lines += ["", reference, "",
              "| arm | judge win | vader win | KL | PMI | OOV | distinct-2 | repetition | film | on topic | top word share |",
              "|---" * 11 + "|"]
    for arm in sorted({r["method"] for r in rows}):
        sel = [r for r in rows if r["method"] == arm and r["labels"] == last]
        if sel:
            lines.append(f"| {arm} | " + " | ".join(f"{_mean(sel, k):.3f}" for k in keys) + " |")
    if out is not None:
        lines += samples(out, last)
    return "\n".join(lines) + "\n"


def _cell(text: Any) -> str:
    """One line of text for a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def samples(out: Path, labels: int, prompts: int = 3) -> list[str]:
    """Markdown: the first test prompts' completions per arm at `labels`, lowest seed, next to the
    reference's — the first prompts, not picked, so the table cannot be cherry-picked."""
    seeds = sorted(int(d.name[1:]) for d in (out / "shared").glob("s*") if d.name[1:].isdigit())
    for seed in seeds:
        files = sorted((out / "shared" / f"s{seed}" / "per_prompt").glob(f"*-{labels}.json"))
        if not files:
            continue
        per = {f.name.rsplit("-", 1)[0]: json.loads(f.read_text())[:prompts] for f in files}
        first = next(iter(per.values()))
        lines = ["", f"Completions at {labels} labels, seed {seed}, the first {len(first)} test prompts (not picked):", "",
                 "| | " + " | ".join(f'"{_cell(r["prompt"])}"' for r in first) + " |", "|---" * (1 + len(first)) + "|",
                 "| reference | " + " | ".join(_cell(r["reference"]) for r in first) + " |"]
        lines += [f"| {arm} | " + " | ".join(_cell(r["completion"]) for r in rows) + " |" for arm, rows in sorted(per.items())]
        return lines
    return []


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return statistics.fmean(vals) if vals else float("nan")


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(fig: Any, path: Path) -> Path:
    """Lay out, write and close one figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plots(rows: list[dict[str, Any]], folder: Path, title: str) -> list[Path]:
    """curves.png, paired.png and reward_kl.png; [] when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return []
    made = []
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for arm, pts in curves(rows).items():
        xs, ys, se = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
        ax.plot(xs, ys, marker="o", label=f"{arm} ({pts[0][3]} seeds)")
        ax.fill_between(xs, [y - s for y, s in zip(ys, se)], [y + s for y, s in zip(ys, se)], alpha=0.15)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="labels", ylabel="soft win-rate vs reference (judge)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    made.append(save(fig, folder / "curves.png"))
    table = paired_table(rows)
    if table:
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
        aa = next((r["final"] for r in table if r["method"] == "aa"), None)
        if aa is not None:
            ax.axhspan(aa.low, aa.high, color="grey", alpha=0.2, label="A/A 95 % interval (noise)")
        names = [r["method"] for r in table]
        for i, r in enumerate(table):
            f = r["final"]
            ax.errorbar(i, f.mean, yerr=[[f.mean - f.low], [f.high - f.mean]], fmt="o", capsize=4)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_ylabel(f"win-rate − random at {table[0]['labels']} labels")
        ax.set_title("paired difference to random over seeds, 95 % t interval", fontsize=8)
        ax.legend(fontsize=7)
        made.append(save(fig, folder / "paired.png"))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for arm in sorted({r["method"] for r in rows}):
        sel = [r for r in rows if r["method"] == arm and r.get("kl") is not None and r.get("win_rate") is not None]
        ax.scatter([r["kl"] for r in sel], [r["win_rate"] for r in sel], s=12, label=arm, alpha=0.7)
    ax.set(xlabel="KL(π_θ ‖ π_ref) per completion (nats)", ylabel="soft win-rate vs reference (judge)")
    ax.set_title("reward–KL: one dot per adapter", fontsize=8)
    ax.legend(fontsize=7)
    made.append(save(fig, folder / "reward_kl.png"))
    return made


def render(out: Path, title: str = "") -> tuple[list[dict[str, Any]], str]:
    """Write every output from the finished points in `out`; returns (rows, markdown)."""
    from apl_tui.errors import AplError

    rows = load_points(out)
    if not rows:
        raise AplError(f"no finished points in {out}", hint="run the experiment first (apl experiment --config FILE)")
    write_csv(rows, out / "results.csv")
    write_parquet(out, out / "per_prompt.parquet")
    plots(rows, out, title or out.name)
    text = markdown(rows, out)
    (out / "report.md").write_text(text)
    return rows, text
