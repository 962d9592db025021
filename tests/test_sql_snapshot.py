"""The SQL screen's fresh snapshot is written on the writer's thread, never on the UI thread.

Opening `:` asks the app's `SnapshotWriter` for a write and polls; the copy itself (≈ 0.7 s at
100k labels) runs on the writer's thread. Each race is forced with Events: the patched
`write_snapshot` blocks until the test opens its gate, so nothing depends on timing.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input

from apl_tui import snapshot as snapshot_module
from apl_tui.desk import LabelDesk
from apl_tui.sealed import open_snapshot, run_query
from apl_tui.snapshot import write_snapshot
from apl_tui.snapshot_writer import SnapshotWriter
from apl_tui.store import Store
from apl_tui.tui.app import LabelApp
from apl_tui.tui.screens.sql import SqlScreen
from tests.test_tui import NARROW, make_store, text
from tests.test_tui_screens import wait_until

GATE_S = 10.0
"""Longest a gated write waits: bounded, so code that writes on the UI thread fails, not hangs."""
COUNT = "select count(*) from labels"


class GatedWrite:
    """Stands in for `write_snapshot`: records each call's thread, waits for its gate, then writes
    for real (or raises OSError when `fail` is set)."""

    def __init__(self) -> None:
        self.real = write_snapshot
        self.gates: list[threading.Event] = []
        """One gate per call, in call order; a call past the last gate does not wait."""
        self.entered = [threading.Event() for _ in range(4)]
        self.threads: list[str] = []
        self.active = 0
        self.most_at_once = 0
        self.fail = False
        self._lock = threading.Lock()

    def __call__(self, store: Any) -> Path:
        with self._lock:
            n = len(self.threads)
            self.threads.append(threading.current_thread().name)
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        if n < len(self.entered):
            self.entered[n].set()
        try:
            if n < len(self.gates):
                self.gates[n].wait(GATE_S)
            if self.fail:
                raise OSError("disk full")
            return self.real(store)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> GatedWrite:
    g = GatedWrite()
    monkeypatch.setattr(snapshot_module, "write_snapshot", g)
    return g


def labelled_store(root: Path) -> Store:
    """A store whose snapshot (written here, before the app) holds no labels: a stale one."""
    store = make_store(root)
    write_snapshot(store)
    return store


def snapshot_count(store: Store) -> int:
    with store.snapshot_lock:
        con, _ = open_snapshot(store.snapshot_dir)
        try:
            return int(run_query(con, COUNT)[1][0][0])
        finally:
            con.close()


def new_app(store: Store) -> LabelApp:
    # No periodic write during the test: the only writes are the one `:` asks for and the last.
    return LabelApp(LabelDesk(store), snapshot_interval_s=3600)


async def open_sql_with_two_labels(pilot: Any, gated: GatedWrite) -> None:
    """Two labels, then `:` while the snapshot write it asks for is held at its gate."""
    gated.gates.append(threading.Event())
    await pilot.press("1", "2", "colon")
    await wait_until(pilot, gated.entered[0].is_set)


@asynccontextmanager
async def sql_opened_while_writing(tmp_path: Path, gated: GatedWrite) -> AsyncIterator[tuple[LabelApp, Any]]:
    """(app, pilot): two labels, then `:` with its snapshot write held at the gate; the store closes after."""
    store = labelled_store(tmp_path / "s")
    app = new_app(store)
    try:
        async with app.run_test(size=NARROW) as pilot:
            await open_sql_with_two_labels(pilot, gated)
            yield app, pilot
    finally:
        store.close()


async def test_opening_sql_writes_on_the_writers_thread_and_answers_meanwhile(
        tmp_path: Path, gated: GatedWrite) -> None:
    async with sql_opened_while_writing(tmp_path, gated) as (app, pilot):
        # The write is still held, yet the screen is up, says what it waits for, and takes keys.
        assert isinstance(app.screen, SqlScreen)
        assert text(app, "#sql-message").startswith("writing a fresh snapshot")
        await pilot.press(*"select 1")
        assert app.screen.query_one(Input).value == "select 1"
        assert gated.threads == ["apl-snapshot"]
        gated.gates[0].set()
        await wait_until(pilot, lambda: "read-only" in text(app, "#sql-message"))
        assert gated.threads == ["apl-snapshot"]  # one write, on the writer's thread
        assert app.snapshots.writes == 1


async def test_query_submitted_before_the_write_lands_sees_the_labels_before_colon(
        tmp_path: Path, gated: GatedWrite) -> None:
    async with sql_opened_while_writing(tmp_path, gated) as (app, pilot):
        app.screen.query_one(Input).value = COUNT
        await pilot.press("enter")
        table = app.screen.query_one(DataTable)
        # Kept, not run on the stale snapshot (which holds no labels).
        assert "runs when it is written" in text(app, "#sql-message") and table.row_count == 0
        gated.gates[0].set()
        await wait_until(pilot, lambda: table.row_count == 1)
        assert str(table.get_cell_at((0, 0))) == "2"
        assert text(app, "#sql-message") == "1 row"


async def test_a_failed_write_says_so_on_one_line_and_queries_read_the_last_snapshot(
        tmp_path: Path, gated: GatedWrite) -> None:
    gated.fail = True
    async with sql_opened_while_writing(tmp_path, gated) as (app, pilot):
        gated.gates[0].set()
        await wait_until(pilot, lambda: "not written" in text(app, "#sql-message"))
        message = text(app, "#sql-message")
        assert message == "snapshot not written (disk full); queries read the last one"
        app.screen.query_one(Input).value = COUNT
        await pilot.press("enter")
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 1)
        assert str(table.get_cell_at((0, 0))) == "0"  # the last snapshot, from before the labels
        assert "fresh snapshot not written" in text(app, "#sql-message")
        gated.fail = False  # the disk has room again by the time the app quits
    # The failure left the snapshot marked stale, so the final one on quit has the labels.
    reopened = Store(tmp_path / "s")
    assert snapshot_count(reopened) == 2
    reopened.close()


async def test_quitting_while_the_requested_write_runs_joins_it_before_the_store_closes(
        tmp_path: Path, gated: GatedWrite) -> None:
    store = labelled_store(tmp_path / "s")
    app = new_app(store)
    order: list[str] = []
    real_stop = app.snapshots.stop

    def stop(timeout: float = 1.0) -> bool:
        # Quitting starts while the write is held; it ends while quitting waits for the thread.
        order.append("stop")
        gated.gates[0].set()
        ended = real_stop(timeout)
        order.append(f"joined={ended}")
        return ended

    app.snapshots.stop = stop  # type: ignore[method-assign]
    async with app.run_test(size=NARROW) as pilot:
        await open_sql_with_two_labels(pilot, gated)
        await pilot.press("ctrl+c")
    assert order == ["stop", "joined=True"]
    assert not app.snapshots.running and app.snapshots.writes == 1
    assert gated.threads == ["apl-snapshot"] and gated.most_at_once == 1
    store.close()  # raises if a snapshot thread were still copying
    reopened = Store(tmp_path / "s")
    assert snapshot_count(reopened) == 2
    reopened.close()


def test_write_soon_wakes_the_thread_and_a_ticket_needs_a_write_that_began_after_it(
        tmp_path: Path, gated: GatedWrite) -> None:
    store = labelled_store(tmp_path / "s")
    writer = SnapshotWriter(store, interval_s=3600)
    gated.gates.extend([threading.Event(), threading.Event()])
    writer.start()
    try:
        first = writer.write_soon()  # wakes the thread long before its interval
        assert gated.entered[0].wait(GATE_S)
        store.record_label(store.candidates()[0]["id"], "a", source="human", shown_left="a")
        second = writer.write_soon()  # asked during the first write: that one does not count
        assert second == first + 1
        gated.gates[0].set()
        assert gated.entered[1].wait(GATE_S)
        assert writer.finished(first) and writer.succeeded(first) and not writer.finished(second)
        # A flush (as on quit) while the thread writes waits for it: writes never overlap.
        flusher = threading.Thread(target=lambda: (writer.mark_dirty(), writer.flush()))
        flusher.start()
        flusher.join(0.2)  # time to reach the write; with the lock it cannot get past it
        assert flusher.is_alive() and gated.most_at_once == 1
        gated.gates[1].set()
        flusher.join(GATE_S)
        assert writer.finished(second) and writer.succeeded(second)
        assert gated.most_at_once == 1 and writer.writes == 3
        assert snapshot_count(store) == 1
    finally:
        assert writer.stop(GATE_S)
        store.close()


def test_a_failed_write_finishes_its_ticket_and_leaves_the_snapshot_stale(
        tmp_path: Path, gated: GatedWrite) -> None:
    store = labelled_store(tmp_path / "s")
    writer = SnapshotWriter(store, interval_s=3600)
    gated.fail = True
    writer.start()
    try:
        ticket = writer.write_soon()
        assert gated.entered[0].wait(GATE_S)
        for _ in range(int(GATE_S / 0.01)):  # bounded wait for the thread to record the outcome
            if writer.finished(ticket):
                break
            threading.Event().wait(0.01)
        assert writer.finished(ticket) and not writer.succeeded(ticket)
        assert writer.last_error == "disk full" and writer.writes == 0
    finally:
        assert writer.stop(GATE_S)
    gated.fail = False
    writer.flush()  # still marked stale after the failure: the final flush writes it
    assert writer.writes == 1
    store.close()


async def test_without_an_app_writer_the_screen_writes_the_snapshot_itself(tmp_path: Path) -> None:
    """Standalone (no `snapshots` on the app): the old synchronous write, then queries read it."""
    from textual.app import App

    store = labelled_store(tmp_path / "s")
    store.record_label(store.candidates()[0]["id"], "a", source="human", shown_left="a")

    class Bare(App[None]):
        def on_mount(self) -> None:
            self.push_screen(SqlScreen(store))

    app = Bare()
    async with app.run_test(size=NARROW) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, SqlScreen))
        assert "read-only" in text(app, "#sql-message")  # type: ignore[arg-type]
        app.screen.query_one(Input).value = COUNT
        await pilot.press("enter")
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 1)
        assert str(table.get_cell_at((0, 0))) == "1"
    store.close()
