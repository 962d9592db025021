"""Research commands: experiment (acquisition vs random) and bench (speed of this machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from apl_tui.cli.common import app, cancel_on_ctrl_c, err, friendly, out, stopped
from apl_tui.errors import AplError, Cancelled


@app.command()
@friendly
def experiment(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="experiment file, e.g. examples/experiment-powered.toml")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder (default: the file's [experiment] output)")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="only re-render the outputs of the finished runs in this folder")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="seeds in parallel processes, one torch thread each (shared-pool mode)")] = 1,
    sets: Annotated[list[str] | None, typer.Option("--set", metavar="SECTION.KEY=VALUE", help="override a value of the file, e.g. train.learning_rate=1e-3 (repeatable)")] = None,
) -> None:
    """Acquisition functions × seeds × label schedule: CSV, plots, paired differences to random."""
    if report is not None:
        _report(report, config)
        return
    if config is None:
        raise AplError("apl experiment needs --config FILE (or --report DIR)", hint="e.g. --config examples/experiment-powered.toml")
    from apl_tui.experiment import ExperimentConfig

    exp = ExperimentConfig.load(config, sets or ())
    folder = Path(output) if output else exp.path(exp.output)
    if exp.mode == "shared-pool":
        from apl_tui.experiment_jobs import run_shared

        with cancel_on_ctrl_c() as cancel:
            try:
                run_shared(exp, folder, jobs=jobs, log=err.print, cancel=cancel)
            except Cancelled:
                raise stopped() from None
        _report(folder, config)
        return
    if jobs != 1:
        raise AplError("--jobs needs experiment.mode = \"shared-pool\"", hint="on-policy runs share one model in one process")
    from apl_tui.cli.progress import RichSink
    from apl_tui.experiment import run_experiment

    with cancel_on_ctrl_c() as cancel, RichSink() as sink:
        try:
            rows = run_experiment(exp, output=folder, sink=sink, cancel=cancel, log=sink.say)
        except Cancelled:
            raise stopped() from None
    _on_policy_summary(rows, folder, f"{config.name}: {exp.oracle} oracle, {exp.base.model.spec}")


def _report(folder: Path, config: Path | None) -> None:
    """Re-render a finished (or partly finished) run's outputs from its files."""
    from apl_tui.sweep_report import render as render_sweep
    from apl_tui.sweep_report import run_folders

    if folder.is_dir() and not (folder / "shared").is_dir() and run_folders(folder):
        out.print(render_sweep(folder), soft_wrap=True)
        err.print(f"outputs in {folder}: sweep.md, sweep.png (one row per run folder × label count)")
        return
    if (folder / "shared").is_dir():
        from apl_tui.experiment_report import render

        _, text = render(folder, title=f"{config.name if config else folder.name}: shared pool")
        out.print(text)
        err.print(f"outputs in {folder}: results.csv, per_prompt.parquet, curves.png, paired.png, reward_kl.png, report.md")
        return
    import csv

    path = folder / "results.csv"
    if not path.exists():
        raise AplError(f"no results in {folder}", hint="run the experiment first")
    with open(path) as f:
        rows = [{**r, "labels": int(r["labels"]), "seed": int(r["seed"]),
                 "win_rate": float(r["win_rate"]) if r["win_rate"] else None} for r in csv.DictReader(f)]
    _on_policy_summary(rows, folder, f"{folder.name}: on-policy")


def _on_policy_summary(rows: list[dict], folder: Path, title: str) -> None:
    from apl_tui.experiment import labels_to_match, plot, summarise

    summary = summarise(rows)
    table = Table("method", *[str(p[0]) for p in next(iter(summary.values()), [])], "labels to match random",
                  title="win-rate vs reference (mean ± s.e. over seeds)")
    match = labels_to_match(summary)
    for method, points in summary.items():
        m = match.get(method)
        table.add_row(f"{method} ({points[0][3]} seeds)", *[f"{p[1]:.3f} ± {p[2]:.3f}" for p in points],
                      "not reached" if m is None else f"{m:.0f}")
    out.print(table)
    if plot(summary, folder / "winrate.png", title):
        err.print(f"plot: {folder / 'winrate.png'}")
    err.print(f"csv: {folder / 'results.csv'}")
