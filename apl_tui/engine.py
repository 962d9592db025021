"""The active-learning loop on one thread: a label desk and a learner over one store.

The labeling app keeps the two apart (the desk on the UI thread, the learner on its own
thread; see `tui/app.py`). Batch mode, experiments and the `apl` commands run both from one
thread, so they hold them together here. State lives in the store, so any process can stop at
any moment and the next one continues.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apl_tui.config import AplConfig
from apl_tui.desk import LabelDesk
from apl_tui.learner import Learner
from apl_tui.store import Store


class Engine:
    """A desk (`next_pair`, `record_label`, `undo`, `status`) and a learner (load, refill, score, train)."""

    def __init__(self, store: Store, config: AplConfig | None = None, *, policy: Any = None,
                 cache_dir: Path | None = None) -> None:
        self.store = store
        self.config = config or store.load_config()
        self.desk = LabelDesk(store, self.config)
        """The store-only half (pairs and verdicts)."""
        self.learner = Learner(store, self.config, policy=policy, cache_dir=cache_dir)
        """The model half (heavy work, one job at a time)."""
