"""Interactive commands: label (the TUI), demo (example project + TUI), serve (TUI in a browser)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from apl_tui.cli.common import DEFAULT_STORE, ModelOpt, StoreOpt, app, err, friendly, new_store_config
from apl_tui.errors import AplError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
"""The repository's example prompt sets and config (used by `apl demo`)."""


def run_app(engine: Any, *, start_worker: bool = True, desk: Any = None, learner: Any = None) -> None:
    """Run the labeling app over an engine's desk and learner (or the given ones); the store is closed afterwards."""
    from apl_tui.tui.app import LabelApp

    store = engine.store
    desk = desk or engine.desk
    learner = learner or engine.learner
    if learner.config.model.threads == 0:
        # Leave a core to the interface: torch's spinning threads would otherwise starve it.
        learner.config = learner.config.replace("model", threads=max(1, (os.cpu_count() or 2) - 1))
    label_app = LabelApp(desk, learner if start_worker else None)
    try:
        label_app.run()
        status = desk.status()
    finally:
        store.close()
    n = status.labels_session
    err.print(f"{n} label{'' if n == 1 else 's'} this session, {status.labels_total} in {store.root}; all saved")
    if label_app.worker_running:
        # The learner was abandoned inside a model load or a torch kernel. Every label is
        # committed and the store is closed; waiting for the interpreter to wind that thread
        # (and the loaders' own pools) down would keep the user from their shell for seconds,
        # and finalising under a thread inside torch can abort the process ("terminate called…").
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@app.command()
@friendly
def label(
    store: StoreOpt = DEFAULT_STORE,
    model: ModelOpt = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="label the ready pool only; load no model")] = False,
    browser: Annotated[bool, typer.Option("--browser", hidden=True,
                                          help="run under apl serve: show start-up errors in the page")] = False,
    eval_: Annotated[bool, typer.Option("--eval", help="judge an adapter against the reference yourself, blind, "
                                                        "on the test prompts (a win-rate with oracle 'human')")] = False,
    adapter: Annotated[int | None, typer.Option(help="with --eval: the adapter version (default: the latest)")] = None,
    prompts: Annotated[int | None, typer.Option(help="with --eval: test prompts to use (default: all)")] = None,
) -> None:
    """Label preference pairs in the terminal while DPO trains in the background."""
    from apl_tui.cli.loop import open_engine
    from apl_tui.errors import StoreLockedError

    if not eval_ and (adapter is not None or prompts is not None):
        raise AplError("--adapter and --prompts only apply to a human evaluation", hint="add --eval")
    try:
        engine = open_engine(store, model=model)
    except AplError as e:
        if not browser:
            raise
        # The server's console is not where a browser user looks: say it in the page.
        from apl_tui.tui.message_app import MessageApp

        hint = e.hint
        if isinstance(e, StoreLockedError):
            hint = ("another browser tab or `apl label` has this store open: close it (its labels are saved), "
                    "then reload this page")
        MessageApp("apl label cannot start", e.message, hint).run()
        raise
    if not eval_:
        run_app(engine, start_worker=not no_worker)
        return
    from apl_tui.human_eval import EvalDesk, EvalLearner, plan_eval

    try:
        plan = plan_eval(engine.store, engine.config, adapter, prompts)
    except AplError:
        engine.store.close()
        raise
    err.print(f"evaluating adapter v{plan.adapter_version} against the reference on {len(plan.tests)} test "
              "prompts, blind (which side is which shows after each verdict)")
    run_app(engine, start_worker=not no_worker, desk=EvalDesk(engine.store, plan, engine.config),
            learner=EvalLearner(engine.store, plan, engine.config))


def prepare_demo(store: Path, model: str | None) -> list[str]:
    """Create the demo store from `examples/` if missing and import the IMDB prompts if it has none.

    Returns what was done, one line each (for stderr).
    """
    from apl_tui.importer import read_prompts
    from apl_tui.store import Store

    done: list[str] = []
    if not (store / "apl.duckdb").exists():
        example_cfg = EXAMPLES / "config.toml"
        cfg = new_store_config(example_cfg if example_cfg.exists() else None, model)
        Store.create(store, cfg).close()
        done.append(f"created a new store in {store}/ (model {cfg.model.spec})")
    with Store(store) as s:
        if not s.prompt_counts():
            for split in ("train", "test"):
                path = EXAMPLES / "imdb" / f"{split}.jsonl"
                if not path.exists():
                    raise AplError(f"example prompts {path} not found",
                                   hint="run apl demo from a source checkout, or apl init + apl import your own")
                added, _ = s.add_prompts(read_prompts(path), split=split, source=path.name)
                done.append(f"imported {added:,} {split} prompts from {path.name}")
    return done


@app.command()
@friendly
def demo(
    store: StoreOpt = DEFAULT_STORE,
    model: Annotated[str, typer.Option("--model", "-m", help="model spec")] = "smollm2-135m",
) -> None:
    """One-step start: an example IMDB project with the embedded model, then the labeling TUI."""
    from apl_tui.cli.loop import open_engine

    for line in prepare_demo(store, model):
        err.print(line)
    run_app(open_engine(store, model=model))


@app.command()
@friendly
def serve(
    store: StoreOpt = DEFAULT_STORE,
    model: ModelOpt = None,
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    host: Annotated[str, typer.Option(help="address to bind (keep 127.0.0.1 unless you trust the network)")] = "127.0.0.1",
) -> None:
    """The labeling TUI in a browser (textual-serve), bound to 127.0.0.1 by default."""
    try:
        from textual_serve.server import Server
    except ImportError as e:
        raise AplError("textual-serve is not installed", hint="pip install 'apl-tui[serve]'") from e
    if not (store / "apl.duckdb").exists():
        raise AplError(f"no store at {store}", hint="create one with `apl init` or `apl demo`")
    command = [sys.executable, "-m", "apl_tui", "label", "--browser", "--store", str(store.resolve())]
    if model:
        command += ["--model", model]
    err.print(f"serving apl label on http://{host}:{port} (Ctrl-C stops)")
    Server(command=shlex.join(command), host=host, port=port, title="apl label").serve()
