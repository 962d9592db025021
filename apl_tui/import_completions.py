"""Import candidate completions (and optionally their verdicts) from .jsonl or .parquet, all or nothing.

Each row has a prompt (text, or a list of chat messages) and one of three shapes:

- ``"completions": [c1, c2, ...]`` (two or more, distinct): every unordered pair becomes one
  candidate, so n completions give n·(n−1)/2 candidates (3 → 3, 4 → 6). The store holds pairs, and
  acquisition then picks the most informative pair of the prompt; once one pair of a prompt is
  labeled its siblings leave the queue (unless `acquisition.allow_relabel_prompts`).
- ``"chosen"`` / ``"rejected"`` (TRL, HH-RLHF, UltraFeedback binarized): one candidate, chosen as
  completion A, with the verdict "a".
- ``"response_a"`` / ``"response_b"`` (Chatbot Arena style), with an optional ``"winner"``
  (a/b/tie/both_bad, or model_a/model_b/tie (bothbad)).

Verdicts become labels with source 'imported' (or are ignored, to relabel or audit a dataset).
A completion longer than the model allows is cut at a token boundary with one warning; pairs
whose two sides become identical by the cut are an error. Parsing and checking finish before the
store is touched, and the store writes everything in one transaction.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apl_tui.errors import ImportDataError
from apl_tui.importer import _check_prompt, _fail, json_lines
from apl_tui.rows import fetch_dicts

logger = logging.getLogger(__name__)

FORMATS = (".jsonl", ".parquet")
MAX_COMPLETIONS = 16
"""Completions per row; 16 already make 120 candidates for one prompt."""

_SHAPE_HINT = ('each row needs "prompt" and either "completions": [...] (2 or more), '
               '"chosen"/"rejected", or "response_a"/"response_b"')
_WINNERS = {"a": "a", "model_a": "a", "response_a": "a", "b": "b", "model_b": "b", "response_b": "b",
            "tie": "tie", "both_bad": "both_bad", "tie (bothbad)": "both_bad"}


@dataclass(frozen=True)
class CompletionRow:
    """One parsed row: a prompt (plain or canonical chat JSON), its completions and verdict.

    `verdict` is in terms of the first two completions ('a' = completions[0] is better), or None.
    """

    line: int
    prompt: str
    completions: tuple[str, ...]
    verdict: str | None = None


@dataclass(frozen=True)
class ImportedPair:
    """A candidate ready for the store: texts after any cut, token counts, EOS flags, verdict."""

    prompt: str
    completion_a: str
    completion_b: str
    tokens_a: int
    tokens_b: int
    eos_a: bool
    eos_b: bool
    outcome: str | None


@dataclass(frozen=True)
class ImportReport:
    """What an import did: rows read, rows written, and what was cut or skipped."""

    rows: int
    prompts_added: int
    candidates_added: int
    labels_added: int
    duplicates: int
    truncated: int
    max_completion_tokens: int


def _completion(path: Path, line: int, key: str, value: object) -> str:
    """A completion as text; TRL's conversational form (one assistant message) is accepted."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and value[0].get("role") == "assistant":
        value = value[0].get("content")
    elif isinstance(value, list):
        raise _fail(path, line, f"{key} is a list of {len(value)} messages, not one completion",
                    "give the prompt's messages in \"prompt\" and only the answer in " + key)
    if not isinstance(value, str):
        raise _fail(path, line, f"{key} must be text, got {type(value).__name__}", _SHAPE_HINT)
    if not value.strip():
        raise _fail(path, line, f"{key} is empty", "remove the row or give every completion text")
    return value


def _verdict(path: Path, line: int, value: object) -> str | None:
    if value is None or value == "":
        return None
    key = str(value).strip().lower()
    if key not in _WINNERS:
        raise _fail(path, line, f"winner {value!r} is not a/b/tie/both_bad", "use a, b, tie or both_bad")
    return _WINNERS[key]


def parse_row(path: Path, line: int, obj: object) -> CompletionRow:
    """Check one row (a dict) and return it parsed; raises ImportDataError naming file:line."""
    if not isinstance(obj, dict):
        raise _fail(path, line, "not a JSON object", _SHAPE_HINT)
    key = "prompt" if "prompt" in obj else "messages" if "messages" in obj else None
    if key is None:
        raise _fail(path, line, "no 'prompt' field", _SHAPE_HINT)
    prompt = _check_prompt(path, line, obj[key])
    shapes = [s for s in ("completions", "chosen", "response_a") if obj.get(s) is not None]
    if len(shapes) != 1:
        found = f"both {' and '.join(shapes)}" if shapes else "no completions"
        raise _fail(path, line, f"{found}", _SHAPE_HINT)
    shape = shapes[0]
    if shape == "completions":
        values = obj["completions"]
        if not isinstance(values, list):
            raise _fail(path, line, "completions must be a list", _SHAPE_HINT)
        if len(values) < 2:
            raise _fail(path, line, f"{len(values)} completion{'s' if len(values) != 1 else ''}; a pair needs 2",
                        "give two or more completions per prompt (or drop the row)")
        if len(values) > MAX_COMPLETIONS:
            raise _fail(path, line, f"{len(values)} completions (at most {MAX_COMPLETIONS})",
                        "keep the most different ones")
        texts = tuple(_completion(path, line, f"completion {i + 1}", v) for i, v in enumerate(values))
        verdict = None
    else:
        first, second = ("chosen", "rejected") if shape == "chosen" else ("response_a", "response_b")
        if obj.get(second) is None:
            raise _fail(path, line, f"{first} without {second}", _SHAPE_HINT)
        texts = (_completion(path, line, first, obj[first]), _completion(path, line, second, obj[second]))
        verdict = "a" if shape == "chosen" else _verdict(path, line, obj.get("winner"))
    seen: dict[str, int] = {}
    for i, t in enumerate(texts):
        if t.strip() in seen:
            raise _fail(path, line, f"completions {seen[t.strip()] + 1} and {i + 1} are the same text",
                        "a pair of identical completions teaches nothing; remove one")
        seen[t.strip()] = i
    return CompletionRow(line=line, prompt=prompt, completions=texts, verdict=verdict)


def _read_jsonl(path: Path) -> list[CompletionRow]:
    return [parse_row(path, i, obj) for i, obj in json_lines(path)]


def _read_parquet(path: Path) -> list[CompletionRow]:
    import duckdb

    con = duckdb.connect()
    try:
        cur = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        records = fetch_dicts(cur)
    except duckdb.Error as e:
        raise _fail(path, None, f"cannot read Parquet ({str(e).splitlines()[0]})", "is it a Parquet file?") from e
    finally:
        con.close()
    # Parquet has no lines; report the 1-based row instead.
    return [parse_row(path, i, r) for i, r in enumerate(records, 1)]


def read_completions(path: Path) -> list[CompletionRow]:
    """Every row of a completions file, checked; raises ImportDataError naming the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise ImportDataError(f"{path}: no such file", hint="check the path")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ImportDataError(f"{path}: completions import reads {' or '.join(FORMATS)}, not {suffix or '(none)'!r}",
                              hint="write one JSON object per line, or a Parquet file")
    rows = _read_jsonl(path) if suffix == ".jsonl" else _read_parquet(path)
    if not rows:
        raise ImportDataError(f"{path}: no rows in file; nothing imported", hint="is it empty?")
    return rows


def prepare_pairs(path: Path, rows: Sequence[CompletionRow], tokenizer: Any, *, max_tokens: int,
                  keep_verdicts: bool = True) -> tuple[list[ImportedPair], int]:
    """Cut completions to `max_tokens` tokens and expand rows into pairs; returns (pairs, completions cut).

    A completion that fits keeps its text and gets eos=True (it is a finished answer, so the EOS
    token's probability counts, as for a generated completion that stopped); a cut one gets
    eos=False. Token counts include that EOS.
    """
    flat = [t for r in rows for t in r.completions]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    cut_texts: list[str] = []
    info: list[tuple[int, bool]] = []
    truncated = 0
    for text, tok in zip(flat, ids):
        if len(tok) > max_tokens:
            truncated += 1
            cut_texts.append(tokenizer.decode(tok[:max_tokens], skip_special_tokens=False,
                                              clean_up_tokenization_spaces=False))
            info.append((max_tokens, False))
        else:
            cut_texts.append(text)
            info.append((len(tok) + 1, True))
    pairs: list[ImportedPair] = []
    pos = 0
    for r in rows:
        n = len(r.completions)
        texts, meta = cut_texts[pos:pos + n], info[pos:pos + n]
        pos += n
        for i, j in itertools.combinations(range(n), 2):
            if texts[i].strip() == texts[j].strip():
                raise _fail(path, r.line, f"completions {i + 1} and {j + 1} are the same after cutting them to "
                            f"{max_tokens} tokens (the model's limit)",
                            "make them differ earlier, or lower model.max_prompt_tokens to leave completions more room")
            outcome = r.verdict if (keep_verdicts and (i, j) == (0, 1)) else None
            pairs.append(ImportedPair(prompt=r.prompt, completion_a=texts[i], completion_b=texts[j],
                                      tokens_a=meta[i][0], tokens_b=meta[j][0], eos_a=meta[i][1],
                                      eos_b=meta[j][1], outcome=outcome))
    return pairs, truncated


def completion_budget(context: int, max_prompt_tokens: int, limit: int | None = None) -> int:
    """Tokens a completion may have: the model's context minus the prompt's room (and ≤ `limit`)."""
    budget = context - max_prompt_tokens
    if limit is not None:
        budget = min(budget, limit)
    if budget < 1:
        raise ImportDataError(f"no room for completions: the model's context is {context} tokens and "
                              f"model.max_prompt_tokens takes {max_prompt_tokens}",
                              hint="lower model.max_prompt_tokens in config.toml")
    return budget


def import_completions(store: Any, path: Path, *, tokenizer: Any, max_tokens: int, keep_verdicts: bool = True,
                       label_source: str = "imported", rows: Sequence[CompletionRow] | None = None) -> ImportReport:
    """Read (unless `rows` are given), check, cut and write a completions file to the train split, in one
    transaction."""
    path = Path(path)
    rows = read_completions(path) if rows is None else rows
    pairs, truncated = prepare_pairs(path, rows, tokenizer, max_tokens=max_tokens, keep_verdicts=keep_verdicts)
    if truncated:  # the CLI tells the user; library callers see it in the report
        logger.info("%s: %d completions longer than %d tokens cut", path, truncated, max_tokens)
    counts = store.add_imported_pairs(pairs, source=path.name, label_source=label_source)
    return ImportReport(rows=len(rows), prompts_added=counts["prompts"], candidates_added=counts["candidates"],
                        labels_added=counts["labels"], duplicates=len(pairs) - counts["candidates"],
                        truncated=truncated, max_completion_tokens=max_tokens)
