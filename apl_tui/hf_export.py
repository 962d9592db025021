"""Preference records in TRL's formats, and a Hugging Face dataset folder (Parquet splits + card).

Plain prompts give TRL's *standard* preference rows (prompt, chosen, rejected as text); chat
prompts give its *conversational* rows (prompt as the message list, chosen and rejected as one
assistant message each). One dataset holds one of the two: TRL tokenizes a whole dataset one way.

The folder `write_hf_dataset` makes is what the Hub and `datasets` expect::

    DIR/README.md                               dataset card (YAML header + counts and provenance)
    DIR/data/train-00000-of-00001.parquet
    DIR/data/test-00000-of-00001.parquet        (absent when the test split is empty)

so ``datasets.load_dataset("parquet", data_dir=DIR)`` (or ``load_dataset(DIR)``) gives a
DatasetDict with "train" and "test".
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apl_tui.atomic import atomic_folder
from apl_tui.chat import preference_record
from apl_tui.errors import AplError

SPLIT_FILES = {"train": "data/train-00000-of-00001.parquet", "test": "data/test-00000-of-00001.parquet"}


def _plain(v: Any) -> Any:
    return v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v


def trl_records(cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows of `queries.export_rows` as dicts, prompt/chosen/rejected in TRL's format for each prompt."""
    out = []
    for r in rows:
        rec = {k: _plain(v) for k, v in zip(cols, r)}
        rec.update(preference_record(rec["prompt"], rec["chosen"], rec["rejected"]))
        out.append(rec)
    return out


def check_one_format(records: Sequence[dict[str, Any]]) -> str:
    """'conversational' or 'standard'; raises when a store mixes chat and plain prompts."""
    kinds = {isinstance(r["prompt"], list) for r in records}
    if len(kinds) > 1:
        raise AplError("the labels mix chat prompts and plain prompts; a Parquet dataset holds one format",
                       hint="export JSONL (one format per line), or split the store's prompts into two stores")
    return "conversational" if kinds == {True} else "standard"


def _draw(prompt: Any) -> float:
    key = repr(prompt).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64


def assign_splits(prompts: Sequence[Any], test_share: float) -> list[str]:
    """'train' or 'test' per row: a stable `test_share` of the distinct prompts (by a hash) is test.

    All pairs of one prompt land in the same split, so test prompts are never seen in training.
    With a positive share and two or more prompts, at least one prompt is test.
    """
    draws = {repr(p): _draw(p) for p in prompts}
    test = {k for k, d in draws.items() if d < test_share}
    if test_share > 0 and not test and len(draws) >= 2:
        test = {min(draws, key=draws.__getitem__)}
    return ["test" if repr(p) in test else "train" for p in prompts]


def write_hf_dataset(records: Sequence[dict[str, Any]], dest: Path, *, test_share: float = 0.1,
                     ties: str = "drop") -> dict[str, int]:
    """Write `records` (from `trl_records`) as a dataset folder; returns rows per split.

    The folder is written next to `dest` and renamed into place, so a failure leaves nothing.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    dest = Path(dest)
    if not records:
        raise AplError("no preference labels to export yet", hint="label some pairs (or import chosen/rejected)")
    if not 0 <= test_share < 1:
        raise AplError(f"--test-share {test_share} is outside [0, 1)", hint="e.g. 0.1")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AplError(f"{dest} exists and is not an empty folder", hint="give a new folder")
    fmt = check_one_format(records)
    table = pa.Table.from_pylist(list(records))
    splits = assign_splits([r["prompt"] for r in records], test_share)
    marks = pa.array(splits)
    counts: dict[str, int] = {}
    with atomic_folder(dest) as tmp:  # an empty `dest` is replaced; anything else was refused above
        (tmp / "data").mkdir()
        for split, name in SPLIT_FILES.items():
            part = table.filter(pc.equal(marks, split))
            counts[split] = part.num_rows
            if part.num_rows:  # `datasets` cannot read a zero-row Parquet file: leave the split out
                pq.write_table(part, tmp / name)
        (tmp / "README.md").write_text(dataset_card(records, counts, fmt=fmt, ties=ties, test_share=test_share),
                                       encoding="utf-8")
    return counts


def _table_md(title: str, counter: Counter[Any]) -> str:
    lines = [f"| {title} | pairs |", "|---|---|"]
    lines += [f"| {k if k is not None else '(none)'} | {n:,} |" for k, n in counter.most_common()]
    return "\n".join(lines)


def dataset_card(records: Sequence[dict[str, Any]], counts: dict[str, int], *, fmt: str, ties: str,
                 test_share: float) -> str:
    """The README.md of the dataset folder: YAML header for the Hub, then counts and provenance."""
    from apl_tui import __version__

    tie_rows = sum(1 for r in records if r.get("outcome") == "tie")
    tie_policy = ("ties dropped; both-bad verdicts and skips are never exported" if ties == "drop" else
                  f"ties exported in both orders ({tie_rows:,} rows, two per tie): they pull the two "
                  "completions together; both-bad verdicts and skips are never exported")
    prompts = {repr(r["prompt"]) for r in records}
    acquisition = _table_md("acquisition", Counter(r.get("acquisition") or "none (imported or labeled outside the app)"
                                                   for r in records))
    sources = _table_md("label source", Counter(r.get("source") for r in records))
    outcomes = _table_md("outcome", Counter(r.get("outcome") for r in records))
    shape = "as message lists" if fmt == "conversational" else "as text"
    train_rows, test_rows = counts.get("train", 0), counts.get("test", 0)
    files = "".join(f"  - split: {split}\n    path: {name}\n" for split, name in SPLIT_FILES.items()
                    if counts.get(split))
    return f"""---
configs:
- config_name: default
  data_files:
{files}tags:
- dpo
- preference
- apl-tui
---

# Preference pairs from apl-tui

Exported by apl-tui {__version__} on {dt.date.today().isoformat()}: labels of an active preference
learning run, in TRL's **{fmt}** preference format (`prompt`, `chosen`, `rejected` {shape}), ready for `trl.DPOTrainer`.

```python
from datasets import load_dataset
ds = load_dataset("parquet", data_dir="THIS_FOLDER")   # or load_dataset("THIS_FOLDER")
```

## Counts

| split | pairs |
|---|---|
| train | {train_rows:,} |
| test | {test_rows:,} |

{len(records):,} rows over {len(prompts):,} prompts. The test split is a fixed {test_share:.0%} of the
prompts (by a hash of the prompt text; at least one), so a prompt's pairs never straddle the two
splits. An empty split has no file (`datasets` cannot read a zero-row Parquet file).

## Labels

{sources}

{outcomes}

Tie policy: {tie_policy}.

## Acquisition

How each labeled pair was picked (apl-tui's acquisition function at the time it was shown;
Muldrew et al. 2024):

{acquisition}

## Columns

`prompt`, `chosen`, `rejected` (TRL); `pair_id` (the store's candidate id), `outcome` (a/b/tie in
the candidate's own terms), `shown_left` (which completion was on the left), `source` (human,
oracle name, or `imported`), `labeled_at`, `acquisition`, `score`, `adapter_version` (the adapter
whose score picked the pair).
"""
