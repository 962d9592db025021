"""Data commands: init, import, export, sql, stats. None of them loads a model."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from apl_tui.atomic import atomic_file
from apl_tui.cli.common import DEFAULT_STORE, StoreOpt, app, err, friendly, new_store_config, out, styled
from apl_tui.errors import AplError


def _open(store: Path) -> Any:
    from apl_tui.store import Store

    return Store(store)


def _reader(store: Path) -> Any:
    from apl_tui.snapshot import open_reader

    reader = open_reader(store)
    if reader.note:
        err.print(styled("note:", "yellow", f" {reader.note}"))
    return reader


@app.command()
@friendly
def init(
    store: StoreOpt = DEFAULT_STORE,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model spec written to config.toml")] = None,
    config: Annotated[Path | None, typer.Option(help="start from this config.toml")] = None,
) -> None:
    """Create a store: database, adapters folder and config.toml."""
    from apl_tui.store import Store

    cfg = new_store_config(config, model)
    existed = (store / "apl.duckdb").exists()
    with Store.create(store, cfg) as s:
        version = s.schema_version()
    what = "a store already exists in" if existed else "created a new store in"
    err.print(f"{what} {store}/ (schema v{version}); next: apl import FILE")


@app.command("import")
@friendly
def import_(
    file: Annotated[Path, typer.Argument(help=".jsonl (a 'prompt' field), .csv, .parquet or .txt")],
    store: StoreOpt = DEFAULT_STORE,
    split: Annotated[str, typer.Option(help="train (acquisition pool) or test (held out for evaluation)")] = "train",
    field: Annotated[str, typer.Option(help="field or column that holds the prompt")] = "prompt",
    completions: Annotated[bool, typer.Option(
        "--completions",
        help="rows carry candidates: completions [...], chosen/rejected or response_a/response_b")] = False,
    ignore_verdicts: Annotated[bool, typer.Option(
        "--ignore-verdicts", help="with --completions: import chosen/rejected and winners as unlabeled pairs")] = False,
    max_completion_tokens: Annotated[int | None, typer.Option(
        help="with --completions: cut longer completions (default: the model's context minus the prompt's room)"
    )] = None,
) -> None:
    """Import prompts (or, with --completions, candidate pairs), all or nothing; duplicates are skipped."""
    from apl_tui.importer import read_prompts

    if split not in ("train", "test"):
        raise AplError(f"unknown split {split!r}", hint="use --split train or --split test")
    if completions:
        from apl_tui.cli.bring import import_completions_command

        if split != "train":
            raise AplError("imported completions go to the train split (they are labeled)",
                           hint="import test prompts without --completions")
        import_completions_command(file, store, keep_verdicts=not ignore_verdicts, limit=max_completion_tokens)
        return
    prompts = read_prompts(file, field=field)
    with _open(store) as s:
        added, skipped = s.add_prompts(prompts, split=split, source=file.name)
        counts = s.prompt_counts()
    dup = f", {skipped:,} duplicates skipped" if skipped else ""
    err.print(f"imported {added:,} {split} prompts from {file}{dup} "
              f"(store: {counts.get('train', 0):,} train, {counts.get('test', 0):,} test)")


@app.command()
@friendly
def export(
    dest: Annotated[Path | None, typer.Argument(help="output file, or the dataset folder for --format hf")] = None,
    store: StoreOpt = DEFAULT_STORE,
    format: Annotated[str, typer.Option("--format", "-f", help="jsonl, parquet or hf (a dataset folder)")] = "jsonl",
    ties: Annotated[str, typer.Option(help="drop | both: leave ties out, or export each tie in both orders")] = "drop",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file (default: stdout for jsonl)")] = None,
    test_share: Annotated[float, typer.Option(help="hf: share of prompts in the test split")] = 0.1,
) -> None:
    """Export labels as TRL preference records: prompt, chosen, rejected + provenance.

    Chat prompts are exported in TRL's conversational format (message lists), plain ones as text.
    """
    from apl_tui.hf_export import check_one_format, trl_records, write_hf_dataset
    from apl_tui.queries import export_rows

    if format not in ("jsonl", "parquet", "hf"):
        raise AplError(f"unknown format {format!r}", hint="use jsonl, parquet or hf")
    if ties not in ("drop", "both"):
        raise AplError(f"unknown ties mode {ties!r}", hint="use drop or both")
    if dest is not None and output is not None:
        raise AplError("give the output once", hint="either DEST or -o, not both")
    output = output or dest
    if format in ("parquet", "hf") and output is None:
        raise AplError(f"{format} needs an output {'folder' if format == 'hf' else 'file'}",
                       hint="add -o prefs.parquet" if format == "parquet" else "apl export --format hf DIR")
    if output is not None and format != "hf":
        _check_output(output)
    reader = _reader(store)
    try:
        cols, rows = export_rows(reader.con, ties=ties)
    finally:
        reader.close()
    records = trl_records(cols, rows)
    if format == "hf":
        counts = write_hf_dataset(records, output, test_share=test_share, ties=ties)  # type: ignore[arg-type]
        err.print(f"exported {len(records):,} preference records to {output} "
                  f"({counts['train']:,} train, {counts['test']:,} test, {check_one_format(records)} format)")
        return
    if format == "parquet":
        check_one_format(records)
        _write_file(output, lambda tmp: _write_parquet(records, cols, tmp))  # type: ignore[arg-type]
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if output is None:
            sys.stdout.write(text)
        else:
            _write_file(output, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    err.print(f"exported {len(records):,} preference records" + (f" to {output}" if output else ""))


def _jsonable(v: Any) -> Any:
    return v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v


def _check_output(output: Path) -> None:
    """Refuse an output path that cannot be written before reading anything."""
    if output.is_dir():
        raise AplError(f"{output} is a folder", hint="give a file name, e.g. -o prefs.jsonl")
    if not output.parent.is_dir():
        raise AplError(f"cannot write {output}: no folder {output.parent}",
                       hint="create the folder first, or pick another -o")


def _write_file(output: Path, write: Any) -> None:
    """Write through a temporary sibling renamed into place: a failure leaves no half file."""
    try:
        with atomic_file(output) as tmp:
            write(tmp)
    except OSError as e:
        raise AplError(f"cannot write {output}: {e.strerror or e}",
                       hint="check free disk space and the folder's permissions") from e


def _write_parquet(records: list[dict[str, Any]], cols: list[str], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(records) if records else pa.table({c: pa.array([], pa.string()) for c in cols})
    pq.write_table(table, path)


@app.command()
@friendly
def sql(
    query: Annotated[str, typer.Argument(help='read-only SQL, e.g. "select split, count(*) from prompts group by 1"')],
    store: StoreOpt = DEFAULT_STORE,
    format: Annotated[str | None, typer.Option("--format", "-f",
                                               help="table, csv or json (default: table on a terminal, csv when piped)")] = None,
    max_rows: Annotated[int, typer.Option(help="rows shown in table format")] = 200,
) -> None:
    """Run read-only SQL over the store (or its snapshot while the app runs).

    The query runs on a sealed connection (apl_tui.sealed): it can read the store's tables and
    views, and nothing else; it cannot write the store, any file or a setting.
    """
    from apl_tui.sealed import check_statement, run_query

    fmt = format or ("table" if sys.stdout.isatty() else "csv")
    if fmt not in ("table", "csv", "json"):
        raise AplError(f"unknown format {fmt!r}", hint="use table, csv or json")
    check_statement(query)
    reader = _reader(store)
    try:
        cols, rows = run_query(reader.con, query)
    finally:
        reader.close()
    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(cols)
        w.writerows([[_jsonable(v) for v in r] for r in rows])
    elif fmt == "json":
        for r in rows:
            sys.stdout.write(json.dumps({c: _jsonable(v) for c, v in zip(cols, r)}, ensure_ascii=False,
                                        default=str) + "\n")
    else:
        table = Table(*cols, show_lines=False)
        for r in rows[:max_rows]:
            table.add_row(*["" if v is None else str(v) for v in r])
        out.print(table)
        if len(rows) > max_rows:
            err.print(f"({len(rows) - max_rows:,} more rows; use --max-rows or --format csv)")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


@app.command()
@friendly
def stats(
    store: StoreOpt = DEFAULT_STORE,
    plot: Annotated[Path | None, typer.Option("--plot", help="also draw the curves into this PNG file "
                                                                 "(needs the plot extra: pip install 'apl-tui[plot]')")] = None,
) -> None:
    """Labels, rounds, win-rates, and whether labeling pays off (prequential accuracy, arms, probes)."""
    from apl_tui.evidence import arms_rows, evidence, evidence_lines
    from apl_tui.queries import stats as compute

    if plot is not None and plot.suffix.lower() != ".png":
        raise AplError(f"{plot}: the plot is written as PNG", hint="name the file with .png, e.g. --plot stats.png")
    reader = _reader(store)
    try:
        s = compute(reader.con)
        ev = evidence(reader.con)
        if plot is not None:
            from apl_tui.plots import gather, write_plot

            write_plot(gather(reader.con, ev), plot)
    finally:
        reader.close()
    prompts = ", ".join(f"{n:,} {k}" for k, n in s["prompts"].items()) or "none"
    out.print(f"prompts      {prompts}")
    out.print(f"pool         {s['pool']:,} unlabeled pairs of {s['candidates']:,}")
    outcomes = ", ".join(f"{k} {n}" for k, n in sorted(s["outcomes"].items())) or "none"
    out.print(f"labels       {s['labels']:,} ({outcomes})")
    out.print(f"biases       left chosen {_pct(s['left_choice_rate'])} of {s['decided']} decided, "
              f"longer won {_pct(s['longer_won_rate'])}, ties {_pct(s['tie_rate'])}, skips {_pct(s['skip_rate'])}")
    if s["adapters"]:
        t = Table("adapter", "labels", "regime", "final loss", "accuracy", "win-rate vs reference", title="rounds")
        evals: dict[int, list[str]] = {}
        for e in s["evals"]:  # every judge side by side: oracles and a person's own (`apl label --eval`)
            rate = "–" if e["win_rate"] is None else f"{e['win_rate']:.3f} ± {e['stderr']:.3f}"
            evals.setdefault(e["adapter_version"], []).append(f"{rate} ({e['oracle']}, n={e['n']})")
        for a in s["adapters"]:
            name = f"v{a['version']}" + (" retired" if a["retired"] else "")
            t.add_row(name, str(a["labels_used"]), a["regime"] or "",
                      "–" if a["loss"] is None else f"{a['loss']:.3f}",
                      _pct(a["accuracy"]), "; ".join(evals.get(a["version"], [])) or "–")
        out.print(t)
        if s["evals"]:
            from apl_tui.eval_report import QUALITY_COLUMNS, quality_rows

            # Kept apart from the rounds table so each fits 100 columns; "–" where not measured.
            q = Table(*QUALITY_COLUMNS, title="KL to the reference (nats), prompt relevance and quality guards",
                      box=box.SIMPLE_HEAD, pad_edge=False)
            for row in quality_rows(s["evals"]):
                q.add_row(*(Text(c) for c in row))  # oracle names and words are data, not markup
            out.print(q)
    else:
        out.print("rounds       none yet")
    lines = Table.grid(padding=(0, 2))
    for head, text in evidence_lines(ev):
        lines.add_row(head, text)
    out.print(lines)
    arms = Table("", "acquired", "control", title="acquired vs random control (95% intervals)")
    for row in arms_rows(ev):
        arms.add_row(*row)
    out.print(arms)
    out.print(ev.sentence, highlight=False)
    if plot is not None:
        err.print(f"plot written to {plot}")
