"""Numbered schema migrations. Append new ones; never edit an applied one.

A fresh store and an old store migrated forward end with the same columns (tested), because both
run exactly this list in order.
"""

from __future__ import annotations

# Metric columns keep TRL's names (quoted where they contain '/'), so a DPO run reads the same here.
TRAIN_METRICS = (
    "loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
    "logps/chosen", "logps/rejected", "grad_norm", "learning_rate",
)

_METRIC_COLUMNS = ",\n    ".join(f'"{m}" DOUBLE' for m in TRAIN_METRICS)

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "core tables", f"""
CREATE SEQUENCE prompt_ids START 1;
CREATE TABLE prompts (
    id BIGINT PRIMARY KEY DEFAULT nextval('prompt_ids'),
    text VARCHAR NOT NULL UNIQUE,
    split VARCHAR NOT NULL CHECK (split IN ('train', 'test')),
    source VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE SEQUENCE candidate_ids START 1;
CREATE TABLE candidates (
    id BIGINT PRIMARY KEY DEFAULT nextval('candidate_ids'),
    prompt_id BIGINT NOT NULL,
    completion_a VARCHAR NOT NULL,
    completion_b VARCHAR NOT NULL,
    eos_a BOOLEAN NOT NULL DEFAULT false,
    eos_b BOOLEAN NOT NULL DEFAULT false,
    tokens_a INTEGER,
    tokens_b INTEGER,
    adapter_version INTEGER NOT NULL,
    temperature DOUBLE,
    top_p DOUBLE,
    max_new_tokens INTEGER,
    entropy DOUBLE,
    origin VARCHAR NOT NULL DEFAULT 'pool',
    ref_logp_a DOUBLE,
    ref_logp_b DOUBLE,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE scores (
    candidate_id BIGINT NOT NULL,
    adapter_version INTEGER NOT NULL,
    acquisition VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    entropy DOUBLE,
    reward_a DOUBLE,
    reward_b DOUBLE,
    p_a DOUBLE,
    fallback VARCHAR,
    scored_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE SEQUENCE label_ids START 1;
CREATE TABLE labels (
    id BIGINT PRIMARY KEY DEFAULT nextval('label_ids'),
    candidate_id BIGINT NOT NULL,
    outcome VARCHAR NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad', 'skip', 'undo')),
    undoes BIGINT,
    shown_left VARCHAR CHECK (shown_left IN ('a', 'b')),
    source VARCHAR NOT NULL,
    latency_ms INTEGER,
    rationale VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE adapters (
    version INTEGER PRIMARY KEY,
    parent INTEGER,
    labels_used INTEGER NOT NULL,
    label_hash VARCHAR NOT NULL,
    regime VARCHAR,
    path VARCHAR NOT NULL,
    config JSON,
    metrics JSON,
    manifest JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE train_metrics (
    adapter_version INTEGER NOT NULL,
    step INTEGER NOT NULL,
    {_METRIC_COLUMNS},
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
"""),
    (2, "impressions, control arm, evaluations, preference views", """
CREATE SEQUENCE impression_ids START 1;
CREATE TABLE impressions (
    id BIGINT PRIMARY KEY DEFAULT nextval('impression_ids'),
    candidate_id BIGINT NOT NULL,
    shown_left VARCHAR NOT NULL CHECK (shown_left IN ('a', 'b')),
    control BOOLEAN NOT NULL DEFAULT false,
    acquisition VARCHAR,
    score DOUBLE,
    rank BIGINT,
    scored_by INTEGER,
    source VARCHAR NOT NULL DEFAULT 'human',
    shown_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
ALTER TABLE labels ADD COLUMN impression_id BIGINT;
ALTER TABLE labels ADD COLUMN control BOOLEAN DEFAULT false;
CREATE TABLE evals (
    adapter_version INTEGER NOT NULL,
    oracle VARCHAR NOT NULL,
    settings_hash VARCHAR NOT NULL,
    settings JSON,
    n INTEGER NOT NULL,
    wins INTEGER NOT NULL,
    losses INTEGER NOT NULL,
    ties INTEGER NOT NULL,
    unparseable INTEGER NOT NULL,
    win_rate DOUBLE,
    stderr DOUBLE,
    seconds DOUBLE,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE VIEW effective_labels AS
SELECT * EXCLUDE (rn) FROM (
    SELECT l.*, row_number() OVER (PARTITION BY l.candidate_id ORDER BY l.id DESC) AS rn
    FROM labels l
    WHERE l.outcome <> 'undo'
      AND NOT EXISTS (SELECT 1 FROM labels u WHERE u.outcome = 'undo' AND u.undoes = l.id)
) WHERE rn = 1;
CREATE VIEW preferences AS
SELECT
    e.id AS label_id,
    c.id AS pair_id,
    p.id AS prompt_id,
    p.text AS prompt,
    CASE e.outcome WHEN 'b' THEN c.completion_b ELSE c.completion_a END AS chosen,
    CASE e.outcome WHEN 'b' THEN c.completion_a ELSE c.completion_b END AS rejected,
    c.completion_a,
    c.completion_b,
    e.outcome,
    e.shown_left,
    e.source,
    e.created_at AS labeled_at,
    e.latency_ms,
    coalesce(e.control, false) AS control,
    i.acquisition,
    i.score,
    coalesce(i.scored_by, c.adapter_version) AS adapter_version,
    c.adapter_version AS generated_by
FROM effective_labels e
JOIN candidates c ON c.id = e.candidate_id
JOIN prompts p ON p.id = c.prompt_id
LEFT JOIN impressions i ON i.id = e.impression_id
WHERE e.outcome <> 'skip';
"""),
]

# The queue: one row per unlabeled train candidate with its freshest score (any function), kept
# in step with `scores` and `labels` inside the same transactions. It makes "the best unlabeled
# pair" one narrow top-1 scan instead of a window over every score (≈ 700 ms at 1M candidates).
MIGRATIONS.append((3, "queue of unlabeled candidates with their freshest score", """
CREATE TABLE queue (
    candidate_id BIGINT PRIMARY KEY,
    prompt_id BIGINT NOT NULL,
    prompt_labeled BOOLEAN NOT NULL DEFAULT false,
    acquisition VARCHAR,
    adapter_version INTEGER,
    score DOUBLE,
    entropy DOUBLE,
    reward_a DOUBLE,
    reward_b DOUBLE,
    p_a DOUBLE,
    fallback VARCHAR,
    scored_at TIMESTAMP
);
INSERT INTO queue
SELECT c.id, c.prompt_id,
       c.prompt_id IN (SELECT c2.prompt_id FROM effective_labels e JOIN candidates c2 ON c2.id = e.candidate_id),
       s.acquisition, s.adapter_version, s.score, s.entropy, s.reward_a, s.reward_b, s.p_a, s.fallback, s.scored_at
FROM candidates c
JOIN prompts p ON p.id = c.prompt_id AND p.split = 'train'
LEFT JOIN (
    SELECT * FROM scores
    QUALIFY row_number() OVER (PARTITION BY candidate_id ORDER BY adapter_version DESC, scored_at DESC) = 1
) s ON s.candidate_id = c.id
WHERE c.id NOT IN (SELECT candidate_id FROM effective_labels);
"""))

# Retiring an adapter is an event, never a delete: the row, its files and its metrics stay for the
# record, and every "current adapter" read skips retired versions (a NaN or damaged adapter must
# not brick the store).
MIGRATIONS.append((4, "adapter retirements", """
CREATE TABLE adapter_retirements (
    version INTEGER NOT NULL,
    reason VARCHAR,
    retired_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
"""))

# Evaluation results per test prompt, written chunk by chunk as they come, so an interrupted
# `apl eval` continues where it stopped (and the texts can be read back).
MIGRATIONS.append((5, "per-prompt evaluation results", """
CREATE TABLE eval_items (
    adapter_version INTEGER NOT NULL,
    oracle VARCHAR NOT NULL,
    settings_hash VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    prompt_id BIGINT NOT NULL,
    result VARCHAR NOT NULL CHECK (result IN ('win', 'loss', 'tie', 'unparseable')),
    policy_text VARCHAR,
    reference_text VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (adapter_version, oracle, settings_hash, idx)
);
"""))

# Evidence for the person labeling (issue 13). Impressions keep the prediction the pair was shown
# with (r̂_A, r̂_B, p(A≻B) by `scored_by`), so every a/b label is a prequential test of the model that
# had not yet trained on it. Consistency probes re-ask an old pair with its sides swapped: they are
# flagged in impressions and labels, and the views below ignore them, so a probe never becomes a
# second training pair. Human evaluations (`apl label --eval`) keep their pairs and verdicts in
# their own tables; they never touch labels, the queue or training.
# `preferences` is dropped and made again, unchanged, after `effective_labels`: snapshot readers
# recreate views in creation order, so a view must be newer than the views it reads.
_PREFERENCES = MIGRATIONS[1][2][MIGRATIONS[1][2].index("CREATE VIEW preferences"):]
MIGRATIONS.append((6, "prequential predictions, consistency probes, human evaluation", """
DROP VIEW preferences;
ALTER TABLE impressions ADD COLUMN reward_a DOUBLE;
ALTER TABLE impressions ADD COLUMN reward_b DOUBLE;
ALTER TABLE impressions ADD COLUMN p_a DOUBLE;
ALTER TABLE impressions ADD COLUMN probe BOOLEAN DEFAULT false;
ALTER TABLE impressions ADD COLUMN probe_of BIGINT;
ALTER TABLE labels ADD COLUMN probe BOOLEAN DEFAULT false;
CREATE OR REPLACE VIEW effective_labels AS
SELECT * EXCLUDE (rn) FROM (
    SELECT l.*, row_number() OVER (PARTITION BY l.candidate_id ORDER BY l.id DESC) AS rn
    FROM labels l
    WHERE l.outcome <> 'undo' AND NOT coalesce(l.probe, false)
      AND NOT EXISTS (SELECT 1 FROM labels u WHERE u.outcome = 'undo' AND u.undoes = l.id)
) WHERE rn = 1;
""" + _PREFERENCES + """
CREATE SEQUENCE eval_pair_ids START 1;
CREATE TABLE eval_pairs (
    id BIGINT PRIMARY KEY DEFAULT nextval('eval_pair_ids'),
    adapter_version INTEGER NOT NULL,
    settings_hash VARCHAR NOT NULL,
    settings JSON,
    position INTEGER NOT NULL,
    prompt_id BIGINT NOT NULL,
    completion_policy VARCHAR NOT NULL,
    completion_reference VARCHAR NOT NULL,
    policy_side VARCHAR NOT NULL CHECK (policy_side IN ('a', 'b')),
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE SEQUENCE eval_judgment_ids START 1;
CREATE TABLE eval_judgments (
    id BIGINT PRIMARY KEY DEFAULT nextval('eval_judgment_ids'),
    eval_pair_id BIGINT NOT NULL,
    outcome VARCHAR NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad', 'skip', 'undo')),
    undoes BIGINT,
    shown_left VARCHAR CHECK (shown_left IN ('a', 'b')),
    source VARCHAR NOT NULL DEFAULT 'human',
    latency_ms INTEGER,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
"""))

# Counters kept in step with the label log, the impressions and the queue, in the same transaction
# as each label, undo, impression or new candidate (store `counters.py`), so the status line and a
# key press read a few rows instead of aggregating over the log (≈ 50 ms at 100k labels, loaded).
# `COUNTERS_SELECT` is the definition: the migration backfills from it, `Store.recount` rebuilds
# from it, and a test checks the kept counters against it after random operations.
ADAPTER_COUNTERS_SELECT = """
SELECT * FROM (
    WITH latest AS (
        SELECT version, coalesce((manifest->>'label_clock')::BIGINT, 0) AS clock,
               coalesce(CAST(manifest->'label_ids' AS BIGINT[]), []::BIGINT[]) AS ids,
               coalesce((manifest->>'label_watermark')::BIGINT,
                        list_max(CAST(manifest->'label_ids' AS BIGINT[])), 0) AS mark
        FROM adapters WHERE version NOT IN (SELECT version FROM adapter_retirements)
        ORDER BY version DESC LIMIT 1)
    SELECT 'adapter_version' AS name, coalesce((SELECT version FROM latest), 0)::BIGINT AS value
    UNION ALL SELECT 'adapter_label_clock', coalesce((SELECT clock FROM latest), 0)
    UNION ALL SELECT 'adapter_max_label', coalesce((SELECT list_max(ids) FROM latest), 0)
    UNION ALL SELECT 'adapter_mark', coalesce((SELECT mark FROM latest), 0)
    UNION ALL SELECT 'undone_in_adapter', count(*) FROM labels u, latest
        WHERE u.outcome = 'undo' AND u.id > list_max(latest.ids) AND list_contains(latest.ids, u.undoes)
    UNION ALL SELECT 'labels_since_round', count(*) FROM effective_labels
        WHERE outcome <> 'skip' AND id > coalesce((SELECT mark FROM latest), 0))
"""
"""The counters that follow the current adapter (recomputed when one is added or retired).

`adapter_mark`: labels after this id count toward the next round (see `Store.loop_state`).
"""

COUNTERS_SELECT = """
SELECT 'labels' AS name, count(*)::BIGINT AS value FROM effective_labels
UNION ALL SELECT 'preference_labels', count(*) FROM effective_labels WHERE outcome IN ('a', 'b')
UNION ALL SELECT 'label_events', count(*) FROM labels WHERE outcome <> 'undo'
UNION ALL SELECT 'last_label_id', coalesce(max(id), 0) FROM labels
UNION ALL SELECT 'impressions', count(*) FROM impressions
UNION ALL SELECT 'pool', count(*) FROM queue WHERE NOT prompt_labeled
UNION ALL SELECT 'last_impression:' || source, max(id) FROM impressions GROUP BY source
UNION ALL """ + ADAPTER_COUNTERS_SELECT
"""(name, value) of every counter, aggregated over the log: the truth the kept counters match."""

# Label events when a score was written: "labels since scored" becomes a subtraction. Old rows get
# it from timestamps (an ASOF join: labels created at or before the score).
_CLOCK_FROM_TIMESTAMPS = """
UPDATE {table} SET label_clock = c.n FROM (
    SELECT t.rowid AS rid, coalesce(e.n, 0) AS n FROM {table} t ASOF LEFT JOIN (
        SELECT DISTINCT created_at, count(*) OVER (ORDER BY created_at) AS n FROM labels WHERE outcome <> 'undo'
    ) e ON t.scored_at >= e.created_at WHERE t.scored_at IS NOT NULL
) c WHERE {table}.rowid = c.rid;
"""

_QUEUE_EXTRAS = f"""
ALTER TABLE queue ADD COLUMN label_clock BIGINT;
{_CLOCK_FROM_TIMESTAMPS.format(table="queue")}
CREATE INDEX queue_prompt ON queue (prompt_id);
"""

MIGRATIONS.append((7, "loop counters, label clock of scores, lookup indexes", f"""
CREATE TABLE loop_counters (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
ALTER TABLE scores ADD COLUMN label_clock BIGINT;
{_CLOCK_FROM_TIMESTAMPS.format(table="scores")}
{_QUEUE_EXTRAS}
CREATE INDEX labels_candidate ON labels (candidate_id);
CREATE INDEX candidates_prompt ON candidates (prompt_id);
INSERT INTO loop_counters {COUNTERS_SELECT};
"""))

# φ per completion for the preference head, stored with the candidate so restarts never recompute
# it (NULL for pairs made before this migration: filled on demand when a head function needs them).
MIGRATIONS.append((8, "candidate features for the preference head", """
ALTER TABLE candidates ADD COLUMN IF NOT EXISTS phi_a FLOAT[];
ALTER TABLE candidates ADD COLUMN IF NOT EXISTS phi_b FLOAT[];
"""))

# What `apl eval` measures beside the win-rate (apl_tui/evaluation.py, the same code as experiments):
# KL to the reference and PMI on the first `guard_prompts` test prompts, the lexical guards of
# apl_tui/guards.py on all of them, each guard with the reference's value as `<name>_ref`. Rows
# written before this migration (and a person's own evaluation) keep NULL.
EVAL_MEASURES: tuple[tuple[str, str], ...] = (
    ("guard_prompts", "INTEGER"), ("kl", "DOUBLE"), ("kl_se", "DOUBLE"), ("pmi", "DOUBLE"), ("pmi_ref", "DOUBLE"),
    ("oov", "DOUBLE"), ("oov_ref", "DOUBLE"), ("distinct2", "DOUBLE"), ("distinct2_ref", "DOUBLE"),
    ("repetition", "DOUBLE"), ("repetition_ref", "DOUBLE"), ("repeated_3grams", "DOUBLE"),
    ("repeated_3grams_ref", "DOUBLE"), ("film", "DOUBLE"), ("film_ref", "DOUBLE"), ("on_topic", "DOUBLE"),
    ("on_topic_ref", "DOUBLE"), ("top_word", "VARCHAR"), ("top_word_share", "DOUBLE"),
    ("top_word_ref", "VARCHAR"), ("top_word_share_ref", "DOUBLE"),
)
"""Columns migration 9 adds to `evals`: (name, SQL type)."""

EVAL_ITEM_MEASURES = ("kl", "pmi", "pmi_ref")
"""Per test prompt (NULL past the first `guard_prompts`): so an interrupted `apl eval` resumes them too."""

MIGRATIONS.append((9, "KL, prompt relevance and quality guards of evaluations", "\n".join(
    [f"ALTER TABLE evals ADD COLUMN IF NOT EXISTS {name} {kind};" for name, kind in EVAL_MEASURES]
    + [f"ALTER TABLE eval_items ADD COLUMN IF NOT EXISTS {name} DOUBLE;" for name in EVAL_ITEM_MEASURES])))

LATEST = MIGRATIONS[-1][0]

BULK_LOAD_BEGIN = """
DROP INDEX IF EXISTS labels_candidate;
DROP INDEX IF EXISTS candidates_prompt;
"""
"""Before a bulk load of the log (the bench's big stores): no per-row index upkeep."""


def rebuild_derived_sql() -> str:
    """After a bulk load: the queue, its extras, the indexes and the counters, rebuilt from the log.

    The queue comes from migration 3's own SQL and its later columns from the migrations that
    added them, so the result is what migrating a store with that log would give.
    """
    queue = next(sql for version, _, sql in MIGRATIONS if version == 3)
    return (f"DROP TABLE IF EXISTS queue; {queue} {_QUEUE_EXTRAS}"
            f"UPDATE scores SET label_clock = NULL; {_CLOCK_FROM_TIMESTAMPS.format(table='scores')}"
            "CREATE INDEX IF NOT EXISTS labels_candidate ON labels (candidate_id); "
            "CREATE INDEX IF NOT EXISTS candidates_prompt ON candidates (prompt_id); "
            f"DELETE FROM loop_counters; INSERT INTO loop_counters {COUNTERS_SELECT};")
