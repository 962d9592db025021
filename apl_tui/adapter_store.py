"""Adapters, their training metrics and evaluations in the store (a mixin of `Store`).

An adapter is usable unless a retirement event names it; retiring one puts the queue back on the
freshest scores of usable versions. A finished round records its adapter row and per-step metrics
in one transaction; an evaluation replaces an older row of the same adapter, oracle and settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from apl_tui import migrations
from apl_tui.errors import StoreError
from apl_tui.queue import _QUEUE_SCORE_FIELDS, _USABLE_SCORE, retry_conflicts
from apl_tui.rows import fetch_dict

_USABLE = "version NOT IN (SELECT version FROM adapter_retirements)"
"""SQL condition on `adapters`: the version was not retired."""


class AdapterStoreMixin:
    """Methods of `Store` for adapters, metrics and evaluations; they use `self.cursor()`/`transaction()`."""

    cursor: Callable[[], Any]
    transaction: Callable[[], Any]
    _recount_adapter: Callable[[Any], None]

    def latest_adapter(self) -> dict[str, Any] | None:
        """The current adapter: the newest version not retired (None: the reference is the policy)."""
        cur = self.cursor().execute(f"SELECT * FROM adapters WHERE {_USABLE} ORDER BY version DESC LIMIT 1")
        return fetch_dict(cur)

    def adapter(self, version: int) -> dict[str, Any] | None:
        """One adapter row by version, retired or not, with a `retired` flag."""
        cur = self.cursor().execute(f"SELECT *, NOT ({_USABLE}) AS retired FROM adapters WHERE version = ?",
                                    [version])
        return fetch_dict(cur)

    def adapter_versions(self) -> list[int]:
        """Every adapter version not retired, oldest first."""
        rows = self.cursor().execute(f"SELECT version FROM adapters WHERE {_USABLE} ORDER BY version").fetchall()
        return [int(r[0]) for r in rows]

    def retire_adapter(self, version: int, reason: str = "") -> int:
        """Mark an adapter unusable (an appended event); returns the version that is now current (0: none).

        Queue rows scored by the retired version fall back to their freshest score by a usable
        version (or none), so the next pair is not picked, nor kept from rescoring, by its scores.
        """
        def write() -> int:
            with self.transaction() as cur:
                row = cur.execute(f"SELECT NOT ({_USABLE}) FROM adapters WHERE version = ?", [version]).fetchone()
                if row is None:
                    raise StoreError(f"no adapter v{version}", hint="see `apl stats` for the versions that exist")
                if row[0]:
                    raise StoreError(f"adapter v{version} is already retired", hint="nothing to do")
                cur.execute("INSERT INTO adapter_retirements (version, reason) VALUES (?, ?)",
                            [version, reason or None])
                sets = ", ".join(f"{f} = s.{f}" for f in _QUEUE_SCORE_FIELDS)
                cur.execute("UPDATE queue SET " + ", ".join(f"{f} = NULL" for f in _QUEUE_SCORE_FIELDS)
                            + " WHERE adapter_version = ?", [version])
                cur.execute(
                    f"UPDATE queue SET {sets} FROM (SELECT * FROM scores WHERE {_USABLE_SCORE} QUALIFY "
                    "row_number() OVER (PARTITION BY candidate_id ORDER BY adapter_version DESC, scored_at DESC) = 1"
                    ") s WHERE queue.candidate_id = s.candidate_id AND queue.score IS NULL")
                current = cur.execute(f"SELECT coalesce(max(version), 0) FROM adapters WHERE {_USABLE}").fetchone()
                self._recount_adapter(cur)
            return int(current[0])

        return retry_conflicts(write)

    def next_adapter_version(self) -> int:
        return int(self.cursor().execute("SELECT coalesce(max(version), 0) + 1 FROM adapters").fetchone()[0])

    def add_adapter(self, *, version: int, parent: int | None, labels_used: int, label_hash: str, regime: str,
                    path: str, config: dict[str, Any], metrics: dict[str, float], manifest: dict[str, Any],
                    steps: Sequence[dict[str, float]]) -> None:
        """Record a finished round: the adapter row and its per-step metrics, atomically."""
        cols = ", ".join(f'"{m}"' for m in migrations.TRAIN_METRICS)
        marks = ", ".join("?" for _ in migrations.TRAIN_METRICS)

        def write() -> None:
            with self.transaction() as cur:
                cur.execute(
                    "INSERT INTO adapters (version, parent, labels_used, label_hash, regime, path, config, metrics, "
                    "manifest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [version, parent, labels_used, label_hash, regime, path, json.dumps(config),
                     json.dumps(metrics), json.dumps(manifest)])
                if steps:
                    cur.executemany(
                        f"INSERT INTO train_metrics (adapter_version, step, {cols}) VALUES (?, ?, {marks})",
                        [[version, i + 1] + [s.get(m) for m in migrations.TRAIN_METRICS]
                         for i, s in enumerate(steps)])
                self._recount_adapter(cur)

        retry_conflicts(write)  # `undone_in_adapter` may meet an undo's update

    def add_eval(self, row: dict[str, Any]) -> None:
        """Record a finished evaluation, replacing an older row of the same adapter, oracle and settings.

        Replacing (one transaction) lets a rerun add the measures an older row lacks (`evals` before
        migration 9) without leaving two rows of one evaluation.
        """
        keys = ("adapter_version", "oracle", "settings_hash", "settings", "n", "wins", "losses", "ties",
                "unparseable", "win_rate", "stderr", "seconds", *(name for name, _ in migrations.EVAL_MEASURES))
        with self.transaction() as cur:
            cur.execute("DELETE FROM evals WHERE adapter_version = ? AND oracle = ? AND settings_hash = ?",
                        [row["adapter_version"], row["oracle"], row["settings_hash"]])
            cur.execute(f"INSERT INTO evals ({', '.join(keys)}) VALUES ({', '.join('?' for _ in keys)})",
                        [row.get(k) for k in keys])

    def find_eval(self, adapter_version: int, oracle: str, settings_hash: str) -> dict[str, Any] | None:
        cur = self.cursor().execute(
            "SELECT * FROM evals WHERE adapter_version = ? AND oracle = ? AND settings_hash = ? "
            "ORDER BY created_at DESC LIMIT 1", [adapter_version, oracle, settings_hash])
        return fetch_dict(cur)
