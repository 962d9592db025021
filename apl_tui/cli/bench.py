"""`apl bench`: where the time goes, against naive code, TRL and the machine's matmul peak."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from apl_tui.cli.common import app, err, friendly, out, styled
from apl_tui.errors import AplError


@app.command()
@friendly
def bench(
    model: Annotated[str, typer.Option("--model", "-m",
                                       help="model spec: tiny-random, smollm2-135m, a folder or hub id")] = "tiny-random",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    quick: Annotated[bool, typer.Option("--quick", help="fewer pairs, repeats and labels (about two minutes)")] = False,
    json_file: Annotated[Path | None, typer.Option("--json", help="also write every number to this JSON file")] = None,
    only: Annotated[str, typer.Option(help="families, comma-separated, run in this order "
                                             "(scoring,projection,machine,dpo,entropy,ui,keypath,store,memory,"
                                             "acquisition)")] = "",
    cache_dir: Annotated[Path | None, typer.Option(
        help="converted models (default: $APL_CACHE_DIR, else the user cache folder)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice)")] = None,
) -> None:
    """Measure scoring, projection, DPO steps, entropy, UI, the key path, the store and memory; print a table."""
    from apl_tui.bench import BenchOptions, BenchSizes, run_bench
    from apl_tui.bench.report import table
    from apl_tui.bench.runner import check_families
    from apl_tui.cache import model_cache_dir

    families = tuple(f.strip() for f in only.split(",") if f.strip())
    try:
        check_families(families)
        opts = BenchOptions(model=model, device=device, quick=quick, only=families, threads=threads,
                            cache_dir=cache_dir or model_cache_dir(),
                            sizes=BenchSizes.quick() if quick else BenchSizes.full())
    except ValueError as e:
        raise AplError(str(e), hint="see apl bench --help") from e

    def save(results: dict[str, object]) -> None:
        if json_file is not None:  # after every family: a long run stopped early keeps what it measured
            json_file.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")

    results = run_bench(opts, log=lambda message: err.print(styled("bench:", "dim", f" {message}"), highlight=False),
                        checkpoint=save)
    out.print(table(results))
    save(results)
    if json_file is not None:
        err.print(f"json: {json_file}")
