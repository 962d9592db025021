"""The label journal: a key press's label made durable by one append + fsync, applied to DuckDB just behind.

A label committed in DuckDB costs nine statements (≈ 9–11 ms from Python at any log size); a
key press that must finish in a frame cannot afford them. So the labeling app's key writes one
line to `labels.journal` in the store folder (≈ 0.2 ms with the fsync), shows the next pair,
and the desk's thread applies the line to DuckDB a few milliseconds later. The line is the
commit: a crash before it is applied loses nothing, because opening the store read-write
replays every line whose label is not in the database yet (`JournalMixin.replay_journal`).

A line holds the label and the next pair's impression with ids taken from DuckDB's own
sequences ahead of time, so applying a line twice (a crash between DuckDB's commit and the
journal's truncation) finds its label by primary key and skips it. The file is emptied
whenever every line in it is applied: it holds a handful of lines at most.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from apl_tui.errors import StoreError, first_line
from apl_tui.queue import retry_conflicts

logger = logging.getLogger(__name__)

JOURNAL_NAME = "labels.journal"
VERSION = 1
"""Written in every line; a line of another version is refused, not guessed at."""


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's lines in order; a torn last line (a crash mid-append, never acknowledged) is dropped.

    A damaged line before the last one is refused: it was acknowledged, so guessing would lose it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    complete, torn = lines[:-1], lines[-1]  # an acknowledged line always ends with a newline
    if torn.strip():
        logger.warning("%s: dropped a torn last line (%d bytes, never acknowledged)", path, len(torn))
    entries = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            _check_line(entry)
        except (ValueError, AttributeError, TypeError) as e:
            raise StoreError(f"{path} line {number} is damaged ({e})",
                             hint="it holds labels not yet in the database; move the file aside to open "
                                  "the store without them") from e
        entries.append(entry)
    return entries


_LABEL_KEYS = ("id", "candidate_id", "outcome", "source")
_SHOW_KEYS = ("id", "left", "control", "source", "shown")


def _check_line(entry: Any) -> None:
    """Raise ValueError unless `entry` has what `apply_journaled` reads."""
    if not isinstance(entry, dict) or entry.get("v") != VERSION:
        raise ValueError(f"not a version-{VERSION} label line")
    label, show = entry.get("label"), entry.get("show")
    if not isinstance(label, dict) or any(k not in label for k in _LABEL_KEYS):
        raise ValueError("its label lacks " + ", ".join(_LABEL_KEYS))
    if show is not None and (not isinstance(show, dict) or any(k not in show for k in _SHOW_KEYS)):
        raise ValueError("its shown pair lacks " + ", ".join(_SHOW_KEYS))


class LabelJournal:
    """The append side of the journal: one writer (the UI thread), emptied by the applier when caught up."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if created:  # the new file's name must survive a power cut too, not only its lines
            _fsync_folder(self.path.parent)
        self._lock = threading.Lock()
        self._unapplied = 0

    def append(self, entry: dict[str, Any]) -> None:
        """Write one line and fsync it: when this returns, the label survives a crash."""
        line = (json.dumps({"v": VERSION, **entry}, separators=(",", ":")) + "\n").encode()
        with self._lock:
            size = os.fstat(self._fd).st_size
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
                os.fsync(self._fd)
            except OSError as e:
                try:  # "not saved" must hold: no fragment for the next line to be glued to, nothing to replay
                    os.ftruncate(self._fd, size)
                except OSError:
                    logger.warning("could not cut %s back after a failed write", self.path)
                raise StoreError(f"cannot write {self.path.name}: {e}",
                                 hint="is the disk full or read-only? the label was not saved") from e
            self._unapplied += 1

    def applied(self) -> None:
        """One line reached DuckDB (committed); empty the file once every line has."""
        with self._lock:
            self._unapplied = max(self._unapplied - 1, 0)
            if self._unapplied == 0:
                self._truncate()

    def _truncate(self) -> None:
        # No fsync of its own: the next append's fsync makes the new size durable, and a line that
        # survives a crash because the emptying did not is found by its label id and skipped.
        try:
            os.ftruncate(self._fd, 0)
        except OSError as e:  # harmless: applied lines are skipped when replayed
            logger.warning("could not empty %s: %s", self.path, e)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without folder handles (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class JournalMixin:
    """Methods of `Store` that apply journal lines; they use `self.transaction()` and the queue's writers."""

    root: Path
    read_only: bool
    cursor: Any
    transaction: Any
    _write_label: Any
    _write_impression: Any
    _bump: Any

    @property
    def journal(self) -> LabelJournal:
        """The store's journal, opened for appending on first use (read-write stores only)."""
        journal = getattr(self, "_journal", None)
        if journal is None:
            if self.read_only:
                raise StoreError("a read-only store cannot take labels", hint="open it without --read-only")
            journal = self._journal = LabelJournal(self.root / JOURNAL_NAME)
        return journal

    def close_journal(self) -> None:
        journal = getattr(self, "_journal", None)
        if journal is not None:
            journal.close()
            self._journal = None

    def allocate_ids(self) -> tuple[int, int]:
        """(label id, impression id) taken from the sequences now, for a label and pick journaled later."""
        row = self.cursor().execute("SELECT nextval('label_ids'), nextval('impression_ids')").fetchone()
        return int(row[0]), int(row[1])

    def _sequences_past_ids(self) -> None:
        """Move the id sequences past every label and impression id in the tables.

        Journaled rows are inserted with ids taken ahead (`allocate_ids`), and DuckDB does not
        always keep a sequence's advance across a crash (nor, once seen, a close): without this the
        next id would be one already used.
        """
        cur = self.cursor()
        for table, sequence in (("labels", "label_ids"), ("impressions", "impression_ids")):
            top = int(cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0])
            after = int(cur.execute(f"SELECT nextval('{sequence}')").fetchone()[0])
            if after <= top:
                cur.execute(f"SELECT max(nextval('{sequence}')) FROM range(?)", [top - after])

    def apply_journaled(self, entry: dict[str, Any]) -> bool:
        """Write one journal line's label (and impression) in one transaction; False if it was already there."""
        label, show = entry["label"], entry.get("show")

        def write() -> bool:
            with self.transaction() as cur:
                if cur.execute("SELECT count(*) FROM labels WHERE id = ?", [label["id"]]).fetchone()[0]:
                    return False
                _, changes = self._write_label(
                    cur, label["candidate_id"], label["outcome"], label["source"], label["shown_left"],
                    label["latency_ms"], label["impression_id"], label["control"], label["rationale"],
                    label["probe"], new_id=label["id"])
                if show is not None:
                    imp = self._write_impression(cur, show["shown"], left=show["left"], control=show["control"],
                                                 source=show["source"], new_id=show["id"])
                    changes.update({"impressions": 1, f"last_impression:{show['source']}": imp})
                self._bump(cur, changes)
            return True

        return retry_conflicts(write)

    def replay_journal(self) -> int:
        """Apply the lines a crash left unapplied (in order), then empty the file; returns how many were applied."""
        path = self.root / JOURNAL_NAME
        entries = read_journal(path)
        if self.read_only:
            if entries:
                logger.warning("%s holds %d label(s) not yet in the database; open the store read-write once "
                               "(e.g. `apl stats`) to apply them", path, len(entries))
            return 0
        applied = 0
        for number, entry in enumerate(entries, 1):
            try:
                applied += self.apply_journaled(entry)
            except Exception as e:  # noqa: BLE001 — any failure: the line stays, the store is not opened
                raise StoreError(f"{path} line {number} cannot be written to the database: {first_line(e)}",
                                 hint="it holds a saved label; move the file aside to open the store without "
                                      "it") from e
        self._sequences_past_ids()
        if path.exists() and path.stat().st_size:
            with open(path, "r+b") as f:
                f.truncate(0)
                os.fsync(f.fileno())
        if applied:
            logger.info("applied %d journaled label(s) from %s", applied, path)
        return applied
