"""`apl experiment`: acquisition functions × seeds × a label schedule, judged by one oracle.

Every run gets a fresh store under `<output>/runs/<method>-s<seed>/` with the same prompts, the
same oracle and the same training settings; only the acquisition function and the seed differ.
All runs share one loaded model and one cache of the reference's test-set completions (the
reference never changes, so that is sound). Finished points are recorded per run, so rerunning the
command skips them.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import threading
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apl_tui.atomic import atomic_file
from apl_tui.config import ACQUISITIONS, AplConfig
from apl_tui.errors import ConfigError
from apl_tui.events import ProgressSink, ignore

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("method", "seed", "labels", "adapter_version", "win_rate", "stderr", "n", "wins", "losses", "ties",
               "seconds", "acquisition_s", "train_s", "eval_s", "kl", "kl_se", "pmi", "pmi_ref", "g_oov",
               "g_distinct2", "g_repetition", "g_on_topic", "g_top_word", "g_top_word_share")
# On-policy points carry `apl eval`'s measures under the shared-pool CSV's names (g_* = the guards).
_POINT_MEASURES = {"kl": "kl", "kl_se": "kl_se", "pmi": "pmi", "pmi_ref": "pmi_ref", "g_oov": "oov",
                   "g_distinct2": "distinct2", "g_repetition": "repetition", "g_on_topic": "on_topic",
                   "g_top_word": "top_word", "g_top_word_share": "top_word_share"}


@dataclass(frozen=True)
class ExperimentConfig:
    """The [experiment] table of an experiment file; the other tables are a normal config.toml."""

    methods: tuple[str, ...] = ("random", "hybrid")
    seeds: tuple[int, ...] = (0, 1, 2)
    schedule: tuple[int, ...] = (16, 32, 48, 64)
    oracle: str = "imdb-task"
    train_file: str = "imdb/train.jsonl"
    test_file: str = "imdb/test.jsonl"
    train_prompts: int = 1000
    test_prompts: int = 100
    output: str = "experiments/cpu"
    # "on-policy": each arm generates its own pairs (the app's loop); "shared-pool": per seed one
    # pool of reference completions every arm selects from (apl_tui/shared_pool.py).
    mode: str = "on-policy"
    pool_prompts: int = 96  # shared-pool: train prompts in each seed's pool
    pool_completions: int = 2  # shared-pool: reference completions per pool prompt
    guard_prompts: int = 100  # test prompts for the KL and PMI estimates (both modes)
    eval_batch_size: int = 50  # shared-pool: prompts per generation batch in evaluation
    base: AplConfig = field(default_factory=AplConfig)
    folder: Path = Path(".")

    def __post_init__(self) -> None:
        from apl_tui.shared_pool import POOL_ARMS

        if self.mode not in ("on-policy", "shared-pool"):
            raise ConfigError(f"unknown experiment.mode {self.mode!r}", hint="on-policy or shared-pool")
        allowed = POOL_ARMS if self.mode == "shared-pool" else ACQUISITIONS
        bad = [m for m in self.methods if m not in allowed]
        if bad:
            hint = f"use {', '.join(allowed)}"
            if bad[0] in POOL_ARMS:
                hint = f"{bad[0]} needs experiment.mode = \"shared-pool\""
            raise ConfigError(f"unknown acquisition {bad[0]!r} in experiment.methods", hint=hint)
        if self.pool_completions < 2 or self.pool_prompts < 1 or self.guard_prompts < 1 or self.eval_batch_size < 1:
            raise ConfigError("experiment.pool_completions must be ≥ 2 and pool_prompts, guard_prompts, "
                              "eval_batch_size ≥ 1", hint="e.g. pool_prompts = 96, pool_completions = 2")
        if not self.schedule or list(self.schedule) != sorted(set(self.schedule)) or self.schedule[0] < 1:
            raise ConfigError("experiment.schedule must be increasing label counts", hint="e.g. [16, 32, 48, 64]")

    @classmethod
    def load(cls, path: Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
        """Read an experiment file; `overrides` ("train.learning_rate=1e-3") replace its values."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"{path}: no such file", hint="see examples/experiment-cpu.toml") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}", hint="fix the TOML syntax") from e
        for item in overrides:
            section, key, value = parse_override(item)
            table = data.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [{section}] must be a table", hint="fix the file")
            table[key] = value
        exp = data.pop("experiment", {})
        known = {f for f in cls.__dataclass_fields__ if f not in ("base", "folder")}
        unknown = sorted(set(exp) - known)
        if unknown:
            raise ConfigError(f"unknown setting experiment.{unknown[0]}", hint=f"known: {', '.join(sorted(known))}")
        exp = {k: tuple(v) if isinstance(v, list) else v for k, v in exp.items()}
        return cls(**exp, base=AplConfig.from_dict(data), folder=path.parent)

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.folder / p


def parse_override(item: str) -> tuple[str, str, Any]:
    """"section.key=value" → (section, key, value); the value is read as TOML, else kept as text.

    >>> parse_override("train.learning_rate=1e-3")
    ('train', 'learning_rate', 0.001)
    >>> parse_override("experiment.seeds=[0, 1]")
    ('experiment', 'seeds', [0, 1])
    >>> parse_override("model.spec=smollm2-135m")
    ('model', 'spec', 'smollm2-135m')
    """
    name, sep, raw = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key or "." in key:
        raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE", hint="e.g. --set train.learning_rate=1e-3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as a model name
    return section, key, value


def _read_points(run_dir: Path) -> list[dict[str, Any]]:
    f = run_dir / "points.json"
    return json.loads(f.read_text()) if f.exists() else []


def _write_json(path: Path, value: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1))


def run_experiment(exp: ExperimentConfig, *, output: Path | None = None, sink: ProgressSink = ignore,
                   cancel: threading.Event | None = None, log: Any = print) -> list[dict[str, Any]]:
    """Run (or resume) every method × seed to every schedule point; returns all CSV rows."""
    from apl_tui.batch import evaluate, run_loop
    from apl_tui.cache import model_cache_dir
    from apl_tui.engine import Engine
    from apl_tui.importer import read_prompts
    from apl_tui.oracles import build_oracle
    from apl_tui.policy import Policy
    from apl_tui.store import Store

    out = Path(output) if output else exp.path(exp.output)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    train = read_prompts(exp.path(exp.train_file))[: exp.train_prompts]
    test = read_prompts(exp.path(exp.test_file))[: exp.test_prompts]
    cache_dir = model_cache_dir()  # one per user ($APL_CACHE_DIR overrides)
    ref_path = out / "reference_completions.json"
    ref_cache: dict[str, str] = json.loads(ref_path.read_text()) if ref_path.exists() else {}
    policy = None
    for method in exp.methods:
        for seed in exp.seeds:
            run_dir = out / "runs" / f"{method}-s{seed}"
            points = _read_points(run_dir)
            todo = [b for b in exp.schedule if b not in {p["labels"] for p in points}]
            if not todo:
                continue
            cfg = exp.base.replace("acquisition", name=method).replace("loop", seed=seed)
            cfg = cfg.replace("train", seed=seed)
            store = Store.create(run_dir, cfg)
            if not store.prompt_counts():
                store.add_prompts(train, split="train", source=exp.train_file)
                store.add_prompts(test, split="test", source=exp.test_file)
            if policy is None:
                policy = Policy.load(cfg.model, cache_dir, seed=0, sink=sink)
            engine = Engine(store, cfg, policy=policy, cache_dir=cache_dir)
            engine.learner.sync_adapter()
            oracle = build_oracle(exp.oracle, seed=seed)
            spent = points[-1] if points else {"seconds": 0.0, "acquisition_s": 0.0, "train_s": 0.0, "eval_s": 0.0}
            for budget in todo:
                t0 = time.perf_counter()
                before = dict(engine.learner.timings)
                run_loop(engine, oracle, budget=budget, sink=sink, cancel=cancel)
                t_eval = time.perf_counter()
                if store.latest_adapter() is None:
                    # Every label so far was a tie or skip: nothing to learn, the policy is the reference.
                    row = {"adapter_version": 0, "win_rate": None, "stderr": None, "n": 0, "wins": 0,
                           "losses": 0, "ties": 0}
                else:
                    row = evaluate(engine, oracle, prompts=exp.test_prompts, guard_prompts=exp.guard_prompts,
                                   sink=sink, cancel=cancel, seed=0, ref_cache=ref_cache)
                _write_json(ref_path, ref_cache)
                now = time.perf_counter()
                timings = engine.learner.timings
                acq_s = timings["refill"] + timings["score"] - before["refill"] - before["score"]
                point = {"method": method, "seed": seed, "labels": budget,
                         "adapter_version": row["adapter_version"], "win_rate": row["win_rate"],
                         "stderr": row["stderr"], "n": row["n"], "wins": row["wins"], "losses": row["losses"],
                         "ties": row["ties"],
                         "seconds": round(spent["seconds"] + now - t0, 1),
                         "acquisition_s": round(spent["acquisition_s"] + acq_s, 1),
                         "train_s": round(spent["train_s"] + timings["train"] - before["train"], 1),
                         "eval_s": round(spent["eval_s"] + now - t_eval, 1),
                         **{k: row.get(col) for k, col in _POINT_MEASURES.items()}}
                points.append(point)
                spent = point
                _write_json(run_dir / "points.json", points)
                rate = "–" if row["win_rate"] is None else f"{row['win_rate']:.3f} ± {row['stderr']:.3f}"
                log(f"{method} seed {seed}: {budget} labels → win-rate {rate} ({point['seconds']:.0f} s so far)")
            store.close()
    rows = [p for d in sorted((out / "runs").iterdir()) if d.is_dir() for p in _read_points(d)]
    rows = [r for r in rows if r["method"] in exp.methods and r["seed"] in exp.seeds and r["labels"] in exp.schedule]
    write_csv(rows, out / "results.csv")
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r["method"], r["seed"], r["labels"])):
            w.writerow({k: r.get(k) for k in CSV_COLUMNS})


def summarise(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float, int]]]:
    """Per method: (labels, mean win-rate over seeds, standard error over seeds, seeds)."""
    out: dict[str, list[tuple[int, float, float, int]]] = {}
    for method in sorted({r["method"] for r in rows}):
        for labels in sorted({r["labels"] for r in rows if r["method"] == method}):
            vals = [r["win_rate"] for r in rows if r["method"] == method and r["labels"] == labels
                    and r["win_rate"] is not None]
            if not vals:
                continue
            se = statistics.stdev(vals) / len(vals) ** 0.5 if len(vals) > 1 else 0.0
            out.setdefault(method, []).append((labels, statistics.fmean(vals), se, len(vals)))
    return out


def labels_to_match(summary: dict[str, list[tuple[int, float, float, int]]],
                    baseline: str = "random") -> dict[str, float | None]:
    """Labels each method needed to reach the baseline's final mean win-rate (interpolated).

    >>> labels_to_match({"random": [(10, .5, 0, 3), (20, .75, 0, 3)], "x": [(10, .5, 0, 3), (20, 1.0, 0, 3)]})
    {'random': 20.0, 'x': 15.0}
    """
    if baseline not in summary:
        return {}
    target = summary[baseline][-1][1]
    result: dict[str, float | None] = {}
    for method, points in summary.items():
        result[method] = None
        prev = None
        for labels, mean, _, _ in points:
            if mean >= target - 1e-12:
                if prev is None or mean == prev[1]:
                    result[method] = float(labels)
                else:
                    frac = (target - prev[1]) / (mean - prev[1])
                    result[method] = prev[0] + frac * (labels - prev[0])
                break
            prev = (labels, mean)
    return result


def plot(summary: dict[str, list[tuple[int, float, float, int]]], path: Path, title: str) -> bool:
    """Win-rate vs labels with ±1 standard-error bands; False when matplotlib is missing."""
    if not summary:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method, points in summary.items():
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        se = [p[2] for p in points]
        ax.plot(xs, ys, marker="o", label=f"{method} ({points[0][3]} seeds)")
        ax.fill_between(xs, [y - s for y, s in zip(ys, se)], [y + s for y, s in zip(ys, se)], alpha=0.2)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("labels")
    ax.set_ylabel("win-rate vs reference")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
