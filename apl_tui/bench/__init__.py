"""`apl bench`: how fast apl-tui is, against its peers and against the machine's limit.

One module per measurement family (scoring, projection, machine, dpo_step, entropy, ui, storage, memory),
each with `run(ctx) -> dict`; `runner.run_bench` runs them and `report.table` draws the result.
Every comparison is measured side by side in the same run: ratios hold on a noisy machine,
absolute times do not.
"""

from __future__ import annotations

from apl_tui.bench.runner import FAMILIES, STABLE_KEYS, run_bench
from apl_tui.bench.workload import BenchOptions, BenchSizes

__all__ = ["FAMILIES", "STABLE_KEYS", "BenchOptions", "BenchSizes", "run_bench"]
