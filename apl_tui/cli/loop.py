"""Model commands: generate, score, next, train, run, eval. Each loads the model lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from apl_tui.cli.common import (
    DEFAULT_STORE,
    ModelOpt,
    StoreOpt,
    app,
    cancel_on_ctrl_c,
    err,
    friendly,
    out,
    stopped,
    styled,
)
from apl_tui.config import ACQUISITIONS
from apl_tui.errors import AplError, Cancelled
from apl_tui.eval_report import GUARD_PROMPTS

DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda")]
AcqOpt = Annotated[str | None, typer.Option("--acquisition", "-a", help=f"one of {', '.join(ACQUISITIONS)}")]
# No short flag: -o means --output in every command that writes a file (export, experiment).
OracleOpt = Annotated[str, typer.Option("--oracle", help="imdb-task (the IMDB task judge), vader, vader:noise=T, openai or python:mod:fn")]
EVAL_PROMPTS = 32
"""Test prompts `apl eval` uses by default: a few minutes per adapter with SmolLM2 on a 2-core CPU."""


def open_engine(store: Path, *, model: str | None = None, device: str | None = None,
                acquisition: str | None = None, **loop: Any) -> Any:
    """An Engine over a store, with command-line overrides applied to its config."""
    from apl_tui.engine import Engine
    from apl_tui.store import Store

    s = Store(store)
    cfg = s.load_config()
    if model:
        cfg = cfg.replace("model", spec=model)
    if device:
        cfg = cfg.replace("model", device=device)
    if acquisition:
        cfg = cfg.replace("acquisition", name=acquisition)
    loop = {k: v for k, v in loop.items() if v is not None}
    if loop:
        cfg = cfg.replace("loop", **loop)
    return Engine(s, cfg)


def _heavy(fn: Any) -> Any:
    """Run engine work with a Rich progress sink and Ctrl-C → cancel between steps."""
    from apl_tui.cli.progress import RichSink

    with cancel_on_ctrl_c() as cancel, RichSink() as sink:
        try:
            return fn(sink, cancel)
        except Cancelled:
            raise stopped() from None


def _snapshotting(engine: Any, sink: Any, every_s: float = 10.0) -> Any:
    """Wrap a sink so the store's snapshot stays fresh (this process holds the file; others read it)."""
    import time

    from apl_tui.events import LabelRecorded, RoundTrained
    from apl_tui.snapshot import write_snapshot

    last = [0.0]

    def wrapped(event: Any) -> None:
        sink(event)
        now = time.monotonic()
        if isinstance(event, RoundTrained) or (isinstance(event, LabelRecorded) and now - last[0] > every_s):
            last[0] = now
            write_snapshot(engine.store)

    return wrapped


@app.command()
@friendly
def generate(store: StoreOpt = DEFAULT_STORE,
             n: Annotated[int, typer.Option("--n", help="prompts to add (N completions each: all their pairs)")] = 32,
             model: ModelOpt = None, device: DeviceOpt = None, acquisition: AcqOpt = None) -> None:
    """Fill the pool with N new prompts' pairs sampled from the current policy (one pair each for N = 2)."""
    from apl_tui.pool import ready_prompts

    engine = open_engine(store, model=model, device=device, acquisition=acquisition)
    target = ready_prompts(engine.store, engine.config) + n
    added = _heavy(lambda sink, cancel: engine.learner.refill(sink, cancel, target=target))
    err.print(f"added {added} pairs; pool holds {engine.store.pool_size()} unlabeled")


@app.command()
@friendly
def score(store: StoreOpt = DEFAULT_STORE, acquisition: AcqOpt = None, model: ModelOpt = None,
          device: DeviceOpt = None) -> None:
    """Rescore the pool with the current adapter (chunked, resumable)."""
    engine = open_engine(store, model=model, device=device, acquisition=acquisition)
    n = _heavy(lambda sink, cancel: engine.learner.score(sink, cancel))
    err.print(f"scored {n} pairs with {engine.config.acquisition.name}")


@app.command("next")
@friendly
def next_(store: StoreOpt = DEFAULT_STORE, acquisition: AcqOpt = None,
          json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Print the pair the labeling app shows next, and why (records nothing, loads no model)."""
    import dataclasses
    import json

    engine = open_engine(store, acquisition=acquisition)
    shown = engine.desk.peek_pair(source="human")
    if shown is None:
        raise AplError("no unlabeled pair in the pool", hint="apl generate --n 32")
    if json_out:
        out.print_json(json.dumps(dataclasses.asdict(shown)))
        return
    from apl_tui.chat import decode_messages

    for m in decode_messages(shown.prompt) or [{"role": "prompt", "content": shown.prompt}]:
        out.print(styled(f"{m['role']:<7}", "bold", f" {m['content']}"), highlight=False)
    # In screen terms, as the app shows it: A is the left pane.
    out.print(styled("A", "bold", f"       {shown.left_text}"), highlight=False)
    out.print(styled("B", "bold", f"       {shown.right_text}"), highlight=False)
    why = f"{shown.acquisition or 'unscored'}"
    if shown.score is not None:
        place = "a random control pair" if shown.control else f"rank {shown.rank or 1}"
        ago = shown.labels_since_scored
        why += f" score {shown.score:.4f} ({place}, adapter v{shown.scored_by}, "
        why += f"{ago} label{'' if ago == 1 else 's'} ago)"
    if shown.reward_a is not None and shown.reward_b is not None and shown.p_a is not None:
        swap = shown.left != "a"
        r_left, r_right = (shown.reward_b, shown.reward_a) if swap else (shown.reward_a, shown.reward_b)
        p_left = 1.0 - shown.p_a if swap else shown.p_a
        why += f"; r̂_A {r_left:.4f}, r̂_B {r_right:.4f}, p(A≻B) {p_left:.3f}"
    if shown.entropy is not None:
        why += f"; entropy {shown.entropy:.3f}"
    if shown.fallback:
        why += f"; {shown.fallback}"
    out.print(styled("why", "dim", f"     {why}{' [control]' if shown.control else ''}"), highlight=False)
    if shown.impression_id:
        out.print(styled("note", "dim", "    already on the labeling screen (the pending pair)"), highlight=False)


@app.command()
@friendly
def train(store: StoreOpt = DEFAULT_STORE, model: ModelOpt = None, device: DeviceOpt = None) -> None:
    """Train one DPO round on the labels so far and save it as the next adapter version."""
    engine = open_engine(store, model=model, device=device)
    info = _heavy(lambda sink, cancel: engine.learner.train(sink, cancel))
    if info is None:
        raise AplError("no preference labels to train on", hint="label some pairs first (apl label or apl run)")
    err.print(f"adapter v{info.version} saved in {engine.store.root / info.path}")


@app.command()
@friendly
def run(oracle: OracleOpt = "imdb-task", budget: Annotated[int, typer.Option(help="labels to collect in all")] = 64,
        store: StoreOpt = DEFAULT_STORE, acquisition: AcqOpt = None,
        round_size: Annotated[int | None, typer.Option(help="labels per training round")] = None,
        seed: Annotated[int | None, typer.Option(help="loop seed")] = None,
        model: ModelOpt = None, device: DeviceOpt = None) -> None:
    """The loop unattended with an automatic oracle; rerun after an interruption to resume."""
    from apl_tui.batch import run_loop
    from apl_tui.oracles import build_oracle

    engine = open_engine(store, model=model, device=device, acquisition=acquisition, round_size=round_size,
                         seed=seed)
    judge = build_oracle(oracle, seed=engine.config.loop.seed)
    result = _heavy(lambda sink, cancel: run_loop(engine, judge, budget=budget, sink=_snapshotting(engine, sink),
                                                  cancel=cancel))
    err.print(f"{result['labels']} labels by {judge.name}, {result['rounds']} rounds this run, "
              f"{result['seconds']:.0f} s")


@app.command("eval")
@friendly
def eval_(oracle: OracleOpt = "imdb-task", store: StoreOpt = DEFAULT_STORE,
          adapter: Annotated[int | None, typer.Option(help="adapter version (default: all)")] = None,
          prompts: Annotated[int, typer.Option(
              help=f"test prompts to use (default {EVAL_PROMPTS}, sized for a CPU; 0 = the whole test split)")]
          = EVAL_PROMPTS,
          guard_prompts: Annotated[int, typer.Option(
              "--guard-prompts", help=f"measure KL to the reference and PMI on the first N of them (default "
              f"{GUARD_PROMPTS}; 0 = off): one sample and six forward passes per prompt")] = GUARD_PROMPTS,
          model: ModelOpt = None, device: DeviceOpt = None) -> None:
    """Win-rate of adapters vs the reference on the test split, with KL and quality guards beside it.

    Each prompt's result is saved as it is judged: after Ctrl-C the same command continues, and a
    finished evaluation is cached per adapter, oracle and settings.
    """
    from apl_tui.batch import evaluate
    from apl_tui.eval_report import measures_lines
    from apl_tui.oracles import build_oracle

    if prompts < 0:
        raise AplError(f"--prompts must be 0 or more (got {prompts})", hint="e.g. --prompts 32; 0 = the whole test split")
    if guard_prompts < 0:
        raise AplError(f"--guard-prompts must be 0 or more (got {guard_prompts})",
                       hint=f"e.g. --guard-prompts {GUARD_PROMPTS}; 0 turns KL and PMI off")
    engine = open_engine(store, model=model, device=device)
    judge = build_oracle(oracle, seed=engine.config.loop.seed)
    versions = [adapter] if adapter is not None else engine.store.adapter_versions()
    if not versions:
        raise AplError("no adapter to evaluate yet", hint="train a round first (apl train or apl run)")
    for v in versions:
        row = _heavy(lambda sink, cancel, v=v: evaluate(engine, judge, adapter_version=v, prompts=prompts or None,
                                                        guard_prompts=guard_prompts, sink=sink, cancel=cancel))
        rate = "–" if row["win_rate"] is None else f"{row['win_rate']:.3f} ± {row['stderr']:.3f}"
        # soft_wrap: data on stdout is not cut into 80-column lines when piped.
        out.print(f"adapter v{v}: win-rate {rate} vs reference ({row['wins']} wins, {row['losses']} losses, "
                  f"{row['ties']} ties, n={row['n']}, {judge.name}){' [cached]' if row.get('cached') else ''}",
                  highlight=False, soft_wrap=True)
        for line in measures_lines(row):
            out.print(f"  {line}", highlight=False, soft_wrap=True)
