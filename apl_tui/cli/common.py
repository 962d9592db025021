"""Shared pieces of the CLI: the Typer app, the --store option, the error boundary."""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from apl_tui.errors import AplError

app = typer.Typer(
    name="apl",
    help="Active preference learning for language models: label pairs in the terminal while DPO trains.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Diagnostics go to stderr, data to stdout, so `apl export > f` and `apl sql ... | head` work.
# Markup is off: messages carry user text (paths, prompts, TOML sections like [train]) that Rich
# would read as tags and drop. Styles are added with `styled`, which never parses text.
err = Console(stderr=True, soft_wrap=True, markup=False)
out = Console(markup=False)

StoreOpt = Annotated[Path, typer.Option("--store", "-s", envvar="APL_STORE", help="store folder",
                                        show_default=True)]
DEFAULT_STORE = Path("store")
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="model spec (default: the store's config)")]

F = TypeVar("F", bound=Callable[..., Any])


def _print_version(value: bool) -> None:
    if value:
        from apl_tui import __version__

        out.print(f"apl-tui {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Active preference learning for language models: label pairs in the terminal while DPO trains."""


def new_store_config(config: Path | None, model: str | None) -> Any:
    """Settings for a new store: a config file (defaults where it says nothing), then --model."""
    from apl_tui.config import AplConfig
    from apl_tui.config_file import load_config_file

    cfg = load_config_file(config) if config is not None else AplConfig()
    return cfg.replace("model", spec=model) if model else cfg


def styled(label: str, style: str, text: str = "") -> Text:
    """A styled label followed by plain text, e.g. styled("error:", "bold red", " no such file [x]").

    Nothing is parsed as markup, so square brackets in `text` are printed as they are.
    """
    return Text.assemble((label, style), text)


def fail(message: str, hint: str = "") -> typer.Exit:
    """Print a one-line error (and hint) to stderr; return the Exit to raise."""
    err.print(styled("error:", "bold red", f" {message}"), highlight=False, soft_wrap=True)
    if hint:
        err.print(styled("hint:", "dim", f" {hint}"), highlight=False, soft_wrap=True)
    return typer.Exit(1)


STOPPED_EXIT = 130
"""The exit status of a command stopped by Ctrl-C (128 + SIGINT, as shells report it)."""


def stopped() -> typer.Exit:
    """Say that Ctrl-C stopped the command cleanly; return the Exit (status 130) to raise."""
    err.print("[yellow]stopped; rerun to continue[/] (everything finished so far is saved)", highlight=False)
    return typer.Exit(STOPPED_EXIT)


def friendly(fn: F) -> F:
    """The error boundary: an AplError becomes one line and exit 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
        try:
            return fn(*args, **kwargs)
        except AplError as e:
            raise fail(e.message, e.hint) from None
        except KeyboardInterrupt:
            raise stopped() from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def cancel_on_ctrl_c() -> Iterator[threading.Event]:
    """An Event set by the first Ctrl-C, so long work stops between steps and leaves the store whole.

    A second Ctrl-C interrupts at once (the store is still safe: every write is a transaction).
    """
    cancel = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        cancel.set()
        err.print(styled("stopping after the current step… (Ctrl-C again to stop now)", "yellow"))

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
