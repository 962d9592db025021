"""Run the measurement families in order and gather one flat dict of results.

Each family module has `run(ctx) -> dict`; keys are unique across families. A family that
fails is recorded as `<family>_error` (and logged) so a long run still reports the others.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from apl_tui.bench import acquisition, dpo_step, entropy, keypath, machine, memory, projection, scoring, storage, ui
from apl_tui.bench.workload import BenchContext, BenchOptions

logger = logging.getLogger(__name__)

FAMILIES: dict[str, Callable[[BenchContext], dict[str, Any]]] = {
    "scoring": scoring.run,
    "projection": projection.run,
    "machine": machine.run,
    "dpo": dpo_step.run,
    "entropy": entropy.run,
    "ui": ui.run,
    "keypath": keypath.run,
    "store": storage.run,
    "memory": memory.run,
    "acquisition": acquisition.run,
}
"""Family name → measurement, in the order they run (`--only` picks a subset by these names)."""

STABLE_KEYS = (
    "scoring_speedup_vs_naive", "scoring_speedup_vs_batched", "scoring_speedup_vs_unshared",
    "scoring_group_speedup_vs_naive", "scoring_group_speedup_vs_unshared", "projection_scoring_speedup",
    "projection_train_speedup", "dpo_step_speedup_vs_trl", "dpo_step_speedup_vs_trl_precomputed",
    "scoring_fraction_of_peak", "scoring_fraction_of_peak_cpu", "train_fraction_of_peak", "train_fraction_of_peak_cpu",
    "entropy_speedup_vs_naive", "ui_next_pair_p50_ms", "ui_next_pair_p99_ms", "ui_next_pair_p99_ms_training",
    "store_next_pair_ms_1m", "store_label_insert_ms_1m", "export_100k_s", "help_s", "tui_first_frame_s",
    "train_peak_rss_mb", "weights_mb", "keypath_frame_p99_ms_100k", "keypath_frame_p99_ms_100k_training",
)
"""Keys every full run writes (null where a measurement could not run)."""


def check_families(names: tuple[str, ...]) -> None:
    """Raise ValueError naming the first unknown family."""
    for name in names:
        if name not in FAMILIES:
            raise ValueError(f"unknown bench family {name!r}: choose from {', '.join(FAMILIES)}")


def environment(opts: BenchOptions) -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    device = opts.device if opts.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    return {"model": opts.model, "device": device, "device_name": name, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_avg_1m_at_start": load[0],
            "quick": opts.quick, "sizes": {k: v for k, v in vars(opts.sizes).items()},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run_bench(opts: BenchOptions, *, log: Callable[[str], None] = lambda m: None,
              checkpoint: Callable[[dict[str, Any]], None] = lambda r: None) -> dict[str, Any]:
    """Run the chosen families (all by default, else in the order given); return every result in one
    flat dict. `checkpoint` gets the results so far after each family (a long run stopped early
    keeps what it measured)."""
    import torch

    names = opts.only or tuple(FAMILIES)
    check_families(names)
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    ctx = BenchContext(opts, log=log)
    results: dict[str, Any] = {"environment": environment(opts)}
    results.update({key: None for key in STABLE_KEYS})
    timings: dict[str, float] = {}
    loads: dict[str, float | None] = {}
    for name in names:
        started = time.perf_counter()
        try:
            results.update(FAMILIES[name](ctx))
        except Exception as e:  # a broken family must not cost the other measurements
            logger.error("bench family %s failed", name, exc_info=e)
            results[f"{name}_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        timings[name] = time.perf_counter() - started
        loads[name] = _load_avg()
        log(f"{name} done in {timings[name]:.1f} s (load average {loads[name]})")
        checkpoint({**results, **machine.fractions(results), "family_seconds": dict(timings),
                    "family_load_avg_1m_at_end": dict(loads)})
    results.update(machine.fractions(results))
    results["family_seconds"] = timings
    # Other processes' load shows here: on a shared machine, read the ratios, not absolute times.
    results["family_load_avg_1m_at_end"] = loads
    return results


def _load_avg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None
