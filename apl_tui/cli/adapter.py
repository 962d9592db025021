"""`apl adapter ...`: commands about trained adapter versions (a Typer sub-app)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from apl_tui.cli.common import DEFAULT_STORE, StoreOpt, app, err, friendly

adapter_app = typer.Typer(name="adapter", help="Trained adapter versions: take one out of the store.",
                          no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                          rich_markup_mode=None)
app.add_typer(adapter_app, name="adapter")


@adapter_app.command("export")
@friendly
def export(
    version: Annotated[int, typer.Argument(help="adapter version N (apl stats lists them)")],
    dest: Annotated[Path, typer.Argument(help="new (or empty) output folder")],
    store: StoreOpt = DEFAULT_STORE,
    merge: Annotated[bool, typer.Option(
        "--merge", help="fold the adapter into the base weights: a full model folder (weights + tokenizer)")] = False,
) -> None:
    """Write adapter vN as a PEFT folder (PeftModel.from_pretrained) or, with --merge, a full model folder."""
    from apl_tui.export_model import export_adapter
    from apl_tui.store import Store

    with Store(store) as s:
        cache = Path(os.environ.get("APL_CACHE_DIR") or s.cache_dir)
        info = export_adapter(s, version, dest, merge=merge, cache_dir=cache)
    if merge:
        err.print(f"exported adapter v{version} merged into {info['base_model']} to {dest}; "
                  f"load it with AutoModelForCausalLM.from_pretrained({str(dest)!r})")
    else:
        err.print(f"exported adapter v{version} (PEFT) to {dest}; load it with "
                  f"PeftModel.from_pretrained(base, {str(dest)!r}), base = {info['base_model_name_or_path']}")
