"""The label journal: a key press is saved by one fsynced line and reaches DuckDB right behind it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from apl_tui.desk import LabelDesk
from apl_tui.errors import StoreError
from apl_tui.label_journal import JOURNAL_NAME, read_journal
from apl_tui.records import ShownPair
from apl_tui.snapshot import open_reader
from apl_tui.store import DB_NAME, Store
from tests.helpers import make_store, score_all

CRASH = """
import os, sys, threading
from pathlib import Path
from apl_tui.desk import LabelDesk
from apl_tui.store import Store
desk = LabelDesk(Store(Path(sys.argv[1])))
shown = desk.next_pair()
desk.read_ahead()
desk._ahead[1].result()
gate = threading.Event()
desk._thread().submit(gate.wait)  # the desk's thread is busy: the key can only write the journal
following = desk.label_and_next(shown, "b", latency_ms=1234)
print(shown.candidate_id, following.candidate_id, following.impression_id, flush=True)
os._exit(0)  # a crash: nothing applied, nothing closed
"""


def _store(root: Path) -> Store:
    store = make_store(root, prompts=8)
    ids = [r[0] for r in store.query("SELECT id FROM candidates ORDER BY id")[1]]
    score_all(store, {c: float(c) for c in ids}, version=1, name=store.load_config().acquisition.name)
    return store


@contextmanager
def _desk_busy(desk: LabelDesk) -> Iterator[threading.Event]:
    """Hold the desk's thread until the event is set (always set on the way out, so a failure cannot hang)."""
    gate = threading.Event()
    desk._thread().submit(gate.wait)
    try:
        yield gate
    finally:
        gate.set()


@pytest.fixture
def ready(tmp_path: Path) -> Iterator[tuple[Store, LabelDesk, ShownPair]]:
    """A store, its desk and the pair on screen, with the pair after it picked ahead."""
    store = _store(tmp_path)
    desk = LabelDesk(store)
    try:
        shown = desk.next_pair()
        desk.read_ahead()
        assert shown is not None and desk._ahead is not None and desk._ahead[1].result() is not None
        yield store, desk, shown
    finally:
        desk.close()
        store.close()


def test_a_label_journaled_at_the_key_survives_a_crash(tmp_path: Path) -> None:
    _store(tmp_path).close()
    out = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    labeled, following, impression = map(int, out.stdout.split())
    raw = duckdb.connect(str(tmp_path / DB_NAME), read_only=True)  # DuckDB alone never got the label
    assert raw.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
    raw.close()
    assert len(read_journal(tmp_path / JOURNAL_NAME)) == 1
    reader = open_reader(tmp_path)  # `apl sql`, `apl export`: a read-only reader sees the saved label
    try:
        assert reader.con.execute("SELECT candidate_id, outcome FROM labels").fetchall() == [(labeled, "b")]
    finally:
        reader.con.close()

    store = Store(tmp_path)
    try:
        assert store.query("SELECT candidate_id, outcome, latency_ms FROM labels")[1] == [(labeled, "b", 1234)]
        assert store.query("SELECT candidate_id FROM impressions WHERE id = ?", [impression])[1] == [(following,)]
        assert store.counters() == store.recounted()
        assert (tmp_path / JOURNAL_NAME).stat().st_size == 0
        desk = LabelDesk(store)
        again = desk.next_pair()  # the pair on screen at the crash is served again
        assert again is not None and (again.candidate_id, again.impression_id) == (following, impression)
        for outcome in ("a", "tie"):  # new ids must not be ones the journal already used
            desk.read_ahead()
            again = desk.label_and_next(again, outcome)
        desk.settle()
        assert [o for (o,) in store.query("SELECT outcome FROM labels ORDER BY id")[1]] == ["b", "a", "tie"]
        ids = [i for (i,) in store.query("SELECT id FROM impressions")[1]]
        assert len(ids) == len(set(ids)) == 4 and desk.read_ahead_used == 2
        assert desk.undo() is not None and store.counters() == store.recounted()
        desk.close()
    finally:
        store.close()


def test_readers_on_other_threads_wait_for_journaled_labels(ready) -> None:
    store, desk, shown = ready
    seen: list[int] = []
    waiting = threading.Event()
    wait_for_desk = store.before_read
    assert wait_for_desk is not None

    def spied() -> None:
        if threading.current_thread() is reader:
            waiting.set()
        wait_for_desk()

    store.before_read = spied
    with _desk_busy(desk):
        desk.label_and_next(shown, "a")
        reader = threading.Thread(target=lambda: seen.append(store.query("SELECT count(*) FROM labels")[1][0][0]))
        reader.start()
        assert waiting.wait(30)  # the reader asked the desk first
        reader.join(0.3)
        assert reader.is_alive() and not seen  # and waits for the write, not reads around it
    reader.join(30)
    assert seen == [1]


def test_applying_a_line_twice_writes_it_once(ready, tmp_path: Path) -> None:
    store, desk, shown = ready
    with _desk_busy(desk):
        desk.label_and_next(shown, "tie")
        entry = read_journal(tmp_path / JOURNAL_NAME)[0]
    desk.settle()
    assert (tmp_path / JOURNAL_NAME).stat().st_size == 0  # emptied once everything in it was applied
    before = store.counters()
    assert store.apply_journaled(entry) is False  # a crash between DuckDB's commit and the emptying
    assert store.counters() == before == store.recounted()
    assert store.query("SELECT count(*) FROM labels")[1] == [(1,)]


def test_a_line_that_cannot_be_applied_is_one_line_and_leaves_the_store_closed(tmp_path: Path) -> None:
    _store(tmp_path).close()
    journal = tmp_path / JOURNAL_NAME
    journal.write_text('{"v":1,"label":{"id":5}}\n')  # parses, but not what a key writes
    with pytest.raises(StoreError) as e:
        Store(tmp_path)
    assert "line 1 is damaged" in e.value.message and "lacks" in e.value.message
    line = {"v": 1, "label": {"id": 1, "candidate_id": 1, "outcome": "zzz", "source": "human", "shown_left": "a",
                              "latency_ms": None, "impression_id": None, "control": False, "rationale": None,
                              "probe": False}}
    journal.write_text(json.dumps(line) + "\n")  # an outcome the schema refuses
    with pytest.raises(StoreError) as e:
        Store(tmp_path)
    assert "line 1 cannot be written to the database" in e.value.message and "move the file aside" in e.value.hint
    journal.unlink()
    Store(tmp_path).close()  # the failed opens left nothing open or locked


def test_settling_on_the_desks_own_thread_writes_instead_of_waiting_on_itself(ready) -> None:
    store, desk, shown = ready
    with _desk_busy(desk):
        desk.label_and_next(shown, "a")
        on_desk = desk._thread().submit(desk.settle)  # a status read there, a key landing just before
    on_desk.result(timeout=60)
    assert store.query("SELECT count(*) FROM labels")[1] == [(1,)]


def test_a_torn_last_line_is_dropped_and_a_damaged_one_refused(tmp_path: Path) -> None:
    _store(tmp_path).close()
    journal = tmp_path / JOURNAL_NAME
    journal.write_bytes(b'{"v":1,"label":{"id"')  # cut off mid-append: never acknowledged
    Store(tmp_path).close()
    assert journal.stat().st_size == 0
    journal.write_bytes(b'{"v":1,"label":{"id"\n')  # a whole line that does not parse: it was acknowledged
    with pytest.raises(StoreError) as e:
        Store(tmp_path)
    assert "line 1 is damaged" in e.value.message and "move the file aside" in e.value.hint
    assert "\n" not in e.value.message


def test_a_failed_write_to_duckdb_keeps_the_line_until_it_succeeds(ready, tmp_path: Path, monkeypatch) -> None:
    store, desk, shown = ready
    apply = store.apply_journaled

    def broken(entry):
        raise duckdb.IOException("disk I/O error")

    monkeypatch.setattr(store, "apply_journaled", broken)
    desk.label_and_next(shown, "a")  # saved: the line is in the journal
    with pytest.raises(StoreError) as e:
        desk.settle()
    assert "could not be written to the database" in e.value.message and "labels.journal" in e.value.hint
    assert len(read_journal(tmp_path / JOURNAL_NAME)) == 1
    monkeypatch.setattr(store, "apply_journaled", apply)
    desk.settle()
    assert store.query("SELECT outcome FROM labels")[1] == [("a",)]
    assert store.counters() == store.recounted()


def test_a_journal_that_cannot_be_written_saves_nothing(ready, monkeypatch) -> None:
    store, desk, shown = ready
    journal = store.journal

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal, "_fd", journal._fd)
    monkeypatch.setattr("apl_tui.label_journal.os.fsync", full)  # the line was written, its fsync fails
    with pytest.raises(StoreError) as e:
        desk.label_and_next(shown, "a")
    assert "No space left" in e.value.message and "not saved" in e.value.hint
    monkeypatch.undo()
    assert journal.path.stat().st_size == 0  # cut back: nothing to replay, nothing to glue a line to
    assert desk.labels_this_session == 0
    assert store.query("SELECT count(*) FROM labels")[1] == [(0,)]
    assert desk.next_pair().candidate_id == shown.candidate_id  # the same pair, still to label


def test_lines_carry_ids_and_no_texts(ready, tmp_path: Path) -> None:
    store, desk, shown = ready
    with _desk_busy(desk):
        following = desk.label_and_next(shown, "b", rationale="clearer")
        line = (tmp_path / JOURNAL_NAME).read_text()
    desk.settle()
    entry = json.loads(line)
    assert entry["label"]["candidate_id"] == shown.candidate_id and entry["label"]["rationale"] == "clearer"
    assert entry["show"]["id"] == following.impression_id
    assert following.prompt not in line and following.completion_a not in line
