"""The machine's limit: measured matrix-multiply throughput of the device, in the model's dtype.

Two products: a square one (2048² on the CPU, 8192² on a GPU) and one shaped like SmolLM2's MLP
up-projection, (tokens × 576)·(576 × 1536). The `machine` family times them on their own (the
faster median is reported as the machine's peak). "Fraction of peak" is NOT read from that
number: on a shared machine the peak moves with the load (15.8 → 7.1 GFLOP/s within one run was
seen), so scoring and DPO each run a `PeakProbe` as one more contender in their own interleaved
repeats, and divide by the peak measured alongside them, in wall time and in CPU time.
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


class PeakProbe:
    """One run of both products (square and MLP-shaped), timed as a contender beside a workload."""

    def __init__(self, device: str, dtype: Any) -> None:
        import torch

        gpu = device.startswith("cuda")
        gen = torch.Generator().manual_seed(0)
        square = 8192 if gpu else 2048
        rows = 12_800 * (8 if gpu else 1)
        shapes = [(square, square, square), (rows, 576, 1536)]
        self.operands = [(torch.randn(m, k, generator=gen).to(device, dtype),
                          torch.randn(k, n, generator=gen).to(device, dtype)) for m, k, n in shapes]
        self.flops = sum(2.0 * m * k * n for m, k, n in shapes)
        """FLOPs of one call."""

    def __call__(self) -> None:
        import torch

        for a, b in self.operands:
            torch.matmul(a, b)


def run(ctx: BenchContext) -> dict[str, Any]:
    """The measured peak of the policy's device, in the policy's dtype."""
    import torch

    ctx.log("machine: matmul peak")
    dtype = next(ctx.policy.base.parameters()).dtype
    out = matmul_peak(ctx.device, dtype, repeats=ctx.sizes.repeats)
    out["torch_threads"] = torch.get_num_threads()
    return out


def fractions(results: dict[str, Any]) -> dict[str, Any]:
    """Achieved FLOP/s of scoring and of a DPO step as fractions of the peak measured alongside each.

    `<family>_peak_gflops` (wall) and `<family>_peak_cpu_gflops` (per CPU second) come from the
    family's own interleaved PeakProbe runs; `<family>_cpu_gflops` is the workload's FLOPs per
    CPU second.
    """
    out: dict[str, Any] = {"train_flops_factor": TRAIN_FLOPS_FACTOR}
    # CPU time says nothing about a GPU's work (the host thread mostly waits for it).
    gpu = str(results.get("environment", {}).get("device", "cpu")).startswith("cuda")
    for family, work, name in (("scoring", "scoring", "scoring"), ("dpo", "dpo_step", "train")):
        peak, peak_cpu = results.get(f"{family}_peak_gflops"), results.get(f"{family}_peak_cpu_gflops")
        got, got_cpu = results.get(f"{work}_gflops_per_s"), results.get(f"{work}_cpu_gflops")
        if peak and got is not None:
            out[f"{name}_fraction_of_peak"] = got / peak
        if peak_cpu and got_cpu is not None and not gpu:
            out[f"{name}_fraction_of_peak_cpu"] = got_cpu / peak_cpu
    return out
