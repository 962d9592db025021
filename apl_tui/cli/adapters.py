"""Adapter commands: `apl adapter retire N` takes a bad or damaged adapter out of use;
`apl adapter export N DIR [--merge]` takes one out of the store for other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from apl_tui.cache import model_cache_dir
from apl_tui.cli.common import DEFAULT_STORE, StoreOpt, app, err, friendly

adapter_app = typer.Typer(help="Manage trained adapter versions.", no_args_is_help=True)
app.add_typer(adapter_app, name="adapter")


@adapter_app.command("retire")
@friendly
def retire(version: Annotated[int, typer.Argument(help="adapter version to retire")],
           store: StoreOpt = DEFAULT_STORE,
           reason: Annotated[str, typer.Option("--reason", help="why, kept with the event")] = "") -> None:
    """Mark adapter vN unusable (append-only); the newest version not retired becomes current.

    The adapter's row, files and metrics stay for the record; it is never loaded again, its
    scores no longer rank pairs, and the next round is due at once if labels arrived since the
    now-current version.
    """
    from apl_tui.store import Store

    with Store(store) as s:
        current = s.retire_adapter(version, reason)
    now = f"adapter v{current} is current" if current else "no adapter is current (the base model is the policy)"
    err.print(f"retired adapter v{version}; {now}", highlight=False)


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
        cache = model_cache_dir()  # one per user, shared by every store
        info = export_adapter(s, version, dest, merge=merge, cache_dir=cache)
    if info["retired"]:
        err.print(f"[yellow]note:[/] adapter v{version} is retired in this store; exported anyway", highlight=False)
    if merge:
        err.print(f"exported adapter v{version} merged into {info['base_model']} to {dest}; "
                  f"load it with AutoModelForCausalLM.from_pretrained({str(dest)!r})", highlight=False)
    else:
        err.print(f"exported adapter v{version} (PEFT) to {dest}; load it with "
                  f"PeftModel.from_pretrained(base, {str(dest)!r}), base = {info['base_model_name_or_path']}",
                  highlight=False)
