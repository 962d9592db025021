"""Small builders shared by tests: stores with prompts and candidates, no model needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apl_tui.config import AplConfig
from apl_tui.records import NewCandidate, ScoreRow
from apl_tui.store import Store


def make_store(root: Path, *, prompts: int = 6, tests: int = 2, config: AplConfig | None = None) -> Store:
    """A store with `prompts` train and `tests` test prompts and one candidate per train prompt."""
    store = Store.create(root, config)
    store.add_prompts([f"train prompt {i}" for i in range(prompts)], split="train", source="t.txt")
    store.add_prompts([f"test prompt {i}" for i in range(tests)], split="test", source="t.txt")
    ids = [pid for pid, _ in store.sample_prompts(prompts, exclude_used=False)]
    store.add_candidates(
        [NewCandidate(pid, f"A{pid} good", f"B{pid} bad longer", 0, 0.7, 1.0, 24) for pid in sorted(ids)],
        [(-10.0 - pid, -12.0 - pid) for pid in sorted(ids)])
    return store


def score_all(store: Store, values: dict[int, float], *, version: int = 0, name: str = "certainty") -> None:
    store.add_scores([ScoreRow(cid, version, name, v) for cid, v in values.items()])


async def caught_up(pilot: Any) -> None:
    """Let the app take its messages after the label desk's thread did what the keys queued.

    The screen starts the desk's work (status read, next pick) just after a pair's frame; the desk
    writes journaled labels and reads the status line on its own thread, and posts the status
    back: a test reading the status line after keys waits for all three (conditions, not delays).
    """
    from apl_tui.tui.screens.label import LabelScreen

    screen = next(s for s in pilot.app.screen_stack if isinstance(s, LabelScreen))
    for _ in range(500):  # the desk's work starts a moment after the pair is on screen
        await pilot.pause()
        if not screen.after_frame_due:
            break
        await pilot.pause(0.01)
    else:
        raise AssertionError("the screen never started the desk's work after its last pair")
    wait_idle = getattr(pilot.app.desk, "wait_idle", None)
    if wait_idle is not None:
        wait_idle()
    await pilot.pause()
