"""The machine's limit: measured matrix-multiply throughput of the device, in the model's dtype.

Two products: a square one (2048² on the CPU, 8192² on a GPU) and one shaped like SmolLM2's MLP
up-projection, (tokens × 576)·(576 × 1536). The faster median is the peak that scoring and
training are compared against ("fraction of peak" in the report).
"""

from __future__ import annotations

from typing import Any

from apl_tui.bench.timing import Stat, interleave, synchronizer
from apl_tui.bench.workload import BenchContext

TRAIN_FLOPS_FACTOR = 2.0
"""Forward + backward of a LoRA step ≈ 2 × the forward: the frozen base weights need gradients
of their inputs (≈ 1 forward) but none of their own; the LoRA weights' are negligible. (Full
fine-tuning would be ≈ 3×.)"""


def matmul_peak(device: str, dtype: Any, *, repeats: int) -> dict[str, Any]:
    """Median GFLOP/s of the two products (and which was faster)."""
    import torch

    gpu = device.startswith("cuda")
    gen = torch.Generator().manual_seed(0)
    square = 8192 if gpu else 2048
    rows = 12_800 * (8 if gpu else 1)
    shapes = {"square": (square, square, square), "mlp": (rows, 576, 1536)}
    operands = {name: (torch.randn(m, k, generator=gen).to(device, dtype),
                       torch.randn(k, n, generator=gen).to(device, dtype))
                for name, (m, k, n) in shapes.items()}

    def product(name: str) -> Any:
        a, b = operands[name]
        return lambda: torch.matmul(a, b)

    times = interleave({name: product(name) for name in shapes}, warmup=1, repeats=max(repeats, 3),
                       sync=synchronizer(device))
    out: dict[str, Any] = {"peak_dtype": str(dtype).removeprefix("torch.")}
    best = 0.0
    for name, (m, k, n) in shapes.items():
        gflops = 2.0 * m * k * n / Stat.of(times[name]).median / 1e9
        out[f"matmul_{name}_gflops"] = gflops
        best = max(best, gflops)
    out["matmul_peak_gflops"] = best
    return out


def run(ctx: BenchContext) -> dict[str, Any]:
    """The measured peak of the policy's device, in the policy's dtype."""
    import torch

    ctx.log("machine: matmul peak")
    dtype = next(ctx.policy.base.parameters()).dtype
    out = matmul_peak(ctx.device, dtype, repeats=ctx.sizes.repeats)
    out["torch_threads"] = torch.get_num_threads()
    return out


def fractions(results: dict[str, Any]) -> dict[str, Any]:
    """Achieved FLOP/s of scoring and of a DPO step as fractions of the measured peak."""
    peak = results.get("matmul_peak_gflops")
    out: dict[str, Any] = {}
    if not peak:
        return out
    if "scoring_gflops_per_s" in results:
        out["scoring_fraction_of_peak"] = results["scoring_gflops_per_s"] / peak
    if "dpo_step_gflops_per_s" in results:
        out["train_fraction_of_peak"] = results["dpo_step_gflops_per_s"] / peak
    out["train_flops_factor"] = TRAIN_FLOPS_FACTOR
    return out
