"""Read-only queries shared by the live store and its snapshot (they take a DuckDB connection).

Kept apart from `store.py` because `apl export`, `apl stats` and the TUI's stats screen must give
the same answers whether they read the live file or the Parquet snapshot.
"""

from __future__ import annotations

from typing import Any

from apl_tui.migrations import EVAL_MEASURES

EXPORT_COLUMNS = ("prompt", "chosen", "rejected", "pair_id", "outcome", "shown_left", "source", "labeled_at",
                  "acquisition", "score", "adapter_version")


def export_rows(con: Any, *, ties: str = "drop") -> tuple[list[str], list[tuple[Any, ...]]]:
    """Effective preferences in TRL's prompt/chosen/rejected schema, plus provenance.

    Ties are dropped, or (ties="both") exported in both orders; both-bad and skips never are.
    For a tie, "chosen" and "rejected" are just the two completions: each order is one row.
    """
    cols = ", ".join(EXPORT_COLUMNS)
    sql = f"SELECT {cols} FROM preferences WHERE outcome IN ('a', 'b')"
    if ties == "both":
        sql += (f" UNION ALL SELECT {cols} FROM preferences WHERE outcome = 'tie'"
                " UNION ALL SELECT prompt, rejected AS chosen, chosen AS rejected, pair_id, outcome, shown_left,"
                " source, labeled_at, acquisition, score, adapter_version FROM preferences WHERE outcome = 'tie'")
    rows = con.execute(f"SELECT * FROM ({sql}) ORDER BY labeled_at, pair_id, chosen").fetchall()
    return list(EXPORT_COLUMNS), rows


def stats(con: Any) -> dict[str, Any]:
    """Everything `apl stats` and the stats screen show, as plain numbers."""
    one = lambda sql: con.execute(sql).fetchone()  # noqa: E731
    out: dict[str, Any] = {}
    out["prompts"] = dict(con.execute("SELECT split, count(*) FROM prompts GROUP BY 1 ORDER BY 1").fetchall())
    out["candidates"] = one("SELECT count(*) FROM candidates")[0]
    out["pool"] = one("SELECT count(*) FROM candidates c JOIN prompts p ON p.id = c.prompt_id WHERE "
                      "p.split = 'train' AND c.id NOT IN (SELECT candidate_id FROM effective_labels)")[0]
    out["outcomes"] = dict(con.execute("SELECT outcome, count(*) FROM effective_labels GROUP BY 1").fetchall())
    out["labels"] = sum(out["outcomes"].values())
    out["sources"] = dict(con.execute("SELECT source, count(*) FROM effective_labels GROUP BY 1").fetchall())
    decided = one("SELECT count(*), avg(CASE WHEN outcome = shown_left THEN 1.0 ELSE 0.0 END) "
                  "FROM effective_labels WHERE outcome IN ('a', 'b') AND shown_left IS NOT NULL")
    out["decided"] = decided[0]
    out["left_choice_rate"] = decided[1]
    out["longer_won_rate"] = one(
        "SELECT avg(CASE WHEN length(chosen) > length(rejected) THEN 1.0 ELSE 0.0 END) FROM preferences "
        "WHERE outcome IN ('a', 'b') AND length(chosen) <> length(rejected)")[0]
    total = max(out["labels"], 1)
    out["tie_rate"] = out["outcomes"].get("tie", 0) / total
    out["skip_rate"] = out["outcomes"].get("skip", 0) / total
    out["labels_per_hour"] = one(
        "SELECT CASE WHEN count(*) > 1 THEN (count(*) - 1) * 3600.0 / greatest(epoch(max(created_at)) - "
        "epoch(min(created_at)), 1) END FROM labels WHERE outcome <> 'undo' AND source = 'human' "
        "AND created_at > now()::TIMESTAMP - INTERVAL 1 HOUR")[0]
    control = con.execute(
        "SELECT coalesce(control, false), count(*) FROM effective_labels WHERE outcome <> 'skip' GROUP BY 1"
    ).fetchall()
    out["control_labels"] = {bool(k): v for k, v in control}
    out["adapters"] = [
        dict(zip(("version", "labels_used", "regime", "loss", "accuracy", "created_at", "retired"), r))
        for r in con.execute(
            "SELECT version, labels_used, regime, (metrics->>'loss')::DOUBLE, "
            "(metrics->>'rewards/accuracies')::DOUBLE, created_at, "
            "version IN (SELECT version FROM adapter_retirements) FROM adapters ORDER BY version").fetchall()]
    cols = ("adapter_version", "oracle", "settings_hash", "n", "win_rate", "stderr", "created_at",
            *(name for name, _ in EVAL_MEASURES))
    # A snapshot written by an app older than migration 9 has no measure columns: read them as NULL.
    present = {d[0] for d in con.execute("SELECT * FROM evals LIMIT 0").description}
    select = ", ".join(c if c in present else f"NULL AS {c}" for c in cols)
    out["evals"] = [
        dict(zip(cols, r))
        for r in con.execute(
            f"SELECT {select} FROM evals "
            "QUALIFY row_number() OVER (PARTITION BY adapter_version, oracle, settings_hash "
            "ORDER BY created_at DESC) = 1 ORDER BY adapter_version, oracle").fetchall()]
    return out


def metric_series(con: Any, name: str, limit: int = 400) -> list[float]:
    """One training metric over all steps of all rounds, oldest first (for sparklines)."""
    from apl_tui.migrations import TRAIN_METRICS

    if name not in TRAIN_METRICS:
        raise ValueError(f"unknown metric {name!r}")
    rows = con.execute(f'SELECT "{name}" FROM train_metrics WHERE "{name}" IS NOT NULL '
                       "ORDER BY created_at DESC, adapter_version DESC, step DESC LIMIT ?", [limit]).fetchall()
    return [float(r[0]) for r in reversed(rows)]
