"""`apl import --completions`: bring your own candidates (the command itself lives in data.py)."""

from __future__ import annotations

from pathlib import Path

from apl_tui.cache import model_cache_dir
from apl_tui.cli.common import err


def import_completions_command(file: Path, store: Path, *, keep_verdicts: bool, limit: int | None) -> None:
    """Check the file, load the model's tokenizer (not its weights), cut, write, report."""
    from apl_tui.import_completions import completion_budget, import_completions, read_completions
    from apl_tui.models import load_tokenizer
    from apl_tui.store import Store

    if limit is not None and limit < 1:
        from apl_tui.errors import AplError

        raise AplError("--max-completion-tokens must be at least 1", hint="or leave it out")
    with Store(store) as s:
        cfg = s.load_config()
        rows = read_completions(file)  # file errors first: they cost no tokenizer load
        cache = model_cache_dir()  # one per user, shared by every store
        tokenizer, context = load_tokenizer(cfg.model.spec, cache, trust_remote_code=cfg.model.trust_remote_code)
        budget = completion_budget(context, cfg.model.max_prompt_tokens, limit)
        report = import_completions(s, file, tokenizer=tokenizer, max_tokens=budget, keep_verdicts=keep_verdicts,
                                    rows=rows)
        pool = s.pool_size()
    if report.truncated:
        why = "--max-completion-tokens" if limit is not None and budget == limit else \
            f"the model's context of {context} tokens minus model.max_prompt_tokens"
        n = report.truncated
        err.print(f"[yellow]warning:[/] {n:,} completion{'s' if n != 1 else ''} longer than {budget:,} tokens "
                  f"cut to that length ({why})", highlight=False)
    dup = f", {report.duplicates:,} already in the store" if report.duplicates else ""
    err.print(f"imported {report.candidates_added:,} pairs from {report.rows:,} rows of {file} "
              f"({report.prompts_added:,} new prompts, {report.labels_added:,} imported labels{dup}); "
              f"pool: {pool:,} unlabeled pairs")
