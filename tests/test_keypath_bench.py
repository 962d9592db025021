"""The key-path bench family: the desk's per-call split, and the whole family on tiny sizes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from apl_tui.bench import BenchOptions, BenchSizes, run_bench
from apl_tui.bench.keypath import desk_split
from apl_tui.bench.report import table
from apl_tui.bench.storage import build_store


def test_desk_split_times_every_call_and_uses_the_picks_made_ahead(tmp_path: Path) -> None:
    store = build_store(tmp_path / "s", 600, labeled=100)
    try:
        split = desk_split(store, cycles=6, think_s=0.05)
        assert store.counters() == store.recounted()  # the measurement labels through the real paths
    finally:
        store.close()
    assert split.pop("read_ahead_used") == [6.0]
    for name, values in split.items():
        assert len(values) == 6 and all(math.isfinite(v) and v > 0 for v in values), name


@pytest.mark.integration
def test_keypath_family_on_tiny_sizes(model_cache: Path) -> None:
    sizes = BenchSizes(warmup=0, repeats=1, ui_labels=5, keypath_labels=(1_000, 2_000), keypath_pool=1_000,
                       keypath_cycles=3, keypath_training_labels=2_000)
    results: dict[str, Any] = run_bench(BenchOptions(model="tiny-random", device="cpu", cache_dir=model_cache,
                                                     sizes=sizes, only=("keypath",)))
    assert not [k for k in results if k.endswith("_error")], results
    for key in ("keypath_frame_p99_ms_1k", "keypath_frame_p99_ms_2k", "keypath_frame_p99_ms_2k_training",
                "keypath_key_p50_ms_1k", "keypath_label_p50_ms_2k", "keypath_status_p50_ms_2k"):
        assert isinstance(results[key], float) and results[key] > 0, key
    assert "keypath_frame_p99_ms_1k_training" not in results
    assert table(results).row_count >= 3
