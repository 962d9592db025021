"""Threads and shutdown: one owner joins them, in a fixed order, and nothing raises or waits.

Each race here is forced deterministically (Events and patched seams), not hoped for.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest

from apl_tui import queue as queue_module
from apl_tui.desk import LabelDesk
from apl_tui.errors import Cancelled
from apl_tui.learner import Learner, LearnerThread
from apl_tui.records import NewCandidate
from apl_tui.snapshot import write_snapshot
from apl_tui.store import Store
from apl_tui.tui.app import LabelApp
from tests.test_tui import NARROW, make_store


def test_close_never_raises_while_another_threads_cursor_is_busy(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    started, failure = threading.Event(), []

    def long_query() -> None:
        cur = store.cursor()
        started.set()
        try:
            cur.execute("SELECT count(*) FROM range(100000000000)").fetchall()
        except duckdb.Error as e:  # interrupted by close: that is the point
            failure.append(e)

    t = threading.Thread(target=long_query)
    t.start()
    started.wait()
    store.close()  # interrupts the busy cursor and retries instead of raising
    t.join(10)
    assert not t.is_alive(), "the busy query was not interrupted"
    assert failure and isinstance(failure[0], duckdb.Error)
    reopened = Store(tmp_path / "s")  # the file was released: labels and pool intact
    assert reopened.pool_size() == 12
    reopened.close()


def test_a_write_conflict_on_the_queue_is_retried_until_it_converges(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer holds the queue row of a sibling pair (same prompt) while an undo recomputes that
    prompt's `prompt_labeled`: DuckDB refuses the undo's update, and the undo retries, then lands."""
    store = make_store(tmp_path / "s")
    desk = LabelDesk(store)
    shown = desk.next_pair()
    assert shown is not None
    [sibling] = store.add_candidates([NewCandidate(prompt_id=shown.prompt_id, completion_a="c", completion_b="d",
                                                   adapter_version=0, temperature=0.7, top_p=1.0,
                                                   max_new_tokens=8)])
    desk.record_label(shown, "a")
    holding, release, committed = threading.Event(), threading.Event(), threading.Event()

    def other_writer_holding_the_row() -> None:
        cur = store.cursor()
        cur.execute("BEGIN TRANSACTION")
        cur.execute("UPDATE queue SET prompt_labeled = true, score = -1 WHERE candidate_id = ?", [sibling])
        holding.set()
        release.wait(10)
        cur.execute("COMMIT")
        committed.set()

    retries: list[float] = []

    def sleep_then_let_the_other_commit(seconds: float) -> None:
        retries.append(seconds)
        release.set()
        committed.wait(10)

    monkeypatch.setattr(queue_module.time, "sleep", sleep_then_let_the_other_commit)
    other = threading.Thread(target=other_writer_holding_the_row)
    other.start()
    holding.wait(10)
    assert desk.undo() == shown.candidate_id
    release.set()
    other.join(10)
    assert retries, "the conflict never happened, so the retry path did not run"
    rows = store.query("SELECT candidate_id, score, prompt_labeled FROM queue WHERE prompt_id = ? "
                       "ORDER BY candidate_id", [shown.prompt_id])[1]
    assert rows == [(shown.candidate_id, shown.score, False), (sibling, -1, False)]
    assert [o for (o,) in store.query("SELECT outcome FROM labels ORDER BY id")[1]] == ["a", "undo"]
    store.close()


def test_snapshot_is_one_consistent_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A label committed between two COPY statements is in all of the snapshot's tables or in none."""
    store = make_store(tmp_path / "s")
    real_transaction = store.transaction
    done = threading.Event()

    def label_a_new_pair() -> None:
        with real_transaction() as cur:
            pid = cur.execute("INSERT INTO prompts (text, split) VALUES ('late prompt', 'train') "
                              "RETURNING id").fetchone()[0]
        [cid] = store.add_candidates([NewCandidate(prompt_id=pid, completion_a="x", completion_b="y",
                                                   adapter_version=0, temperature=0.7, top_p=1.0,
                                                   max_new_tokens=8)])
        store.record_label(cid, "a", source="human")
        done.set()

    class Interleaving:
        """The snapshot's cursor: after the first COPY, another thread commits a whole new label."""

        def __init__(self, cur: Any) -> None:
            self.cur, self.copies = cur, 0

        def execute(self, sql: str, *args: Any) -> Any:
            result = self.cur.execute(sql, *args)
            if sql.startswith("COPY"):
                self.copies += 1
                if self.copies == 1:
                    t = threading.Thread(target=label_a_new_pair)
                    t.start()
                    t.join(10)
            return result

    snapshot_thread = threading.current_thread()

    def transaction() -> Any:
        from contextlib import contextmanager

        @contextmanager
        def wrapped() -> Any:
            with real_transaction() as cur:
                yield Interleaving(cur)
        return wrapped() if threading.current_thread() is snapshot_thread else real_transaction()

    monkeypatch.setattr(store, "transaction", transaction)
    snap = write_snapshot(store)
    assert done.is_set()
    con = duckdb.connect()
    read = lambda t: con.execute("SELECT count(*) FROM read_parquet(?)", [str(snap / f"{t}.parquet")]).fetchone()[0]  # noqa: E731
    assert (read("prompts"), read("candidates"), read("labels")) == (12, 12, 0)
    store.close()


async def test_quit_does_not_wait_for_a_model_load(tmp_path: Path) -> None:
    """`q` while the learner is stuck in an uninterruptible load: the app leaves, the load is abandoned."""
    store = make_store(tmp_path / "s")
    loading, finish = threading.Event(), threading.Event()

    class StuckLoader(Learner):
        def step(self, sink: Any = None, cancel: threading.Event | None = None) -> str | None:
            loading.set()
            finish.wait(30)  # ignores cancel, as a from_pretrained call does
            return "loaded model"

    app = LabelApp(LabelDesk(store), StuckLoader(store))
    async with app.run_test(size=NARROW) as pilot:
        for _ in range(200):
            if loading.is_set():
                break
            await pilot.pause(0.02)
        assert loading.is_set()
        await pilot.press("1")
        await pilot.press("q")
    assert app.learner_thread is not None and app.learner_thread.alive  # abandoned, not waited for
    store.close()  # the store closes although the thread lives on
    finish.set()
    app.learner_thread.stop(10)
    assert not app.learner_thread.alive
    reopened = Store(tmp_path / "s")
    assert reopened.query("SELECT count(*) FROM labels WHERE outcome IN ('a', 'b')")[1] == [(1,)]
    reopened.close()


def test_a_load_cancelled_meanwhile_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from apl_tui import policy as policy_module

    store = make_store(tmp_path / "s")
    cancel = threading.Event()
    synced: list[bool] = []

    def slow_load(*args: Any, **kw: Any) -> object:
        cancel.set()  # the user quit while the weights were loading
        return object()

    monkeypatch.setattr(policy_module.Policy, "load", staticmethod(slow_load))
    learner = Learner(store)
    monkeypatch.setattr(learner, "sync_adapter", lambda: synced.append(True))
    with pytest.raises(Cancelled):
        learner.load_policy(cancel=cancel)
    assert learner.policy is None and not synced
    store.close()


def test_learner_thread_reports_errors_once_and_stops(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    errors: list[BaseException] = []
    steps: list[str | None] = []

    class Failing(Learner):
        calls = 0

        def step(self, sink: Any = None, cancel: threading.Event | None = None) -> str | None:
            self.calls += 1
            if self.calls == 1:
                return "scored 3 pairs"
            raise RuntimeError("boom")

    owner = LearnerThread(Failing(store, policy=object()), on_step=steps.append, on_error=errors.append)
    owner.start()
    assert owner.join(10), "the thread did not end after the error"
    assert steps == ["scored 3 pairs"]
    assert [str(e) for e in errors] == ["boom"]
    store.close()


async def test_close_after_leaving_the_app_with_a_busy_snapshot_writer(tmp_path: Path) -> None:
    """The old race: a large store, a snapshot due every millisecond, leave, close at once."""
    store = make_store(tmp_path / "s", n=12)
    store.add_prompts([f"extra prompt {i}" for i in range(20000)], split="train", source="bulk")
    app = LabelApp(LabelDesk(store), snapshot_interval_s=0.001)
    async with app.run_test(size=NARROW) as pilot:
        for key in "12t12":
            await pilot.press(key)
        await pilot.pause(0.05)
    store.close()  # raised ResourceInUseException when a snapshot thread was still copying
    assert app.snapshots.writes >= 1
    reopened = Store(tmp_path / "s")
    assert reopened.query("SELECT count(*) FROM labels")[1][0][0] == 5
    reopened.close()
