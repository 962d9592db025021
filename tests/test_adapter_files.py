"""Adapter files that go wrong (issue 15): missing or cut weights, a full disk while saving,
temp folders left by a kill -9, and undo after a round. One line each, the store stays usable.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.config import AplConfig
from apl_tui.desk import LabelDesk
from apl_tui.errors import ModelError, StoreError
from apl_tui.rounds import train_round
from apl_tui.store import Store
from apl_tui.tui.widgets.status_line import status_text
from tests.helpers import make_store

runner = CliRunner()


def small_config() -> AplConfig:
    cfg = AplConfig().replace("model", spec="tiny-random", device="cpu", max_prompt_tokens=24)
    return cfg.replace("train", epochs=1, batch_size=2, warmup_steps=0)


def labeled_store(root: Path) -> Store:
    """Six pairs with cached reference log-probs, three of them labeled a/b."""
    store = make_store(root, config=small_config())
    for cid, outcome in zip([c["id"] for c in store.candidates()][:3], "aba"):
        store.record_label(cid, outcome, source="human", shown_left="a")
    return store


def lora_layers(policy: Any) -> int:
    return sum("lora" in name for name, _ in policy.base.named_modules())


def train_v1(store: Store, policy: Any) -> Path:
    info = train_round(store, policy, store.load_config(), label_clock=store.label_events(), sink=lambda e: None,
                       cancel=None)
    assert info is not None and info.version == 1
    return store.root / info.path


@pytest.mark.parametrize("damage", ["missing", "half", "header only", "empty", "zeros"])
def test_damaged_weights_are_one_clear_line_and_leave_the_base_model_clean(tmp_path, tiny_policy, damage):
    store = labeled_store(tmp_path)
    folder = train_v1(store, tiny_policy)
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes({"half": data[: len(data) // 2], "header only": data[:20], "empty": b"",
                             "zeros": bytes(len(data))}[damage])
    tiny_policy.drop_adapter()
    with pytest.raises(ModelError) as e:
        tiny_policy.load_adapter(folder, 1)
    assert "Repo id" not in e.value.message and "\n" not in e.value.message
    assert "v1" in e.value.message and "retire" in e.value.hint
    # The failed load left no LoRA layers behind in the reference model.
    assert not tiny_policy.has_adapter and lora_layers(tiny_policy) == 0


def test_cli_says_one_line_when_the_current_adapter_lost_its_weights(tmp_path, tiny_policy, model_cache,
                                                                      monkeypatch):
    store = labeled_store(tmp_path)
    (train_v1(store, tiny_policy) / "adapter_model.safetensors").unlink()
    store.close()
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    r = runner.invoke(app, ["score", "--store", str(tmp_path)])
    assert r.exit_code == 1
    assert "error: cannot load adapter v1: no weights file" in r.stderr
    assert "Traceback" not in r.stderr and "Repo id" not in r.stderr


def test_full_disk_while_saving_records_nothing_and_resyncs_the_policy(tmp_path, tiny_policy, monkeypatch):
    store = labeled_store(tmp_path)
    train_v1(store, tiny_policy)
    from peft import PeftModel

    def no_space(self: Any, path: str, **kw: Any) -> None:
        Path(path, "adapter_model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PeftModel, "save_pretrained", no_space)
    store.record_label([c["id"] for c in store.candidates()][3], "b", source="human", shown_left="b")
    with pytest.raises(StoreError) as e:
        train_round(store, tiny_policy, store.load_config(), label_clock=store.label_events(),
                    sink=lambda e: None, cancel=None)
    assert "No space left on device" in e.value.message and "nothing was recorded" in e.value.hint
    assert store.latest_adapter()["version"] == 1
    assert sorted(p.name for p in (store.root / "adapters").iterdir()) == ["v1"]  # no temp folder, no v2
    assert tiny_policy.adapter_version == 1 and tiny_policy.has_adapter  # the recorded one, reloaded


def test_full_disk_through_apl_train_is_one_line(tmp_path, model_cache, monkeypatch):
    labeled_store(tmp_path).close()
    from peft import PeftModel

    def no_space(self: Any, path: str, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PeftModel, "save_pretrained", no_space)
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    r = runner.invoke(app, ["train", "--store", str(tmp_path)])
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert "error: cannot save adapter" in r.stderr and "No space left on device" in r.stderr
    with Store(tmp_path) as s:
        assert s.latest_adapter() is None
    assert list((tmp_path / "adapters").iterdir()) == []


def test_leftovers_of_a_killed_save_are_removed_on_open(tmp_path):
    store = Store.create(tmp_path / "s")
    adapters = store.root / "adapters"
    store.close()
    (adapters / "v1").mkdir()
    (adapters / "v1" / "adapter_config.json").write_text("{}")
    # A killed process's temp folder (old and new naming) and replaced version; a save in
    # progress in this very process (its pid in the name) must survive another Store open.
    ours = f".v3.tmp-{os.getpid()}-abc123"
    for name in (".v2.k3j4x", ".v2.tmp-999999-q1w2", ".v1.old-4242", ours):
        (adapters / name).mkdir()
        (adapters / name / "adapter_model.safetensors").write_bytes(b"x" * 10)
    Store(tmp_path / "s", read_only=True).close()  # a reader never deletes anything
    assert (adapters / ".v2.k3j4x").exists()
    Store(tmp_path / "s").close()
    assert sorted(p.name for p in adapters.iterdir()) == [ours, "v1"]


def test_status_line_says_the_adapter_trained_on_an_undone_label(tmp_path, tiny_policy):
    store = labeled_store(tmp_path)
    desk = LabelDesk(store, store.load_config())
    assert desk.status().undone_in_adapter == 0
    train_v1(store, tiny_policy)
    assert desk.status().undone_in_adapter == 0
    newest = [c["id"] for c in store.candidates()][3]
    store.record_label(newest, "a", source="human", shown_left="a")
    desk.undo()  # a label made after the round: the adapter never saw it
    assert desk.status().undone_in_adapter == 0
    desk.undo()  # the newest label v1 trained on
    status = desk.status()
    assert status.undone_in_adapter == 1 and status.adapter_version == 1
    line = status_text(status, "idle", None, None)
    assert "v1 trained on 1 undone label; retrains next round" in line
    desk.undo()
    assert desk.status().undone_in_adapter == 2
    # The next round trains without them: the count is back to zero.
    train_round(store, tiny_policy, store.load_config(), label_clock=store.label_events(), sink=lambda e: None,
                cancel=None)
    assert desk.status().undone_in_adapter == 0
    assert "undone" not in status_text(desk.status(), "idle", None, None)
