"""End to end as a person would: `apl label` in tmux, keys sent, pane captured, app killed -9.

Every label the screen acknowledged before the kill must be in the store afterwards, and the
pair on screen at the kill is the one served on reopening.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from apl_tui.desk import LabelDesk
from apl_tui.store import Store
from tests.test_tui import make_store

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

LAUNCH = "import apl_tui.cli.ui; from apl_tui.cli import main; main()"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def wait_for(session: str, needle: str, tries: int = 300) -> str:
    """Capture the pane until it shows `needle` (bounded; the pane text is what is asserted)."""
    pane = ""
    for _ in range(tries):
        pane = tmux("capture-pane", "-p", "-t", session)
        if needle in pane:
            return pane
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared; pane was:\n{pane}")


def start(session: str, root: Path) -> int:
    cmd = (f"exec {sys.executable} -c '{LAUNCH}' label --no-worker --store {root}")
    env_cd = f"cd {Path(__file__).resolve().parents[1]} && {cmd}"
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", env_cd)
    return int(tmux("list-panes", "-t", session, "-F", "#{pane_pid}").split()[0])


def test_labels_survive_kill_9(tmp_path: Path) -> None:
    root = tmp_path / "store"
    make_store(root).close()
    session = f"apl-test-{uuid.uuid4().hex[:8]}"
    try:
        pid = start(session, root)
        wait_for(session, "A  [1 ←]")
        expected_effective = 0
        for key, effective in (("1", 1), ("2", 2), ("t", 3), ("4", 4), ("u", 3), ("s", 4), ("Left", 5)):
            tmux("send-keys", "-t", session, key)
            wait_for(session, f"{effective} label{'' if effective == 1 else 's'} ({effective} now")
            expected_effective = effective
        pane = wait_for(session, "last: you chose A")
        prompt_line = next(line for line in pane.splitlines() if "Prompt " in line)
        os.kill(pid, signal.SIGKILL)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    for _ in range(100):  # the killed process releases the file lock when it is gone
        try:
            store = Store(root)
            break
        except Exception:  # noqa: BLE001 — StoreLockedError until the kernel has reaped it
            time.sleep(0.1)
    else:
        raise AssertionError("store still locked after kill -9")
    try:
        events = store.query("SELECT outcome FROM labels ORDER BY id")[1]
        assert [o for (o,) in events].count("undo") == 1
        assert len(events) == 7  # six labels and one undo, all committed before the kill
        assert store.query("SELECT count(*) FROM effective_labels")[1][0][0] == expected_effective
        pending = LabelDesk(store).next_pair()
        assert pending is not None and pending.prompt in prompt_line
    finally:
        store.close()
