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
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment file, e.g. examples/experiment-cpu.toml")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder (default: the file's [experiment] output)")] = None,
    report_only: Annotated[bool, typer.Option("--report", help="only summarise finished runs")] = False,
) -> None:
    """Acquisition functions × seeds × label schedule: CSV, plot and labels-to-match-random."""
    from apl_tui.cli.progress import RichSink
    from apl_tui.experiment import ExperimentConfig, labels_to_match, plot, run_experiment, summarise

    exp = ExperimentConfig.load(config)
    folder = Path(output) if output else exp.path(exp.output)
    if report_only:
        import csv

        path = folder / "results.csv"
        if not path.exists():
            raise AplError(f"no results in {folder}", hint="run the experiment first")
        with open(path) as f:
            rows = [{**r, "labels": int(r["labels"]), "seed": int(r["seed"]),
                     "win_rate": float(r["win_rate"]) if r["win_rate"] else None} for r in csv.DictReader(f)]
    else:
        with cancel_on_ctrl_c() as cancel, RichSink() as sink:
            try:
                rows = run_experiment(exp, output=folder, sink=sink, cancel=cancel, log=sink.say)
            except Cancelled:
                raise stopped() from None
    summary = summarise(rows)
    table = Table("method", *[str(p[0]) for p in next(iter(summary.values()), [])], "labels to match random",
                  title="win-rate vs reference (mean ± s.e. over seeds)")
    match = labels_to_match(summary)
    for method, points in summary.items():
        m = match.get(method)
        table.add_row(f"{method} ({points[0][3]} seeds)", *[f"{p[1]:.3f} ± {p[2]:.3f}" for p in points],
                      "not reached" if m is None else f"{m:.0f}")
    out.print(table)
    if plot(summary, folder / "winrate.png", f"{config.name}: {exp.oracle} oracle, {exp.base.model.spec}"):
        err.print(f"plot: {folder / 'winrate.png'}")
    err.print(f"csv: {folder / 'results.csv'}")
