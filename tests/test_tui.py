"""The labeling screen through Textual's Pilot: keys in, database rows and screen text out.

No model: the pool is built by hand and the background worker is off (no learner).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apl_tui.desk import LabelDesk
from apl_tui.records import NewCandidate, ScoreRow, ShownPair
from apl_tui.store import Store
from apl_tui.tui.app import LabelApp
from apl_tui.tui.screens.label import LabelScreen
from tests.helpers import caught_up

WIDE = (160, 45)
NARROW = (80, 24)


def make_store(root: Path, n: int = 12) -> Store:
    """A store with n train prompts, one scored candidate each (distinct, recognisable texts)."""
    store = Store.create(root)
    store.add_prompts([f"Prompt {i}: the film was" for i in range(n)], split="train", source="test")
    ids = store.add_candidates([
        NewCandidate(prompt_id=i + 1, completion_a=f"alpha {i} wonderful and moving " + "more " * 150,
                     completion_b=f"beta {i} dull and slow", adapter_version=0, temperature=0.7, top_p=1.0,
                     max_new_tokens=24)
        for i in range(n)])
    store.add_scores([ScoreRow(candidate_id=c, adapter_version=0, acquisition="hybrid", score=float(c),
                               entropy=1.5, reward_a=0.1 * c, reward_b=-0.1 * c, p_a=0.75) for c in ids])
    return store


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = make_store(tmp_path / "store")
    yield s
    s.close()


def new_app(store: Store, **kw: Any) -> LabelApp:
    return LabelApp(LabelDesk(store), **kw)


def screen_of(app: LabelApp) -> LabelScreen:
    assert isinstance(app.screen, LabelScreen)
    return app.screen


def text(app: LabelApp, selector: str) -> str:
    return str(app.screen.query_one(selector).content)


def labels(store: Store) -> list[tuple[Any, ...]]:
    """(candidate_id, outcome, shown_left, undoes) of every label event, oldest first."""
    return store.query("SELECT candidate_id, outcome, shown_left, undoes FROM labels ORDER BY id")[1]


KEYS = [("1", "left"), ("left", "left"), ("2", "right"), ("right", "right"), ("3", "tie"), ("t", "tie"),
        ("4", "both_bad"), ("b", "both_bad"), ("s", "skip"), ("space", "skip")]


async def test_each_key_records_its_verdict_in_candidate_terms(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=WIDE) as pilot:
        for key, verdict in KEYS:
            shown = screen_of(app).shown
            assert shown is not None
            # The screen shows the candidate's completions in the randomised order.
            assert text(app, "#left-text") == shown.left_text
            assert text(app, "#right-text") == shown.right_text
            await pilot.press(key)
            cand, outcome, shown_left, _ = labels(store)[-1]
            assert cand == shown.candidate_id
            assert shown_left == shown.left
            expected = {"left": shown.left, "right": "b" if shown.left == "a" else "a"}.get(verdict, verdict)
            assert outcome == expected, (key, shown.left)
            # Written before the next pair appears, and the next pair is a different one.
            nxt = screen_of(app).shown
            assert nxt is not None and nxt.candidate_id != shown.candidate_id
        assert len(labels(store)) == len(KEYS)
        assert set(store.label_counts()) == {"a", "b", "tie", "both_bad", "skip"}


async def test_both_sides_are_exercised(store: Store) -> None:
    """The fixture's order randomisation puts candidate a on each side at least once."""
    app = new_app(store)
    sides = set()
    async with app.run_test(size=WIDE) as pilot:
        for _ in range(10):
            shown = screen_of(app).shown
            assert shown is not None
            sides.add(shown.left)
            await pilot.press("1")
    assert sides == {"a", "b"}
    chosen_left = store.query("SELECT count(*) FROM labels WHERE outcome = shown_left")[1][0][0]
    assert chosen_left == 10


async def test_verdict_line_reports_screen_terms_after_label(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=WIDE) as pilot:
        shown = screen_of(app).shown
        assert shown is not None
        assert text(app, "#why") == ""  # blind until labeled
        await pilot.press("2")
        line = text(app, "#why")
        assert line.startswith("last: you chose B")
        r_left = shown.reward_a if shown.left == "a" else shown.reward_b
        p_left = shown.p_a if shown.left == "a" else 1 - shown.p_a  # type: ignore[operator]
        assert f"r̂A {r_left:.2f}" in line and f"p(A≻B) {p_left:.2f}" in line
        assert "rank 1" in line


async def test_reveal_always_shows_why_before_label(store: Store) -> None:
    cfg = store.load_config().replace("loop", reveal="always")
    app = LabelApp(LabelDesk(store, cfg))
    async with app.run_test(size=WIDE):
        assert text(app, "#why").startswith("why: hybrid")


async def test_undo_three_times_then_label_again(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=WIDE) as pilot:
        labeled: list[ShownPair] = []
        for key in ("1", "2", "3", "4"):
            labeled.append(screen_of(app).shown)  # type: ignore[arg-type]
            await pilot.press(key)
        for _ in range(3):
            await pilot.press("u")
        effective = store.query("SELECT candidate_id, outcome FROM effective_labels ORDER BY id")[1]
        assert effective == [(labeled[0].candidate_id, labeled[0].left)]
        undos = [r for r in labels(store) if r[1] == "undo"]
        assert [r[0] for r in undos] == [p.candidate_id for p in reversed(labeled[1:])]
        await pilot.press("3")
        assert len(store.query("SELECT * FROM effective_labels")[1]) == 2
        # A fourth and fifth undo reach the first label; a sixth finds nothing and says so.
        await pilot.press("backspace", "u", "u")
        assert store.query("SELECT count(*) FROM effective_labels")[1][0][0] == 0
        assert screen_of(app).shown is not None


async def test_undo_shows_the_undone_pair_again(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=WIDE) as pilot:
        first = screen_of(app).shown
        assert first is not None
        await pilot.press("1")
        await pilot.press("u")
        again = screen_of(app).shown
        assert again is not None and again.candidate_id == first.candidate_id


async def test_quit_and_reopen_shows_the_same_pair(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = make_store(root)
    app = new_app(store)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("1", "2")
        pending = screen_of(app).shown
        assert pending is not None
        await pilot.press("q")
    store.close()
    assert (root / "snapshot" / "labels.parquet").exists()  # written on quit for other processes
    store = Store(root)
    app = new_app(store)
    async with app.run_test(size=WIDE):
        again = screen_of(app).shown
        assert again is not None
        assert (again.candidate_id, again.left) == (pending.candidate_id, pending.left)
        assert text(app, "#left-text") == pending.left_text
    assert len(store.query("SELECT * FROM effective_labels")[1]) == 2
    store.close()


async def test_empty_pool_shows_waiting_then_a_pair(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "store")
    store.add_prompts(["Only prompt"], split="train", source="t")
    app = new_app(store)
    async with app.run_test(size=NARROW) as pilot:
        assert screen_of(app).shown is None
        assert "worker is stopped" in text(app, "#waiting")
        await pilot.press("1")  # nothing to label: no crash, nothing written
        assert labels(store) == []
        store.add_candidates([NewCandidate(prompt_id=1, completion_a="x", completion_b="y", adapter_version=0,
                                           temperature=0.7, top_p=1.0, max_new_tokens=8)])
        screen_of(app).pool_changed()  # what a PoolGenerated message triggers
        assert screen_of(app).shown is not None
        assert text(app, "#prompt-text") == "Only prompt"
    store.close()


@pytest.mark.parametrize(("size", "stacked"), [(NARROW, True), (WIDE, False)])
async def test_layout_side_by_side_or_stacked(store: Store, size: tuple[int, int], stacked: bool) -> None:
    app = new_app(store)
    async with app.run_test(size=size):
        left = app.screen.query_one("#left-pane").region
        right = app.screen.query_one("#right-pane").region
        assert screen_of(app).has_class("narrow") is stacked
        if stacked:
            assert right.y >= left.bottom and left.width == right.width
        else:
            assert right.x >= left.right and left.y == right.y
        for widget_id in ("#prompt-box", "#why", "#status"):
            region = app.screen.query_one(widget_id).region
            assert region.bottom <= size[1] and region.height >= 1


async def test_j_k_scroll_both_panes_together(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=NARROW) as pilot:
        left = app.screen.query_one("#left-pane")
        right = app.screen.query_one("#right-pane")
        long_pane = left if len(screen_of(app).shown.left_text) > 300 else right  # type: ignore[union-attr]
        await pilot.press("j", "j")
        assert long_pane.scroll_y > 0
        await pilot.press("k", "k")
        assert long_pane.scroll_y == 0


async def test_diff_highlights_only_differing_words(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("d")
        content = app.screen.query_one("#left-text").content
        marked = {content.plain[s.start:s.end] for s in content.spans}
        assert marked and "and" not in marked  # "and" occurs in both completions
        await pilot.press("d")
        assert not app.screen.query_one("#left-text").content.spans


async def test_status_line_counts_labels(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("1", "2", "s")
        await caught_up(pilot)
        status = text(app, "#status")
        assert "3 labels / 3 now" in status and "pool 9" in status
        assert "scored by base" in status


async def test_next_pair_repaints_the_texts_not_the_panes(store: Store) -> None:
    # Re-setting an unchanged border title repaints the whole pane: on every key that doubled the frame.
    app = new_app(store)
    async with app.run_test(size=WIDE) as pilot:
        repainted: list[str] = []
        for selector in ("#prompt-box", "#left-pane", "#right-pane"):
            pane = app.screen.query_one(selector)
            pane.refresh = (lambda refresh, name: lambda *a, **k: (repainted.append(name), refresh(*a, **k))[1])(
                pane.refresh, selector)
        await pilot.press("1", "2")
        assert repainted == []
        await pilot.press("d")
        assert app.screen.query_one("#left-pane").border_subtitle == "diff on"
        assert {"#left-pane", "#right-pane"} <= set(repainted)


async def test_a_new_pair_starts_at_the_top(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=NARROW) as pilot:
        await pilot.press("j", "j")
        assert max(app.screen.query_one(s).scroll_y for s in ("#left-pane", "#right-pane")) > 0
        await pilot.press("1")
        await pilot.pause()
        assert [app.screen.query_one(s).scroll_y for s in ("#left-pane", "#right-pane")] == [0, 0]
