"""Adapter commands: `apl adapter retire N` takes a bad or damaged adapter out of use."""

from __future__ import annotations

from typing import Annotated

import typer

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
