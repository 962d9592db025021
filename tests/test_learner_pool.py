"""The pool never runs dry while prompts remain: refill before a round, and between training steps."""

from __future__ import annotations

from apl_tui.config import AplConfig
from apl_tui.desk import LabelDesk
from apl_tui.events import PoolGenerated, StepProgressed, TrainStepDone
from apl_tui.learner import QUICK_FIRST_CHUNK, Learner
from apl_tui.store import Store
from tests.fakes import FakePolicy


def _config(**acq) -> AplConfig:
    cfg = AplConfig()
    cfg = cfg.replace("model", spec="tiny-random", device="cpu", max_prompt_tokens=24)
    cfg = cfg.replace("generation", min_new_tokens=2, max_new_tokens=6, batch_size=4)
    cfg = cfg.replace("acquisition", **({"name": "random", "warmup_labels": 4, "pool_size": 8, "low_water": 4,
                                         "control_share": 0.0, "chunk_size": 8} | acq))
    cfg = cfg.replace("train", epochs=2, batch_size=2, warmup_steps=0)
    return cfg.replace("loop", round_size=4)


def _store(tmp_path, cfg, n=60) -> Store:
    store = Store.create(tmp_path, cfg)
    store.add_prompts([f"train prompt {i}" for i in range(n)], split="train", source="t")
    return store


def _label(desk: LabelDesk, n: int) -> None:
    for i in range(n):
        shown = desk.next_pair()
        assert shown is not None, "the pool ran dry"
        desk.record_label(shown, "ab"[i % 2])


def test_a_low_pool_is_refilled_before_a_due_round(tmp_path):
    cfg = _config()
    store = _store(tmp_path, cfg)
    learner, desk = Learner(store, cfg, policy=FakePolicy()), LabelDesk(store, cfg)
    events: list = []
    assert learner.step(events.append) == "generated 8 pairs"
    # in front of an empty pool the first chunk is small: a pair to label comes sooner
    done = [e.done for e in events if isinstance(e, StepProgressed)]
    assert done[:3] == [0, QUICK_FIRST_CHUNK, 3 * QUICK_FIRST_CHUNK]  # then doubling up to a batch
    _label(desk, 6)  # a round is due, and the pool (2) is below low water (4)
    assert learner.round_due()[0] and store.pool_size() == 2
    assert learner.step() == "generated 6 pairs"
    assert store.pool_size() == 8


def test_labels_during_a_round_never_empty_the_pool(tmp_path, tiny_policy):
    cfg = _config()
    store = _store(tmp_path, cfg)
    learner, desk = Learner(store, cfg, policy=tiny_policy), LabelDesk(store, cfg)
    events: list = []

    def sink(event):
        events.append(event)
        # A fast labeler: at every training step the person empties the pool entirely.
        if isinstance(event, TrainStepDone) and event.step >= 1:
            while (shown := desk.next_pair()) is not None:
                desk.record_label(shown, "a")

    assert learner.step(sink) == "generated 8 pairs"
    _label(desk, 4)
    assert learner.step(sink) == "trained adapter v1"
    steps = [e for e in events if isinstance(e, TrainStepDone) and e.step >= 1]
    assert len(steps) >= 3
    # after each emptied step the learner refilled from the reference before the next step
    between = [e for e in events[events.index(steps[0]):] if isinstance(e, PoolGenerated)]
    assert len(between) >= len(steps) - 1 and all(e.adapter_version == 0 and e.added > 0 for e in between)
    assert store.pool_size() >= cfg.acquisition.low_water
    assert store.latest_adapter()["version"] == 1
    # the labels given during the round count toward the next one
    assert learner.round_due()[1] > 0
