"""Store and start-up: next-pair and label latency at 10k–1M candidates, export, import, help, first frame.

Big stores are built the way a bulk load would: `INSERT … SELECT … FROM range(n)` into prompts,
candidates (with cached reference log-probs), scores and labels, without the lookup indexes, then
the queue, indexes and counters are rebuilt from that log by the migrations' own SQL
(`migrations.rebuild_derived_sql`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from apl_tui.bench.timing import Stat
from apl_tui.bench.workload import BenchContext

FILLER = "the film was a wonderful story with great acting and a moving ending"


def build_store(root: Path, n: int, *, labeled: int = 0) -> Any:
    """A store with n train prompts, one scored candidate each; the first `labeled` carry a label.

    Scores are a deterministic hash in [0, 1) by adapter v1 under 'hybrid'. Returns the open Store.
    """
    from apl_tui import migrations
    from apl_tui.store import Store

    store = Store.create(root)
    with store.transaction() as cur:
        cur.execute(migrations.BULK_LOAD_BEGIN)
        cur.execute("INSERT INTO prompts (text, split, source) "
                    "SELECT 'Prompt ' || i || ': ' || ?, 'train', 'bench' FROM range(?) t(i)", [FILLER, n])
        cur.execute("INSERT INTO candidates (prompt_id, completion_a, completion_b, tokens_a, tokens_b, "
                    "adapter_version, temperature, top_p, max_new_tokens, ref_logp_a, ref_logp_b) "
                    "SELECT i + 1, 'alpha ' || i || ' ' || ?, 'beta ' || i || ' ' || ?, 20, 20, 0, 0.7, 1.0, 24, "
                    "-40.0 - (i % 7), -41.0 - (i % 5) FROM range(?) t(i)", [FILLER, FILLER, n])
        cur.execute("INSERT INTO scores (candidate_id, adapter_version, acquisition, score, entropy, reward_a, "
                    "reward_b, p_a) SELECT i + 1, 1, 'hybrid', (hash(i) % 1000003) / 1000003.0, 1.5, 0.1, -0.1, "
                    "0.55 FROM range(?) t(i)", [n])
        if labeled:
            cur.execute("INSERT INTO labels (candidate_id, outcome, shown_left, source) "
                        "SELECT i + 1, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 'a', 'human' FROM range(?) t(i)",
                        [labeled])
        # The migrations' own SQL rebuilds the queue, indexes and counters from the log (run here
        # directly: forgetting versions would re-run unrelated later migrations too).
        cur.execute(migrations.rebuild_derived_sql())
    store.close()
    return Store(root)


def cycle_latency(store: Any, *, warmup: int, repeats: int) -> tuple[Stat, Stat]:
    """(next-pair query, label insert) seconds over alternating best_unlabeled → record_label."""
    nxt: list[float] = []
    ins: list[float] = []
    for r in range(warmup + repeats):
        t0 = time.perf_counter()
        shown = store.best_unlabeled("hybrid")
        t1 = time.perf_counter()
        store.record_label(int(shown["candidate_id"]), "a", source="bench", shown_left="a")
        t2 = time.perf_counter()
        if r >= warmup:
            nxt.append(t1 - t0)
            ins.append(t2 - t1)
    return Stat.of(nxt), Stat.of(ins)


def export_seconds(store: Any, path: Path) -> float:
    """`apl export`'s work: `export_rows` plus writing JSONL (timestamps as ISO strings)."""
    import datetime as dt

    from apl_tui.queries import export_rows

    t0 = time.perf_counter()
    cols, rows = export_rows(store.cursor())
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            rec = {k: v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v for k, v in zip(cols, r)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return time.perf_counter() - t0


def import_seconds(root: Path, n: int) -> tuple[float, float]:
    """(first, repeated) seconds of `apl import`'s work for n JSONL prompts: parse, then one bulk insert.

    The repeat imports the same file again, all duplicates (it used to take as long as the first).
    """
    from apl_tui.importer import read_prompts
    from apl_tui.store import Store

    path = root.with_suffix(".jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Prompt {i}: {FILLER}"}) + "\n")
    store = Store.create(root)
    try:
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            store.add_prompts(read_prompts(path), split="train", source=path.name)
            times.append(time.perf_counter() - t0)
    finally:
        store.close()
    return times[0], times[1]


FIRST_FRAME = """
import asyncio, json, sys, time
from apl_tui.desk import LabelDesk
from apl_tui.store import Store
from apl_tui.tui.app import LabelApp

store = Store(sys.argv[1])
app = LabelApp(LabelDesk(store))
seen = {}

async def first_frame(pilot):
    # Wait until the label screen shows a pair, then for the refresh that paints it.
    deadline = time.monotonic() + 30
    while getattr(app.screen, "shown", None) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    painted = asyncio.Event()
    app.call_after_refresh(painted.set)
    await asyncio.wait_for(painted.wait(), 10)
    seen["t"] = time.time()
    seen["torch"] = "torch" in sys.modules
    app.exit()

app.run(headless=True, size=(120, 40), auto_pilot=first_frame)
store.close()
print(json.dumps(seen))
"""


def first_frame_seconds(root: Path) -> tuple[float, bool]:
    """Seconds from spawning a process to the TUI's first painted pair; whether torch got imported."""
    started = time.time()
    done = subprocess.run([sys.executable, "-c", FIRST_FRAME, str(root)], capture_output=True, text=True,
                          check=True, timeout=120)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    return seen["t"] - started, bool(seen["torch"])


def help_seconds() -> float:
    """Wall seconds of `apl --help` (as `python -m apl_tui --help`)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "apl_tui", "--help"], capture_output=True, check=True, timeout=60)
    return time.perf_counter() - t0


def run(ctx: BenchContext) -> dict[str, Any]:
    """Latencies at each store size, export, `apl --help` and first frame."""
    sizes = ctx.sizes
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="apl-bench-store-") as tmp:
        for n in sizes.store_sizes:
            ctx.log(f"store: building {n:,} candidates")
            t0 = time.perf_counter()
            store = build_store(Path(tmp) / f"s{n}", n)
            out[f"store_build_s_{_tag(n)}"] = time.perf_counter() - t0
            try:
                nxt, ins = cycle_latency(store, warmup=3, repeats=sizes.store_repeats)
            finally:
                store.close()
            out[f"store_next_pair_ms_{_tag(n)}"] = nxt.median * 1000
            out[f"store_label_insert_ms_{_tag(n)}"] = ins.median * 1000
            out[f"store_cycle_{_tag(n)}"] = {"next_pair_s": nxt.to_dict(), "label_insert_s": ins.to_dict()}
        out.setdefault("store_next_pair_ms_1m", None)
        out.setdefault("store_label_insert_ms_1m", None)
        ctx.log(f"store: exporting {sizes.export_labels:,} labels")
        store = build_store(Path(tmp) / "export", sizes.export_labels, labeled=sizes.export_labels)
        try:
            out["export_100k_s" if sizes.export_labels == 100_000 else f"export_{_tag(sizes.export_labels)}_s"] = (
                export_seconds(store, Path(tmp) / "export.jsonl"))
        finally:
            store.close()
        ctx.log(f"store: importing {sizes.export_labels:,} prompts, then the same file again")
        first, again = import_seconds(Path(tmp) / "import", sizes.export_labels)
        out[f"import_{_tag(sizes.export_labels)}_s"] = first
        out[f"reimport_{_tag(sizes.export_labels)}_s"] = again
        ctx.log("store: apl --help and the TUI's first frame, in subprocesses")
        out["help_s"] = Stat.of([help_seconds() for _ in range(sizes.process_runs)]).median
        # The smallest store: thousands of unlabeled pairs left, like a real session's pool.
        frames = [first_frame_seconds(Path(tmp) / f"s{sizes.store_sizes[0]}") for _ in range(sizes.process_runs)]
        out["tui_first_frame_s"] = Stat.of([f for f, _ in frames]).median
        out["tui_first_frame_imports_torch"] = any(t for _, t in frames)
    return out


def _tag(n: int) -> str:
    """10_000 → '10k', 1_000_000 → '1m'."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)
