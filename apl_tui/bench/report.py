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



def _keypath_rows() -> tuple[Row, ...]:
    """The key path per label-log size: key → frame, the desk's calls with and without read-ahead.

    Rows for sizes a run did not measure (the quick preset's 10k, the full one's 1k/100k/1M) are left out.
    """
    rows: list[Row] = []
    for tag, name in (("1k", "1k"), ("10k", "10k"), ("100k", "100k"), ("1m", "1M")):
        rows += [
            Row("keypath", f"key → pair written p99 ms, {name} labels", f"keypath_frame_p99_ms_{tag}", ".1f",
                lambda r, t=tag: f"p50 {_g(r, f'keypath_frame_p50_ms_{t}', '.1f')}; "
                                 f"{_g(r, 'keypath_pool', ',')} unlabeled candidates; target ≤ 16",
                _at_most(f"keypath_frame_p99_ms_{tag}", 16)),
            Row("keypath", f"desk per key p50 ms, {name} labels", f"keypath_key_p50_ms_{tag}", ".1f",
                lambda r, t=tag: f"label + next impression journaled (1 fsync), p99 "
                                 f"{_g(r, f'keypath_key_p99_ms_{t}', '.1f')}; in DuckDB "
                                 f"{_g(r, f'keypath_key_written_p50_ms_{t}', '.1f')} later (1 commit, off the key "
                                 f"path); status {_g(r, f'keypath_key_status_p50_ms_{t}', '.1f')}; picked ahead "
                                 f"{_g(r, f'keypath_ahead_p50_ms_{t}', '.1f')} (off the key path, used "
                                 f"{r.get(f'keypath_read_ahead_used_{t}', 0)}×)"),
            Row("keypath", f"without read-ahead p50 ms, {name} labels", f"keypath_label_p50_ms_{tag}", ".1f",
                lambda r, t=tag: f"label; next {_g(r, f'keypath_next_p50_ms_{t}', '.1f')}, impression "
                                 f"{_g(r, f'keypath_impression_p50_ms_{t}', '.1f')}, status "
                                 f"{_g(r, f'keypath_status_p50_ms_{t}', '.1f')}"),
        ]
        rows.append(Row("keypath", f"… while training, {name} labels", f"keypath_frame_p99_ms_{tag}_training", ".1f",
                        lambda r, t=tag: f"p50 {_g(r, f'keypath_frame_p50_ms_{t}_training', '.1f')}; target ≤ 50; "
                                         f"the app's learner meanwhile: {r.get('keypath_worker_train_steps', 0)} "
                                         "DPO steps",
                        _at_most(f"keypath_frame_p99_ms_{tag}_training", 50)))
    return tuple(rows)


ROWS = (
    Row("scoring", "ours: sequences/s", "scoring_seqs_per_s", ".1f",
        lambda r: f"naive {_g(r, 'scoring_naive_seqs_per_s', '.1f')}, "
                  f"batched full-vocabulary {_g(r, 'scoring_batched_seqs_per_s', '.1f')}"),
    Row("scoring", "ours: tokens/s", "scoring_tokens_per_s", ".0f",
        lambda r: f"naive {_g(r, 'scoring_naive_tokens_per_s', '.0f')}"),
    Row("scoring", "speedup vs naive", "scoring_speedup_vs_naive", "x",
        lambda r: "paper-style: pair by pair, full vocabulary, reference recomputed; target ≥ 4× "
                  f"(unshared {_g(r, 'scoring_unshared_speedup_vs_naive', 'x')})",
        _at_least("scoring_speedup_vs_naive", 4.0)),
    Row("scoring", "speedup vs unshared", "scoring_speedup_vs_unshared", "x",
        lambda r: "each prompt's pass shared by its 2 completions vs every row padded on its own; "
                  f"same log-probs to {_g(r, 'scoring_max_abs_diff_unshared', '.1e')}"),
    Row("scoring", "4 completions per prompt: vs naive", "scoring_group_speedup_vs_naive", "x",
        lambda r: f"{r.get('scoring_group_prompts', 'n/a')} prompts, {r.get('scoring_group_pairs', 'n/a')} pairs; "
                  f"vs unshared {_g(r, 'scoring_group_speedup_vs_unshared', 'x')}; same log-probs to "
                  f"{_g(r, 'scoring_group_max_abs_diff_policy', '.1e')}; target ≥ 4×",
        _at_least("scoring_group_speedup_vs_naive", 4.0)),
    Row("scoring", "speedup vs batched", "scoring_speedup_vs_batched", "x",
        lambda r: "batched, full vocabulary, reference cached too: our logits-only-where-needed alone"),
    Row("scoring", "max |Δ log π| vs naive", "scoring_max_abs_diff_policy", ".1e",
        lambda r: f"same log-probs (≤ {_tolerance(r):g}); unshared {_g(r, 'scoring_max_abs_diff_unshared', '.1e')}, "
                  f"batched {_g(r, 'scoring_max_abs_diff_batched', '.1e')}, "
                  f"reference {_g(r, 'scoring_max_abs_diff_reference', '.1e')}",
        _agree("scoring_max_abs_diff_policy")),
    Row("scoring", "scoring fraction of peak", "scoring_fraction_of_peak", "%",
        lambda r: f"{_g(r, 'scoring_gflops_per_s', '.1f')} of {_g(r, 'scoring_peak_gflops', '.1f')} GFLOP/s "
                  "measured alongside (wall); target ≥ 60 % (smollm2-135m, CPU)", _peak_target),
    Row("scoring", "scoring fraction of peak, CPU time", "scoring_fraction_of_peak_cpu", "%",
        lambda r: f"{_g(r, 'scoring_cpu_gflops', '.1f')} of {_g(r, 'scoring_peak_cpu_gflops', '.1f')} "
                  "GFLOP per CPU second"),
    Row("projection", "packed head: scoring speedup", "projection_scoring_speedup", "x",
        lambda r: "one 2-D head matmul vs the model's sliced head (logits_to_keep), LoRA loaded"),
    Row("projection", "packed head: training speedup", "projection_train_speedup", "x",
        lambda r: "the same, forward + backward of 8 pairs"),
    Row("projection", "max |Δ log π| packed vs sliced", "projection_max_abs_diff", ".1e",
        lambda r: f"same log-probs (≤ {_tolerance(r):g}); gradients {_g(r, 'projection_max_abs_grad_diff', '.1e')}",
        _agree("projection_max_abs_diff")),
    Row("machine", "matmul peak GFLOP/s, alone", "matmul_peak_gflops", ".1f",
        lambda r: f"square {_g(r, 'matmul_square_gflops', '.0f')}, MLP-shaped {_g(r, 'matmul_mlp_gflops', '.0f')} "
                  f"({r.get('peak_dtype', '?')}); not used for the fractions below"),
    Row("dpo", "ours: pairs/s", "dpo_pairs_per_s", ".2f",
        lambda r: (f"TRL {_g(r, 'dpo_trl_pairs_per_s', '.2f')} (reference recomputed), "
                   f"{_g(r, 'dpo_trl_precomputed_pairs_per_s', '.2f')} (precomputed)")
        if r.get("dpo_trl_pairs_per_s") else "TRL " + TRL_MISSING),
    Row("dpo", "speedup vs TRL DPOTrainer", "dpo_step_speedup_vs_trl", "x",
        lambda r: "TRL's default: reference recomputed every step; target ≥ 1.0×",
        _at_least("dpo_step_speedup_vs_trl", 1.0)),
    Row("dpo", "speedup vs TRL, reference precomputed", "dpo_step_speedup_vs_trl_precomputed", "x",
        lambda r: "precompute_ref_log_probs=True: the same work per step as ours"),
    Row("dpo", "DPO step fraction of peak", "train_fraction_of_peak", "%",
        lambda r: f"{_g(r, 'dpo_step_gflops_per_s', '.1f')} of {_g(r, 'dpo_peak_gflops', '.1f')} GFLOP/s alongside "
                  f"(wall; fwd+bwd = {r.get('train_flops_factor', 2):g}× fwd)"),
    Row("dpo", "DPO step fraction of peak, CPU time", "train_fraction_of_peak_cpu", "%",
        lambda r: f"{_g(r, 'dpo_step_cpu_gflops', '.1f')} of {_g(r, 'dpo_peak_cpu_gflops', '.1f')} "
                  "GFLOP per CPU second"),
    Row("entropy", "ours: ms per prompt", "entropy_s_per_prompt_ms", ".1f",
        lambda r: f"generate-then-rescore {_fmt(_ms(r, 'entropy_naive_s_per_prompt'), '.1f')}"),
    Row("entropy", "speedup vs naive", "entropy_speedup_vs_naive", "x"),
    Row("entropy", "max |Δ entropy| vs naive", "entropy_max_abs_diff", ".1e",
        lambda r: f"same estimate (≤ {_tolerance(r):g})", _agree("entropy_max_abs_diff")),
    Row("ui", "key → next pair written p50 ms", "ui_next_pair_p50_ms", ".1f",
        lambda r: f"while training {_g(r, 'ui_next_pair_p50_ms_training', '.1f')} "
                  "(frames rendered and written; terminal and stdin excluded)"),
    Row("ui", "key → next pair written p99 ms", "ui_next_pair_p99_ms", ".1f",
        lambda r: f"target ≤ 50; engine per label: label {_g(r, 'ui_engine_record_label_ms', '.1f')}, "
                  f"next {_g(r, 'ui_engine_next_pair_ms', '.1f')}, status {_g(r, 'ui_engine_status_ms', '.1f')} ms",
        _at_most("ui_next_pair_p99_ms", 50)),
    Row("ui", "p99 ms while training", "ui_next_pair_p99_ms_training", ".1f",
        lambda r: f"target ≤ 50; the app's worker meanwhile: {r.get('ui_worker_train_steps', 0)} DPO steps, "
                  f"{r.get('ui_worker_rounds_saved', 0)} rounds saved, {r.get('ui_worker_score_chunks_written', 0)} "
                  f"score chunks written; {r.get('ui_worker_labels_in_round', 0)}/{r.get('ui_labels', 0)} "
                  "labels during a round",
        _at_most("ui_next_pair_p99_ms_training", 50)),
    Row("store", "next pair ms at 10k", "store_next_pair_ms_10k", ".2f"),
    Row("store", "next pair ms at 100k", "store_next_pair_ms_100k", ".2f"),
    Row("store", "next pair ms at 1M", "store_next_pair_ms_1m", ".2f", lambda r: "target ≤ 10",
        _at_most("store_next_pair_ms_1m", 10)),
    Row("store", "label insert ms at 1M", "store_label_insert_ms_1m", ".2f",
        lambda r: f"10k {_g(r, 'store_label_insert_ms_10k', '.2f')}, "
                  f"100k {_g(r, 'store_label_insert_ms_100k', '.2f')}"),
    Row("store", "export 100k labels s", "export_100k_s", ".2f", lambda r: "export_rows + JSONL"),
    Row("store", "apl --help s", "help_s", ".3f", lambda r: "target ≤ 0.5", _at_most("help_s", 0.5)),
    Row("store", "TUI first frame s", "tui_first_frame_s", ".2f",
        lambda r: "torch not imported" if r.get("tui_first_frame_imports_torch") is False else "torch imported!",
        lambda r: None if r.get("tui_first_frame_imports_torch") is None else not r["tui_first_frame_imports_torch"]),
    Row("acquisition", "head refit s", "acq_head_fit_s", ".3f",
        lambda r: f"{r.get('acq_head_fit_labels')} labels, 5 members; target ≤ 1", _at_most("acq_head_fit_s", 1.0)),
    Row("acquisition", "selection s (slowest function)", "acq_select_s_max", ".3f",
        lambda r: f"{r.get('acq_pool_pairs')} pairs: gap-ucb {_g(r, 'acq_select_s_gap-ucb', '.3f')}, "
                  f"drts {_g(r, 'acq_select_s_drts', '.3f')}, dopt {_g(r, 'acq_select_s_dopt', '.3f')}, "
                  f"dopt+gap {_g(r, 'acq_select_s_dopt+gap', '.3f')}; target ≤ 1", _at_most("acq_select_s_max", 1.0)),
    Row("memory", "training peak RSS MB", "train_peak_rss_mb", ".0f",
        lambda r: f"{r.get('peak_rss_source', '?')} of a fresh process; weights {_g(r, 'weights_mb', '.0f')} MB "
                  f"(×{_g(r, 'train_rss_over_weights', '.1f')}); after load {_g(r, 'loaded_peak_rss_mb', '.0f')} MB"),
) + _keypath_rows()


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
        if row.family not in ran or (row.family == "keypath" and r.get(row.key) is None):
            continue
        ok = row.check(r)
        # Text, not markup: the consoles print markup as it is (user text may hold brackets).
        mark = Text("") if ok is None else (Text("✓", "green") if ok else Text("✗", "red"))
        out.add_row(row.family, row.label, _fmt(r.get(row.key), row.fmt), row.compare(r), mark)
    for key, value in r.items():
        if key.endswith("_error"):
            out.add_row(key.removesuffix("_error"), "failed", "—", str(value), Text("✗", "red"))
    return out
