"""Keeps the store's Parquet snapshot fresh from one background thread, for other processes.

The owner marks the snapshot dirty after each change; the thread writes at most once per
interval (a write copies every table: tens of ms on a large store, too long for a key press).
`stop` joins the thread, so the store is never closed under a write in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from apl_tui.errors import AplError

logger = logging.getLogger(__name__)


class SnapshotWriter:
    """Debounced snapshot writes on a daemon thread, with an explicit, bounded stop."""

    def __init__(self, store: Any, interval_s: float = 2.0) -> None:
        self.store = store
        self.interval_s = interval_s
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0
        """Snapshots written so far (tests and the status of `apl label` read it)."""

    def mark_dirty(self) -> None:
        """Something changed: write a snapshot within one interval."""
        self._dirty.set()

    def start(self) -> None:
        """Start the thread (a no-op while it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="apl-snapshot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._dirty.is_set():
                self._write()

    def _write(self) -> None:
        from apl_tui.snapshot import write_snapshot

        self._dirty.clear()
        t0 = time.perf_counter()
        try:
            write_snapshot(self.store)
            self.writes += 1
        except (OSError, AplError) as e:
            logger.warning("snapshot not written: %s", e)
        logger.debug("snapshot written in %.0f ms", (time.perf_counter() - t0) * 1000)

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread and wait up to `timeout` s for a write in progress; True when it ended."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def flush(self) -> None:
        """Write now, on the caller's thread, if anything changed since the last write."""
        if self._dirty.is_set():
            self._write()
