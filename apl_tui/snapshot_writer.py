"""Keeps the store's Parquet snapshot fresh from one background thread, for other processes.

The owner marks the snapshot dirty after each change; the thread writes at most once per
interval (a write copies every table: ≈ 0.7 s at 100k labels, far too long for a key press).
When someone needs the labels so far in the snapshot (the SQL screen, on opening), `write_soon`
wakes the thread at once and returns a ticket; `finished(ticket)` turns true once a write that
started after the request has ended, written or failed, so a waiter never hangs on a failure
(a failed write leaves the snapshot marked stale: the next interval or the final flush retries).
Every write holds one lock: the thread's and the final `flush` from shutdown never overlap.
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
    """Debounced snapshot writes on a daemon thread, on-demand wake-ups, and a bounded stop."""

    def __init__(self, store: Any, interval_s: float = 2.0) -> None:
        self.store = store
        self.interval_s = interval_s
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        """Set by `write_soon` and `stop`: the thread stops waiting out its interval."""
        self._write_lock = threading.Lock()
        self._counts = threading.Lock()
        """Guards the attempt counters and the dirty flag together (see `write_soon`)."""
        self._started = 0
        self._finished = 0
        self._last_ok = 0
        self._thread: threading.Thread | None = None
        self.writes = 0
        """Snapshots written so far (tests and the status of `apl label` read it)."""
        self.last_error: str | None = None
        """The first line of the last failed write's error; None until one fails."""

    def mark_dirty(self) -> None:
        """Something changed: write a snapshot within one interval."""
        self._dirty.set()

    def write_soon(self) -> int:
        """Have the thread write now (not after the interval); a ticket for `finished`/`succeeded`.

        The ticket is the number of the next write to start. Writes start and end in order, so
        once that many have ended, one that began after this call (and so saw every change
        committed before it) is done.
        """
        with self._counts:
            # Together with the count: a write starting right now either already counted (and
            # the ticket is the one after it) or clears this flag and is the ticket itself.
            self._dirty.set()
            ticket = self._started + 1
        self._wake.set()
        return ticket

    def finished(self, ticket: int) -> bool:
        """Whether the write for `ticket` has ended (written or failed)."""
        with self._counts:
            return self._finished >= ticket

    def succeeded(self, ticket: int) -> bool:
        """Whether a write that began after the `ticket` request was written (not failed)."""
        with self._counts:
            return self._last_ok >= ticket

    @property
    def running(self) -> bool:
        """Whether the thread is alive (after `stop`, nobody will serve a `write_soon`)."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        """Start the thread (a no-op while it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="apl-snapshot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            # Cleared before the dirty check: a wake-up that lands after this is either seen
            # as dirty now or wakes the next wait at once.
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._dirty.is_set():
                self._write()

    def _write(self) -> None:
        from apl_tui.snapshot import write_snapshot

        with self._write_lock:
            with self._counts:
                self._started += 1
                attempt = self._started
                self._dirty.clear()
            t0 = time.perf_counter()
            error: str | None = "unexpected error (see the log)"
            try:
                write_snapshot(self.store)
                self.writes += 1
                error = None
            except (OSError, AplError) as e:
                error = str(e).splitlines()[0] if str(e) else type(e).__name__
                logger.warning("snapshot not written: %s", e)
                self._dirty.set()  # still stale: the next interval, or the final flush, tries again
            finally:
                # Counted even when something unexpected escapes, so a waiter never hangs.
                with self._counts:
                    self._finished = attempt
                    if error is None:
                        self._last_ok = attempt
                    else:
                        self.last_error = error
            logger.debug("snapshot attempt %d in %.0f ms", attempt, (time.perf_counter() - t0) * 1000)

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread and wait up to `timeout` s for a write in progress; True when it ended."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def flush(self) -> None:
        """Write now, on the caller's thread, if anything changed since the last write."""
        if self._dirty.is_set():
            self._write()
