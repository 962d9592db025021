"""Cursor results as dicts keyed by column name (the store layer's one way to read rows)."""

from __future__ import annotations

from typing import Any


def fetch_dicts(cur: Any) -> list[dict[str, Any]]:
    """Every remaining row of an executed DuckDB cursor as a dict.

    >>> import duckdb
    >>> fetch_dicts(duckdb.connect().execute("SELECT 1 AS a, 'x' AS b"))
    [{'a': 1, 'b': 'x'}]
    """
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def fetch_dict(cur: Any) -> dict[str, Any] | None:
    """The next row of an executed cursor as a dict, or None when there is none."""
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description], row)) if row is not None else None
