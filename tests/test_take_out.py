"""Take the model and the data out: `apl adapter export [--merge]` and `apl export --format hf`.

The exported model is loaded back with plain transformers/peft and its log-probs are computed by
an independent forward pass here, then compared with the store's adapter (to 1e-4).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apl_tui.chat import encode_messages
from apl_tui.cli import app
from apl_tui.config import AplConfig
from apl_tui.learner import Learner
from apl_tui.store import Store

runner = CliRunner()
PROMPTS = ["The film was", "I watched this movie and", "Honestly, the plot", "Every scene felt"]
COMPLETIONS = [(" wonderful and moving.", " dull and slow."), (" loved every minute.", " fell asleep twice."),
               (" is clever and warm.", " makes no sense."), (" alive and honest.", " flat and long.")]


def small_config(spec: str = "tiny-random") -> AplConfig:
    cfg = AplConfig().replace("model", spec=spec, device="cpu", max_prompt_tokens=24)
    cfg = cfg.replace("generation", min_new_tokens=2, max_new_tokens=6, batch_size=8)
    cfg = cfg.replace("acquisition", name="certainty", warmup_labels=4, pool_size=8, low_water=2,
                      control_share=0.0, chunk_size=8)
    cfg = cfg.replace("train", epochs=3, batch_size=4, warmup_steps=0, learning_rate=5e-3)
    return cfg.replace("loop", round_size=4)


def preference_file(path: Path, *, chat: bool = False) -> Path:
    """Eight chosen/rejected rows over eight distinct prompts (plain text, or one user turn each)."""
    rows = []
    for i in range(8):
        text = PROMPTS[i % 4] + (" again" if i >= 4 else "")
        chosen, rejected = COMPLETIONS[i % 4]
        prompt: Any = [{"role": "user", "content": text}] if chat else text
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def plain_logps(model: Any, tokenizer: Any, prompt_ids: list[int], completion: str) -> float:
    """Σ log p(completion tokens | prompt) by one unbatched forward pass with full logits."""
    import torch

    comp = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + comp])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()  # (T, V)
    logp = torch.log_softmax(logits[:-1], -1)  # row t predicts token t + 1
    targets = ids[0, 1:]
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return float(picked[len(prompt_ids) - 1:].sum())


@pytest.fixture
def trained_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path, tiny_model: Any) -> Any:
    """A tiny-random store with imported labels and one trained adapter (v1)."""
    from apl_tui.policy import Policy

    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    cfg = small_config()
    root = tmp_path / "store"
    Store.create(root, cfg).close()
    r = runner.invoke(app, ["import", str(preference_file(tmp_path / "p.jsonl")), "--completions",
                            "--store", str(root)])
    assert r.exit_code == 0, r.output
    model, tok = tiny_model
    policy = Policy(copy.deepcopy(model), tok, cfg=cfg.model, device="cpu", spec="tiny-random")
    with Store(root) as store:
        info = Learner(store, cfg, policy=policy).train()
        assert info is not None and info.version == 1
    return root, policy


def test_adapter_export_peft_and_merged_match_the_store(tmp_path: Path, trained_store: Any,
                                                        model_cache: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from apl_tui.models import load_model

    root, policy = trained_store
    prompts = [PROMPTS[0], PROMPTS[1]]
    completions = [COMPLETIONS[0][0], COMPLETIONS[1][1]]
    expected = policy.sequence_logps(prompts, completions).tolist()
    reference = policy.reference_logps(prompts, completions).tolist()
    assert max(abs(a - b) for a, b in zip(expected, reference)) > 1e-3  # the adapter moved the model
    prompt_ids = policy.encode_prompts(prompts)

    r = runner.invoke(app, ["adapter", "export", "1", str(tmp_path / "peft"), "--store", str(root)])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "peft" / "apl_adapter.json").read_text())
    assert info["version"] == 1 and info["labels_used"] == 8 and info["merged"] is False
    base, _ = load_model("tiny-random", "cpu", model_cache, seed=0)
    with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 deprecated helper (not ours)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "peft")
    got = [plain_logps(peft_model, tok, p, c) for p, c in zip(prompt_ids, completions)]
    assert got == pytest.approx(expected, abs=1e-4)

    r = runner.invoke(app, ["adapter", "export", "1", str(tmp_path / "merged"), "--merge", "--store", str(root)])
    assert r.exit_code == 0, r.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    got = [plain_logps(merged, tok, p, c) for p, c in zip(prompt_ids, completions)]
    assert got == pytest.approx(expected, abs=1e-4)


def test_adapter_export_errors_change_nothing(tmp_path: Path, trained_store: Any) -> None:
    root, _ = trained_store
    r = runner.invoke(app, ["adapter", "export", "7", str(tmp_path / "out"), "--store", str(root)])
    assert r.exit_code == 1 and "no adapter v7" in r.output and "this store has v1" in r.output
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    r = runner.invoke(app, ["adapter", "export", "1", str(tmp_path / "full"), "--store", str(root)])
    assert r.exit_code == 1 and "not an empty folder" in r.output
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # A retired adapter can still be taken out (to inspect it), with a note.
    assert runner.invoke(app, ["adapter", "retire", "1", "--store", str(root)]).exit_code == 0
    r = runner.invoke(app, ["adapter", "export", "1", str(tmp_path / "old"), "--store", str(root)])
    assert r.exit_code == 0 and "v1 is retired" in r.output
    assert json.loads((tmp_path / "old" / "apl_adapter.json").read_text())["retired"] is True


# --- the dataset ---------------------------------------------------------------------------------


def imported_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path, *, chat: bool) -> Path:
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    root = tmp_path / ("chat" if chat else "plain")
    Store.create(root, small_config()).close()
    r = runner.invoke(app, ["import", str(preference_file(tmp_path / f"{root.name}.jsonl", chat=chat)),
                            "--completions", "--store", str(root)])
    assert r.exit_code == 0, r.output
    return root


@pytest.mark.parametrize("chat", [False, True])
def test_hf_export_loads_with_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path,
                                       chat: bool) -> None:
    datasets = pytest.importorskip("datasets")
    root = imported_store(tmp_path, monkeypatch, model_cache, chat=chat)
    out = tmp_path / "ds"
    r = runner.invoke(app, ["export", "--format", "hf", str(out), "--test-share", "0.3", "--store", str(root)])
    assert r.exit_code == 0, r.output
    ds = datasets.load_dataset("parquet", data_dir=str(out))
    assert set(ds) == {"train", "test"} and ds["train"].num_rows + ds["test"].num_rows == 8
    assert ds["test"].num_rows > 0
    train_prompts = {json.dumps(p) for p in ds["train"]["prompt"]}
    assert not train_prompts & {json.dumps(p) for p in ds["test"]["prompt"]}  # no prompt in both
    row = ds["train"][0]
    if chat:
        assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert "conversational" in (out / "README.md").read_text()
    else:
        assert isinstance(row["prompt"], str) and isinstance(row["chosen"], str)
    card = (out / "README.md").read_text()
    assert "| imported | 8 |" in card and "Tie policy: ties dropped" in card
    assert f"| train | {ds['train'].num_rows} |" in card


def test_hf_export_empty_test_split_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               model_cache: Path) -> None:
    datasets = pytest.importorskip("datasets")
    root = imported_store(tmp_path, monkeypatch, model_cache, chat=False)
    r = runner.invoke(app, ["export", "--format", "hf", str(tmp_path / "ds"), "--test-share", "0",
                            "--store", str(root)])
    assert r.exit_code == 0, r.output
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "ds"))
    assert set(ds) == {"train"} and ds["train"].num_rows == 8
    assert "| test | 0 |" in (tmp_path / "ds" / "README.md").read_text()
    # A chat prompt among plain ones: Parquet holds one format, so nothing is written.
    with Store(root) as s:
        s.add_prompts([encode_messages([{"role": "user", "content": "Hi"}])], split="train", source="t")
        pid = s.query("SELECT max(id) FROM prompts")[1][0][0]
        from apl_tui.records import NewCandidate

        (cid,) = s.add_candidates([NewCandidate(pid, "Hello", "Go away", 0, 0.7, 1.0, 24)])
        s.record_label(cid, "a", source="human")
    r = runner.invoke(app, ["export", "--format", "hf", str(tmp_path / "mixed"), "--store", str(root)])
    assert r.exit_code == 1 and "mix chat prompts and plain prompts" in r.output
    assert not (tmp_path / "mixed").exists()
    r = runner.invoke(app, ["export", "--format", "hf", "--store", str(root)])
    assert r.exit_code == 1 and "needs an output folder" in r.output
    jsonl = runner.invoke(app, ["export", "--store", str(root)])
    lines = [json.loads(x) for x in jsonl.stdout.splitlines()]
    assert lines[-1]["prompt"] == [{"role": "user", "content": "Hi"}]
    assert lines[-1]["chosen"] == [{"role": "assistant", "content": "Hello"}]


def test_imported_pairs_are_scored_once_and_never_regenerated(tmp_path: Path, trained_store: Any) -> None:
    from apl_tui.acquisition import implicit_rewards

    root, policy = trained_store
    f = tmp_path / "more.jsonl"
    f.write_text(json.dumps({"prompt": "The ending", "completions": [" was perfect.", " dragged on.", " hm."]})
                 + "\n", encoding="utf-8")
    assert runner.invoke(app, ["import", str(f), "--completions", "--store", str(root)]).exit_code == 0
    cfg = small_config()
    with Store(root) as store:
        learner = Learner(store, cfg, policy=policy)
        assert learner.score() == 3
        rows = store.query("SELECT c.completion_a, c.completion_b, c.ref_logp_a, c.ref_logp_b, s.reward_a, "
                           "s.reward_b, s.fallback, s.adapter_version FROM candidates c JOIN scores s "
                           "ON s.candidate_id = c.id WHERE c.origin = 'imported' AND c.prompt_id = "
                           "(SELECT id FROM prompts WHERE text = 'The ending') ORDER BY c.id")[1]
        assert len(rows) == 3
        for a, b, ref_a, ref_b, reward_a, reward_b, fallback, version in rows:
            assert fallback is None and version == 1  # a real certainty score under adapter v1
            assert [ref_a, ref_b] == pytest.approx(policy.reference_logps(["The ending"] * 2, [a, b],
                                                                          [True, True]).tolist(), abs=1e-5)
            pa_, pb_ = policy.sequence_logps(["The ending"] * 2, [a, b], [True, True]).tolist()
            assert (reward_a, reward_b) == pytest.approx(implicit_rewards(pa_, pb_, ref_a, ref_b,
                                                                          cfg.train.beta)[:2], abs=1e-5)
        before = store.query("SELECT id, completion_a, completion_b FROM candidates ORDER BY id")[1]
        assert learner.refill(target=50) == 0  # every train prompt already has candidates
        assert store.query("SELECT id, completion_a, completion_b FROM candidates ORDER BY id")[1] == before


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")  # TRL/transformers deprecations
def test_trl_dpo_trainer_takes_the_exports_unchanged(tmp_path: Path, trained_store: Any,
                                                    monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> None:
    """One DPOTrainer step (TRL, the bench extra) on the merged model and both dataset formats."""
    import math

    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, _ = trained_store
    assert runner.invoke(app, ["adapter", "export", "1", str(tmp_path / "m"), "--merge", "--store",
                               str(root)]).exit_code == 0
    chat_root = imported_store(tmp_path, monkeypatch, model_cache, chat=True)
    for store, name in ((root, "plain-ds"), (chat_root, "chat-ds")):
        r = runner.invoke(app, ["export", "--format", "hf", str(tmp_path / name), "--store", str(store)])
        assert r.exit_code == 0, r.output
        ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / name))
        args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=2, max_steps=1,
                             report_to=[], save_strategy="no", use_cpu=True, max_length=64, seed=0)
        trainer = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tmp_path / "m"), args=args,
                                 train_dataset=ds["train"],
                                 processing_class=AutoTokenizer.from_pretrained(tmp_path / "m"))
        assert math.isfinite(trainer.train().training_loss)
