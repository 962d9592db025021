"""At 80 columns: one-line status and why lines, help that matches the stacked panes; rate and undo."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apl_tui.desk import DeskStatus
from apl_tui.store import Store
from apl_tui.tui.screens.help import HelpScreen
from apl_tui.tui.widgets.status_line import status_text
from tests.helpers import caught_up
from tests.test_tui import NARROW, WIDE, make_store, new_app, screen_of, text


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = make_store(tmp_path / "store")
    yield s
    s.close()


async def test_status_and_why_stay_one_line_at_80_columns(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=NARROW) as pilot:
        await pilot.press("1")
        for widget_id in ("#why", "#status"):
            widget = app.screen.query_one(widget_id)
            assert widget.region.height == 1, widget_id
        # the compact words fit: nothing that matters is cut by the ellipsis
        assert len(text(app, "#why")) <= NARROW[0] - 2
        assert len(text(app, "#status")) <= NARROW[0] - 2


def test_status_counts_pluralise_and_say_when_a_round_is_due() -> None:
    one = DeskStatus(labels_total=1, labels_session=1, pool_size=3, adapter_version=0, labels_since_round=1,
                     round_due_at=16)
    assert status_text(one, "idle", None, None).startswith("1 label / 1 now")
    due = DeskStatus(labels_total=20, labels_session=20, pool_size=3, adapter_version=1, labels_since_round=17,
                     round_due_at=16)
    assert "v1 round due" in status_text(due, "", None, None, compact=True)


async def test_help_names_the_panes_as_laid_out(store: Store) -> None:
    for size, words in ((NARROW, "A is the top pane"), (WIDE, "A is the left pane")):
        app = new_app(store)
        async with app.run_test(size=size) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            assert words in str(app.screen.query_one("#help-note").content)


async def test_undo_takes_the_label_out_of_the_rate(store: Store) -> None:
    app = new_app(store)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("1", "1", "1")
        screen = screen_of(app)
        assert len(screen.session_times) == 3
        await pilot.press("u")
        assert len(screen.session_times) == 2
        await caught_up(pilot)
        assert screen.desk_status is not None and screen.desk_status.labels_session == 2


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
async def test_a_stop_signal_leaves_like_q(store: Store, sig: str) -> None:
    import os
    import signal

    number = getattr(signal, sig)
    fallback: list[int] = []
    previous = signal.signal(number, lambda s, f: fallback.append(s))  # if the app did not take it over
    try:
        app = new_app(store)
        async with app.run_test(size=WIDE) as pilot:
            await pilot.press("1")
            os.kill(os.getpid(), number)
            for _ in range(100):
                await pilot.pause(0.05)
                if app.shutdown_seconds is not None:
                    break
        assert not fallback, "the app did not handle the signal"
        assert app.shutdown_seconds is not None  # cancel → join → final snapshot ran
        assert (store.root / "snapshot").exists()
    finally:
        signal.signal(number, previous)
