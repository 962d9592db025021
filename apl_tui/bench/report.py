"""The results table: family, measurement, value, what it is compared with, ✓/✗ against the targets.

Targets come from issue 8 (the compass); they are met or missed in this table, never asserted in
tests. A target that only applies to some runs (60 % of peak: the embedded model on the CPU)
shows no mark elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apl_tui.bench.dpo_step import TRL_MISSING

Check = Callable[[dict[str, Any]], bool | None]


@dataclass(frozen=True)
class Row:
    """One line of the table, read from the results dict."""

    family: str
    label: str
    key: str
    fmt: str
    """A format spec for the value, e.g. '.1f'; 'x' shows a ratio as 2.3×, '%' a fraction as 41 %."""
    compare: Callable[[dict[str, Any]], str] = lambda r: ""
    check: Check = lambda r: None


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a"
    if fmt == "x":
        return f"{value:.2f}×"
    if fmt == "%":
        return f"{100 * value:.1f} %"
    return format(value, fmt)


def _at_least(key: str, target: float) -> Check:
    return lambda r: None if r.get(key) is None else r[key] >= target


def _at_most(key: str, target: float) -> Check:
    return lambda r: None if r.get(key) is None else r[key] <= target


def _tolerance(r: dict[str, Any]) -> float:
    """Agreement expected between two exact computations: fp32 on the CPU, bf16/fp16 on a GPU."""
    return 1e-3 if r.get("peak_dtype", "float32") == "float32" else 0.5


def _agree(key: str) -> Check:
    return lambda r: None if r.get(key) is None else r[key] <= _tolerance(r)


def _peak_target(r: dict[str, Any]) -> bool | None:
    env = r.get("environment", {})
    if r.get("scoring_fraction_of_peak") is None or env.get("model") != "smollm2-135m" or env.get("device") != "cpu":
        return None
    return bool(r["scoring_fraction_of_peak"] >= 0.6)


def _g(r: dict[str, Any], key: str, fmt: str) -> str:
    return _fmt(r.get(key), fmt)


ROWS = (
    Row("scoring", "ours: sequences/s", "scoring_seqs_per_s", ".1f",
        lambda r: f"naive {_g(r, 'scoring_naive_seqs_per_s', '.1f')}"),
    Row("scoring", "ours: tokens/s", "scoring_tokens_per_s", ".0f",
        lambda r: f"naive {_g(r, 'scoring_naive_tokens_per_s', '.0f')}"),
    Row("scoring", "speedup vs naive", "scoring_speedup_vs_naive", "x", lambda r: "target ≥ 1.5×",
        _at_least("scoring_speedup_vs_naive", 1.5)),
    Row("scoring", "max |Δ log π| vs naive", "scoring_max_abs_diff_policy", ".1e",
        lambda r: f"same log-probs (≤ {_tolerance(r):g}); reference {_g(r, 'scoring_max_abs_diff_reference', '.1e')}",
        _agree("scoring_max_abs_diff_policy")),
    Row("machine", "matmul peak GFLOP/s", "matmul_peak_gflops", ".1f",
        lambda r: f"square {_g(r, 'matmul_square_gflops', '.0f')}, MLP-shaped {_g(r, 'matmul_mlp_gflops', '.0f')} "
                  f"({r.get('peak_dtype', '?')})"),
    Row("machine", "scoring fraction of peak", "scoring_fraction_of_peak", "%",
        lambda r: f"{_g(r, 'scoring_gflops_per_s', '.1f')} GFLOP/s; target ≥ 60 % (smollm2-135m, CPU)", _peak_target),
    Row("machine", "DPO step fraction of peak", "train_fraction_of_peak", "%",
        lambda r: f"{_g(r, 'dpo_step_gflops_per_s', '.1f')} GFLOP/s (fwd+bwd = {r.get('train_flops_factor', 2):g}× fwd)"),
    Row("dpo", "ours: pairs/s", "dpo_pairs_per_s", ".2f",
        lambda r: "TRL " + (_g(r, "dpo_trl_pairs_per_s", ".2f") if r.get("dpo_trl_pairs_per_s") else TRL_MISSING)),
    Row("dpo", "step speedup vs TRL DPOTrainer", "dpo_step_speedup_vs_trl", "x", lambda r: "target ≥ 1.0×",
        _at_least("dpo_step_speedup_vs_trl", 1.0)),
    Row("entropy", "ours: ms per prompt", "entropy_s_per_prompt_ms", ".1f",
        lambda r: f"generate-then-rescore {_fmt(_ms(r, 'entropy_naive_s_per_prompt'), '.1f')}"),
    Row("entropy", "speedup vs naive", "entropy_speedup_vs_naive", "x"),
    Row("entropy", "max |Δ entropy| vs naive", "entropy_max_abs_diff", ".1e",
        lambda r: f"same estimate (≤ {_tolerance(r):g})", _agree("entropy_max_abs_diff")),
    Row("ui", "key → next pair p50 ms", "ui_next_pair_p50_ms", ".1f",
        lambda r: f"while training {_g(r, 'ui_next_pair_p50_ms_training', '.1f')}"),
    Row("ui", "key → next pair p99 ms", "ui_next_pair_p99_ms", ".1f",
        lambda r: f"target ≤ 50; engine per label: label {_g(r, 'ui_engine_record_label_ms', '.1f')}, "
                  f"next {_g(r, 'ui_engine_next_pair_ms', '.1f')}, status {_g(r, 'ui_engine_status_ms', '.1f')} ms",
        _at_most("ui_next_pair_p99_ms", 50)),
    Row("ui", "p99 ms while training", "ui_next_pair_p99_ms_training", ".1f",
        lambda r: f"target ≤ 50 ({r.get('ui_training_steps_during', 0)} DPO steps ran meanwhile)",
        _at_most("ui_next_pair_p99_ms_training", 50)),
    Row("store", "next pair ms at 10k", "store_next_pair_ms_10k", ".2f"),
    Row("store", "next pair ms at 100k", "store_next_pair_ms_100k", ".2f"),
    Row("store", "next pair ms at 1M", "store_next_pair_ms_1m", ".2f", lambda r: "target ≤ 10",
        _at_most("store_next_pair_ms_1m", 10)),
    Row("store", "label insert ms at 1M", "store_label_insert_ms_1m", ".2f",
        lambda r: f"10k {_g(r, 'store_label_insert_ms_10k', '.2f')}, 100k {_g(r, 'store_label_insert_ms_100k', '.2f')}"),
    Row("store", "export 100k labels s", "export_100k_s", ".2f", lambda r: "export_rows + JSONL"),
    Row("store", "apl --help s", "help_s", ".3f", lambda r: "target ≤ 0.5", _at_most("help_s", 0.5)),
    Row("store", "TUI first frame s", "tui_first_frame_s", ".2f",
        lambda r: "torch not imported" if r.get("tui_first_frame_imports_torch") is False else "torch imported!",
        lambda r: None if r.get("tui_first_frame_imports_torch") is None else not r["tui_first_frame_imports_torch"]),
    Row("memory", "training peak RSS MB", "train_peak_rss_mb", ".0f",
        lambda r: f"weights {_g(r, 'weights_mb', '.0f')} MB (×{_g(r, 'train_rss_over_weights', '.1f')}); "
                  f"after load {_g(r, 'loaded_peak_rss_mb', '.0f')} MB"),
)


def _ms(r: dict[str, Any], key: str) -> float | None:
    return None if r.get(key) is None else 1000 * r[key]


def table(results: dict[str, Any]) -> Any:
    """A Rich table of the rows whose family ran (or failed), plus one line per failed family."""
    from rich.table import Table
    from rich.text import Text

    r = dict(results)
    r["entropy_s_per_prompt_ms"] = _ms(r, "entropy_s_per_prompt")
    env = r.get("environment", {})
    title = (f"apl bench: {env.get('model')} on {env.get('device')} ({env.get('device_name')}, "
             f"{env.get('torch_threads')} threads{', quick' if env.get('quick') else ''})")
    out = Table("family", "measurement", "value", "comparison / target", "", title=title)
    ran = set(r.get("family_seconds", {})) - {key.removesuffix("_error") for key in r if key.endswith("_error")}
    for row in ROWS:
        if row.family not in ran:
            continue
        ok = row.check(r)
        # Text, not markup: the consoles print markup as it is (user text may hold brackets).
        mark = Text("") if ok is None else (Text("✓", "green") if ok else Text("✗", "red"))
        out.add_row(row.family, row.label, _fmt(r.get(row.key), row.fmt), row.compare(r), mark)
    for key, value in r.items():
        if key.endswith("_error"):
            out.add_row(key.removesuffix("_error"), "failed", "—", str(value), Text("✗", "red"))
    return out
