"""The store: one DuckDB file plus adapters, caches and a snapshot under one folder.

All SQL of the project lives here and in `migrations.py`; values are bound with `?`.
One process owns the file read-write; each thread gets its own cursor (DuckDB's rule for
threads), so the UI thread can commit a label while a worker bulk-inserts scores.

Layout of a store folder::

    apl.duckdb      the database (tables: prompts, candidates, scores, labels, impressions,
                    adapters, train_metrics, evals; views: effective_labels, preferences)
    config.toml     the settings (see examples/config.toml)
    adapters/vN/    LoRA adapter version N (peft safetensors + manifest.json); a save writes a
                    hidden adapters/.vN.tmp-PID-* folder first (leftovers are removed on open)
    cache/          converted models and tokenizers
    snapshot/       Parquet copies of every table, kept fresh by the running app for other processes
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apl_tui import migrations
from apl_tui.adapter_store import AdapterStoreMixin
from apl_tui.atomic import remove_leftovers
from apl_tui.config import AplConfig
from apl_tui.config_file import load_config_file
from apl_tui.errors import StoreError, StoreLockedError
from apl_tui.eval_items import EvalItemsMixin
from apl_tui.eval_store import EvalStoreMixin
from apl_tui.features_store import FeatureMixin
from apl_tui.label_journal import JournalMixin
from apl_tui.probes import ProbeMixin
from apl_tui.queue import QueueMixin, retry_conflicts
from apl_tui.records import NewCandidate, ShownPair
from apl_tui.rows import fetch_dicts
from apl_tui.store_imports import ImportMixin

logger = logging.getLogger(__name__)

DB_NAME = "apl.duckdb"


def is_lock_error(e: Exception) -> bool:
    """Whether a DuckDB error says another process holds the file's lock."""
    text = str(e)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


class Store(QueueMixin, ImportMixin, EvalItemsMixin, ProbeMixin, EvalStoreMixin, FeatureMixin, JournalMixin,
            AdapterStoreMixin):
    """A store folder and its open database.

    >>> import tempfile
    >>> store = Store.create(Path(tempfile.mkdtemp()) / "store")
    >>> store.add_prompts(["Once upon", "Once upon", "A time"], split="train", source="x.txt")
    (2, 1)
    >>> store.close()
    """

    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        import duckdb

        self.root = Path(root)
        self.read_only = read_only
        db = self.root / DB_NAME
        if not db.exists():
            raise StoreError(f"no store at {self.root}", hint="create one with `apl init` (or pass --store DIR)")
        try:
            self._con = duckdb.connect(str(db), read_only=read_only)
        except duckdb.Error as e:
            if is_lock_error(e):
                raise StoreLockedError(f"{db} is in use by another apl process",
                                       hint="read-only commands use its snapshot; otherwise close the other app") from e
            raise StoreError(f"cannot open {db}: {str(e).splitlines()[0]}",
                             hint="is this an apl store folder?") from e
        self._local = threading.local()
        self._cursors: list[Any] = []
        self._cursors_lock = threading.Lock()
        self.before_read: Callable[[], None] | None = None
        """Set by a label desk with journaled labels not yet in DuckDB: waits until they are (`cursor`)."""
        self.snapshot_lock = threading.Lock()
        """Held while a snapshot is written (the app writes from a thread, and once more on quit)."""
        try:
            self._migrate()
            self.replay_journal()  # labels a crash left in the journal reach the database before anything reads it
        except BaseException:
            self._con.close()  # not left open (and locked) behind a store that failed to open
            raise
        if not read_only:
            # This process owns the file read-write, so no other process is saving an adapter.
            removed = remove_leftovers(self.root / "adapters")
            if removed:
                logger.info("removed %d leftover folder(s) of an interrupted adapter save", removed)

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, config: AplConfig | None = None) -> Store:
        """Create the folder, database and config file; reuse what exists."""
        import duckdb

        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("adapters", "cache", "snapshot"):
            (root / sub).mkdir(exist_ok=True)
        if not (root / "config.toml").exists():
            (config or AplConfig()).dump(root / "config.toml")
        if not (root / DB_NAME).exists():
            duckdb.connect(str(root / DB_NAME)).close()
        return cls(root)

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def snapshot_dir(self) -> Path:
        return self.root / "snapshot"

    def load_config(self) -> AplConfig:
        """The store's settings; a missing, empty or unreadable config.toml is refused, not defaulted.

        A file without some of the sections `apl init` writes (hand-edited, or cut short) is
        used with those sections' defaults, and a warning names them.
        """
        return load_config_file(self.config_path, store_file=True)

    def close(self, timeout_s: float = 2.0) -> None:
        """Close the database; never raises because another thread's cursor is busy.

        DuckDB refuses to close a connection while a cursor runs a statement
        (`ResourceInUseException`). The owner joins its threads first, so this is the fallback:
        interrupt every cursor (an interrupted write rolls back whole) and retry for `timeout_s`;
        if it still fails, leave the file to be released when the process exits.
        """
        import duckdb

        self.close_journal()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._con.close()
                return
            except duckdb.Error as e:
                if time.monotonic() >= deadline:
                    logger.warning("store %s left open at exit: %s", self.root, str(e).splitlines()[0])
                    return
                with self._cursors_lock:
                    cursors = list(self._cursors)
                for cur in cursors:
                    try:
                        cur.interrupt()
                    except duckdb.Error:  # that cursor was already closed by the failed close
                        pass
                time.sleep(0.01)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cursor(self) -> Any:
        """This thread's cursor (DuckDB wants one per thread).

        Every read and write starts here, so this is where a saved label becomes visible to all: if
        a desk's journal holds labels not yet in DuckDB, they are written first (a few ms). Not
        inside a transaction: waiting there could hold up the very write it waits for.
        """
        wait = self.before_read
        if wait is not None and not getattr(self._local, "in_transaction", False):
            wait()
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cur = cur
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor inside BEGIN … COMMIT; any error rolls everything back."""
        cur = self.cursor()
        cur.execute("BEGIN TRANSACTION")
        self._local.in_transaction = True
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            self._local.in_transaction = False
            wrote_labels, self._local.label_write = getattr(self._local, "label_write", False), False
        cur.execute("COMMIT")
        if wrote_labels:  # after the commit: a pick made before it must not look current
            self.label_writes += 1

    def _migrate(self) -> None:
        cur = self.cursor()
        exists = cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchone()[0]
        current = cur.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] if exists else 0
        current = current or 0
        if current > migrations.LATEST:
            raise StoreError(
                f"{self.db_path} has schema v{current}, newer than this apl-tui knows (v{migrations.LATEST})",
                hint="upgrade apl-tui (pip install -U apl-tui) to open this store")
        if current == migrations.LATEST:
            return
        if self.read_only:
            raise StoreError(f"{self.db_path} needs a schema upgrade (v{current} → v{migrations.LATEST})",
                             hint="run any writing command (e.g. `apl stats`) once while no app is open")
        for version, name, sql in migrations.MIGRATIONS:
            if version <= current:
                continue
            with self.transaction() as tx:
                if version == 1:
                    tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                               "version INTEGER PRIMARY KEY, name VARCHAR, "
                               "applied_at TIMESTAMP DEFAULT current_timestamp)")
                tx.execute(sql)
                tx.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
            logger.info("migrated %s to schema v%d (%s)", self.db_path, version, name)

    def set_threads(self, n: int) -> None:
        """How many threads DuckDB may use for this store's queries (a setting of this process only)."""
        self.cursor().execute(f"SET threads = {int(n):d}")

    def schema_version(self) -> int:
        return int(self.cursor().execute("SELECT max(version) FROM schema_migrations").fetchone()[0])

    # ---- prompts ---------------------------------------------------------------------------

    def add_prompts(self, texts: Sequence[str], *, split: str, source: str) -> tuple[int, int]:
        """Insert new prompts as one bulk statement in one transaction; returns (added, skipped as duplicates).

        The texts go in as one Arrow table, and a single INSERT … SELECT anti-joins them against
        `prompts` on text, so 100k prompts take seconds (row-by-row inserts took minutes while
        holding the store), and re-importing a file adds nothing. File order sets the ids.
        A failed write (disk full) rolls everything back and is reported in one line.
        """
        import duckdb
        import pyarrow as pa

        if split not in ("train", "test"):
            raise StoreError(f"unknown split {split!r}", hint="use train or test")
        unique = list(dict.fromkeys(texts))  # first occurrence wins, order kept
        incoming = pa.table({"text": pa.array(unique, type=pa.string()),
                             "pos": pa.array(range(len(unique)), type=pa.int64())})
        # A cursor of its own: the registered table is visible to it alone, and the thread's
        # cursor may still hold an unfinished result.
        cur = self._con.cursor()
        try:
            cur.register("incoming_prompts", incoming)
            cur.execute("BEGIN TRANSACTION")
            try:
                added = cur.execute(
                    "INSERT INTO prompts (text, split, source) SELECT i.text, ?, ? FROM incoming_prompts i "
                    "ANTI JOIN prompts p ON p.text = i.text ORDER BY i.pos", [split, source]).fetchone()[0]
                cur.execute("COMMIT")
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:  # a fatal write error already invalidated the database
                    logger.debug("rollback after a failed import failed too", exc_info=True)
                raise
        except (duckdb.IOException, duckdb.FatalException, duckdb.OutOfMemoryException,
                duckdb.TransactionException) as e:
            # DuckDB writes a big transaction straight into the file and checkpoints on COMMIT, so
            # a full disk surfaces here; the commit never happened, the store reopens unchanged.
            raise StoreError(f"cannot write to {self.db_path}: {str(e).splitlines()[0]}; nothing imported",
                             hint="free disk space (or memory) and import again") from e
        finally:
            try:
                cur.close()
            except duckdb.Error:
                pass  # closing a cursor of an invalidated database; the error above is the news
        return int(added), len(texts) - int(added)

    def candidate_count(self) -> int:
        """Candidates ever generated or imported."""
        return int(self.cursor().execute("SELECT count(*) FROM candidates").fetchone()[0])

    def prompt_counts(self) -> dict[str, int]:
        rows = self.cursor().execute("SELECT split, count(*) FROM prompts GROUP BY 1").fetchall()
        return {split: int(n) for split, n in rows}

    def sample_prompts(self, n: int, *, split: str = "train", seed: int = 0,
                       exclude_used: bool = True) -> list[tuple[int, str]]:
        """Up to n random prompts of a split; by default none that already has a candidate."""
        used = ("AND NOT EXISTS (SELECT 1 FROM candidates c WHERE c.prompt_id = p.id)"
                if exclude_used else "")
        rows = self.cursor().execute(
            f"SELECT p.id, p.text FROM prompts p WHERE p.split = ? {used} ORDER BY hash(p.id + ?) LIMIT ?",
            [split, seed, n]).fetchall()
        return [(int(i), t) for i, t in rows]

    def test_prompts(self, limit: int | None = None) -> list[tuple[int, str]]:
        rows = self.cursor().execute("SELECT id, text FROM prompts WHERE split = 'test' ORDER BY id LIMIT ?",
                                     [limit if limit is not None else 2**62]).fetchall()
        return [(int(i), t) for i, t in rows]

    # ---- candidates and scores -------------------------------------------------------------

    def add_candidates(self, rows: Sequence[NewCandidate],
                       ref_logps: Sequence[tuple[float, float]] | None = None,
                       features: Sequence[tuple[Sequence[float], Sequence[float]]] | None = None) -> list[int]:
        """Insert generated pairs (optionally with their reference log-probs and φ) in one transaction."""
        if not rows:
            return []
        refs = list(ref_logps) if ref_logps is not None else [(None, None)] * len(rows)
        phis = [([float(v) for v in a], [float(v) for v in b]) for a, b in features] if features is not None else None

        def write() -> list[int]:
            with self.transaction() as cur:
                return self._insert_candidates(cur, rows, refs, phis)

        return retry_conflicts(write)  # the `pool` counter may meet a label's update

    def _insert_candidates(self, cur: Any, rows: Sequence[NewCandidate],
                           refs: Sequence[tuple[float | None, float | None]],
                           phis: Sequence[tuple[list[float], list[float]]] | None = None) -> list[int]:
        ids = [r[0] for r in cur.execute("SELECT nextval('candidate_ids') FROM range(?)", [len(rows)]).fetchall()]
        values = [(i, r.prompt_id, r.completion_a, r.completion_b, r.eos_a, r.eos_b, r.tokens_a, r.tokens_b,
                   r.adapter_version, r.temperature, r.top_p, r.max_new_tokens, r.entropy, r.origin, ra, rb)
                  for i, r, (ra, rb) in zip(ids, rows, refs)]
        phi_cols = ""
        if phis is not None:  # φ columns only when given (migration 8), so older schemas still insert
            phi_cols = ", phi_a, phi_b"
            values = [v + tuple(f) for v, f in zip(values, phis)]
        cur.executemany(
            "INSERT INTO candidates (id, prompt_id, completion_a, completion_b, eos_a, eos_b, tokens_a, "
            "tokens_b, adapter_version, temperature, top_p, max_new_tokens, entropy, origin, "
            f"ref_logp_a, ref_logp_b{phi_cols}) VALUES ({', '.join(['?'] * len(values[0]))})", values)
        self._enqueue_candidates(cur, ids)
        return [int(i) for i in ids]

    def candidates(self, ids: Sequence[int] | None = None, *,
                   missing_reference: bool = False) -> list[dict[str, Any]]:
        """Candidate rows with their prompt text, as dicts."""
        where = ["p.split = 'train'"]
        params: list[Any] = []
        if ids is not None:
            where.append("c.id IN (SELECT unnest(?))")
            params.append(list(ids))
        if missing_reference:
            where.append("c.ref_logp_a IS NULL")
        cur = self.cursor().execute(
            "SELECT c.*, p.text AS prompt FROM candidates c JOIN prompts p ON p.id = c.prompt_id "
            f"WHERE {' AND '.join(where)} ORDER BY c.id", params)
        # φ stays out of these dicts (the head reads it through `head_pool`); dropped here rather
        # than EXCLUDEd in SQL, so a store simulating an older schema reads the same way.
        return [{k: v for k, v in row.items() if k not in ("phi_a", "phi_b")} for row in fetch_dicts(cur)]

    def set_reference_logps(self, values: Sequence[tuple[int, float, float]]) -> None:
        """Cache reference log-probs (id, logp_a, logp_b); they never change for a fixed base model."""
        with self.transaction() as cur:
            cur.executemany("UPDATE candidates SET ref_logp_a = ?, ref_logp_b = ? WHERE id = ?",
                            [(a, b, i) for i, a, b in values])

    # ---- labels ----------------------------------------------------------------------------

    def loop_state(self) -> dict[str, Any]:
        """Everything a status line and the round trigger need, from the kept counters (one small read).

        Keys: labels (effective, skips included), preference_labels (effective a/b), label_events
        (all but undos), pool, adapter_version (0 without one), label_clock (label events when it
        trained), undone_in_adapter (labels the latest adapter trained on that were undone since),
        labels_since_round (effective labels other than skips made after the latest round started:
        what counts toward the next round; skips and undone labels never do).
        """
        c = self.counters()
        return {"labels": c.get("labels", 0), "preference_labels": c.get("preference_labels", 0),
                "label_events": c.get("label_events", 0), "pool": c.get("pool", 0),
                "adapter_version": c.get("adapter_version", 0), "label_clock": c.get("adapter_label_clock", 0),
                "undone_in_adapter": c.get("undone_in_adapter", 0),
                "labels_since_round": c.get("labels_since_round", 0)}

    def label_counts(self) -> dict[str, int]:
        """Effective labels by outcome."""
        rows = self.cursor().execute("SELECT outcome, count(*) FROM effective_labels GROUP BY 1").fetchall()
        return {o: int(n) for o, n in rows}

    def effective_label_count(self, source: str) -> int:
        """Labels by this source that still count (undone ones do not)."""
        return int(self.cursor().execute("SELECT count(*) FROM effective_labels WHERE source = ?",
                                         [source]).fetchone()[0])


    def label_watermark(self) -> int:
        """The newest label event's id (0 without one): a round records it, and later labels count toward the next."""
        return self.counter("last_label_id")

    def label_events(self) -> int:
        """All label events except undos: the clock that rounds and staleness count in (a kept counter)."""
        return self.counter("label_events")

    def training_pairs(self) -> list[dict[str, Any]]:
        """Effective a/b labels with texts and cached reference log-probs, oldest first."""
        cur = self.cursor().execute(
            "SELECT e.id AS label_id, c.id AS candidate_id, p.text AS prompt, c.completion_a, c.completion_b, "
            "c.eos_a, c.eos_b, c.ref_logp_a, c.ref_logp_b, e.outcome FROM effective_labels e "
            "JOIN candidates c ON c.id = e.candidate_id JOIN prompts p ON p.id = c.prompt_id "
            "WHERE e.outcome IN ('a', 'b') ORDER BY e.id")
        return fetch_dicts(cur)

    def query(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one trusted statement of ours; user SQL never comes here (it runs in `sealed`)."""
        cur = self.cursor().execute(sql, list(params))
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()


def shown_pair(shown: dict[str, Any], *, left: str, control: bool, impression_id: int) -> ShownPair:
    """Build the record a labeler sees from a queue row."""
    return ShownPair(
        candidate_id=int(shown["candidate_id"]), prompt_id=int(shown["prompt_id"]), prompt=shown["prompt"],
        completion_a=shown["completion_a"], completion_b=shown["completion_b"], left=left, control=control,
        acquisition=shown["acquisition"], score=shown["score"], rank=shown["rank"], entropy=shown["entropy"],
        reward_a=shown["reward_a"], reward_b=shown["reward_b"], p_a=shown["p_a"], fallback=shown["fallback"],
        scored_by=shown["scored_by"], labels_since_scored=shown["labels_since_scored"],
        impression_id=impression_id, probe_of=shown.get("probe_of"))
