"""Memory: peak RSS of a fresh process that loads the model and trains a few DPO steps.

Run in a subprocess so the peak belongs to training alone, not to the rest of the bench:
`python -m apl_tui.bench.memory SPEC DEVICE CACHE_DIR STEPS SEED` prints one JSON line.
The peak is the process's own `VmHWM` (Linux /proc/self/status), which starts afresh at exec.
`ru_maxrss` does not: a child started by fork + exec reports its parent's peak when that is
higher (a child of the bench read 1511 MB with an 11 MB peak of its own). Where there is no
/proc (macOS), ru_maxrss is the fallback, and the result says which was read.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from apl_tui.bench.workload import BenchContext


def _peak_rss_mb() -> tuple[float, str]:
    """(This process's peak resident set so far in MB, where it was read)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "VmHWM"  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1), "ru_maxrss"  # macOS bytes, Linux KiB


def measure(spec: str, device: str, cache_dir: Path, steps: int, seed: int) -> dict[str, Any]:
    """Load, then train `steps` DPO steps of 8 pairs; peak RSS after each phase, weight size."""
    from apl_tui.bench.workload import BenchOptions, load_policy, make_pairs, model_size
    from apl_tui.config import TrainConfig
    from apl_tui.dpo import train_dpo

    policy = load_policy(BenchOptions(model=spec, device=device, cache_dir=cache_dir, seed=seed))
    loaded, source = _peak_rss_mb()
    pairs = make_pairs(policy.tokenizer, 8 * steps, seed=seed + 3)
    prompts = [p.prompt for p in pairs]
    ref_c = policy.reference_logps(prompts, [p.chosen for p in pairs]).tolist()
    ref_r = policy.reference_logps(prompts, [p.rejected for p in pairs]).tolist()
    train_dpo(policy, pairs, ref_c, ref_r, TrainConfig(epochs=1, batch_size=8, warmup_steps=0))
    return {"weights_mb": model_size(policy.base).weights_bytes / 2**20, "loaded_peak_rss_mb": loaded,
            "train_peak_rss_mb": _peak_rss_mb()[0], "peak_rss_source": source}


def run(ctx: BenchContext) -> dict[str, Any]:
    """Peak RSS of a training subprocess against the size of the model's weights."""
    opts = ctx.opts
    ctx.log(f"memory: {ctx.sizes.memory_steps} DPO steps in a fresh process")
    done = subprocess.run([sys.executable, "-m", "apl_tui.bench.memory", opts.model, opts.device,
                           str(opts.cache_dir), str(ctx.sizes.memory_steps), str(opts.seed)],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory subprocess failed: {tail}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["train_rss_over_weights"] = out["train_peak_rss_mb"] / out["weights_mb"]
    return out


if __name__ == "__main__":
    spec_, device_, cache_, steps_, seed_ = sys.argv[1:6]
    print(json.dumps(measure(spec_, device_, Path(cache_), int(steps_), int(seed_))))
