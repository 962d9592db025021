"""Running a shared-pool experiment: seeds in parallel processes, resumable, with progress and ETA.

The unit of parallel work is a seed (its arms depend on its pool and warm-up point). Each worker
process loads its own model with one torch thread. Every random choice of a point is seeded by
the point itself, never by process history, so `--jobs 2` writes the same results as `--jobs 1`
(only the timing columns differ).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

from apl_tui.atomic import atomic_file
from apl_tui.errors import Cancelled, ConfigError

logger = logging.getLogger(__name__)


def _load(exp: Any, out: Path) -> tuple[Any, list[tuple[int, str]], list[tuple[int, str]]]:
    from apl_tui.cache import model_cache_dir
    from apl_tui.importer import read_prompts
    from apl_tui.policy import Policy

    train = list(enumerate(read_prompts(exp.path(exp.train_file))[: exp.train_prompts]))
    test = list(enumerate(read_prompts(exp.path(exp.test_file))[: exp.test_prompts]))
    cache_dir = model_cache_dir()  # one per user ($APL_CACHE_DIR overrides), as for every command
    # One thread per process: the jobs are the parallelism, and spinning threads collapse throughput.
    model_cfg = exp.base.model.__class__(**{**exp.base.model.__dict__, "threads": 1})
    return Policy.load(model_cfg, cache_dir, seed=0), train, test


def run_seed(exp: Any, out: Path, seed: int) -> list[dict[str, Any]]:
    """Every arm × schedule point of one seed (in this process)."""
    from apl_tui.shared_pool import SeedRun

    policy, train, test = _load(exp, out)
    return SeedRun(exp, seed, policy, out, train, test).run(tuple(exp.methods), tuple(exp.schedule))


def _worker(args: tuple[Any, Path, int]) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    return run_seed(*args)


def total_points(exp: Any) -> int:
    """Points one run trains and evaluates: per seed, the shared warm-up plus each arm's later points."""
    return len(exp.seeds) * (1 + len(exp.methods) * (len(exp.schedule) - 1))


def finished_points(exp: Any, out: Path) -> int:
    """Point files on disk for this experiment's seeds and arms."""
    from apl_tui.shared_pool import WARMUP

    n = 0
    for seed in exp.seeds:
        folder = out / "shared" / f"s{seed}" / "points"
        n += (folder / f"{WARMUP}-{exp.schedule[0]}.json").exists()
        n += sum((folder / f"{m}-{b}.json").exists() for m in exp.methods for b in exp.schedule[1:])
    return n


# What may grow between runs into one folder (more arms, seeds, rounds); anything else changes the
# points already there, so a resume with other settings would mix two experiments in one table.
GROWABLE = ("methods", "seeds", "schedule", "output")


def settings_of(exp: Any) -> dict[str, Any]:
    """The settings a finished point depends on, as plain JSON values."""
    fields = {f: getattr(exp, f) for f in exp.__dataclass_fields__ if f not in (*GROWABLE, "base", "folder")}
    return json.loads(json.dumps({"experiment": fields, **exp.base.to_dict()}, default=str))


def _check_settings(exp: Any, out: Path) -> None:
    path = out / "settings.json"
    mine = settings_of(exp)
    if path.exists():
        theirs = json.loads(path.read_text())
        changed = sorted(f"{s}.{k}" for s in mine for k in mine[s] if theirs.get(s, {}).get(k) != mine[s][k])
        if changed:
            raise ConfigError(f"{out} holds a run with other settings ({', '.join(changed[:3])})",
                              hint="use another --output, or the settings it was run with")
        return
    with atomic_file(path) as tmp:  # a half-written settings.json would refuse every resume
        tmp.write_text(json.dumps(mine, indent=1))


def run_shared(exp: Any, out: Path, *, jobs: int = 1, log: Any = logger.info,
               cancel: threading.Event | None = None, poll_s: float = 10.0) -> list[dict[str, Any]]:
    """Run (or resume) the experiment; returns every point record of its seeds."""
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(exp, out)
    total = total_points(exp)
    start_done = finished_points(exp, out)
    t0 = time.perf_counter()
    log(f"{total} points ({start_done} already finished), {len(exp.seeds)} seeds on {jobs} job(s)")
    tasks = [(exp, out, s) for s in exp.seeds]
    results: list[list[dict[str, Any]]] = []
    last = start_done

    def progress() -> None:
        nonlocal last
        done = finished_points(exp, out)
        if done != last:
            last = done
            elapsed = time.perf_counter() - t0
            rate = (done - start_done) / elapsed if elapsed > 0 else 0.0
            eta = (total - done) / rate if rate > 0 else float("nan")
            log(f"{time.strftime('%H:%M:%S')} {done}/{total} points, {elapsed / 60:.1f} min elapsed, "
                f"ETA {eta / 60:.1f} min")

    if jobs <= 1:
        for task in tasks:
            if cancel is not None and cancel.is_set():
                raise Cancelled("experiment stopped", hint="rerun the same command to continue")
            results.append(_worker_inline(task, progress))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(jobs, maxtasksperchild=1) as pool:
            pending = pool.map_async(_worker, tasks, chunksize=1)
            while not pending.ready():
                pending.wait(poll_s)
                progress()
                if cancel is not None and cancel.is_set():
                    pool.terminate()
                    raise Cancelled("experiment stopped", hint="rerun the same command to continue")
            results = pending.get()
            # Leaving the block terminates the workers; closing and joining first lets them exit on
            # their own, so the resource tracker has no semaphore left to warn about at exit.
            pool.close()
            pool.join()
    progress()
    return [r for seed_rows in results for r in seed_rows]


def _worker_inline(task: tuple[Any, Path, int], progress: Any) -> list[dict[str, Any]]:
    from apl_tui.shared_pool import SeedRun

    exp, out, seed = task
    policy, train, test = _load(exp, out)
    return SeedRun(exp, seed, policy, out, train, test).run(tuple(exp.methods), tuple(exp.schedule),
                                                            on_point=lambda _p: progress())
