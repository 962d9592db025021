"""The `apl` command line: thin Typer commands over the store and the engine.

Each command module registers itself on `app`; importing this package must stay light
(no torch), so `apl --help` is instant.
"""

from __future__ import annotations

from apl_tui.cli import adapters, bench, data, loop, research, ui  # noqa: F401  (registers commands)
from apl_tui.cli.common import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
