"""Any local Hugging Face causal LM folder works end to end: GPT-2 and Qwen2 shapes built here.

Each model is a 2-layer random network with the SmolLM2 tokenizer (which has a chat template),
saved to a folder and named by path, as a user would name their own model. The whole path runs
through the CLI: init, import prompts and chat completions (with verdicts), an unattended loop
with the vader oracle, and a merged export whose log-probs match the store's adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.config import AplConfig
from apl_tui.store import Store

runner = CliRunner()


def build_model(kind: str, folder: Path, cache: Path) -> Path:
    """Save a tiny random `kind` ("gpt2" or "qwen2") causal LM and the SmolLM2 tokenizer to `folder`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    from apl_tui.models import smollm2_tokenizer

    tok = smollm2_tokenizer(cache)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=160, n_embd=64, n_layer=2, n_head=4,
                                           initializer_range=0.3, **ids))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=160, initializer_range=0.3,
                                             tie_word_embeddings=True, **ids))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def config_file(path: Path, spec: str) -> Path:
    cfg = AplConfig().replace("model", spec=spec, device="cpu", max_prompt_tokens=32)
    cfg = cfg.replace("generation", min_new_tokens=2, max_new_tokens=6, batch_size=8)
    cfg = cfg.replace("acquisition", name="certainty", warmup_labels=4, pool_size=8, low_water=2,
                      control_share=0.0, chunk_size=8)
    cfg = cfg.replace("train", epochs=2, batch_size=4, warmup_steps=0, learning_rate=5e-3)
    cfg.replace("loop", round_size=4).dump(path)
    return path


def invoke(*args: str) -> Any:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.parametrize("kind", ["gpt2", "qwen2"])
def test_local_folder_runs_end_to_end(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      model_cache: Path) -> None:
    from transformers import AutoModelForCausalLM

    from apl_tui.policy import Policy

    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    folder = build_model(kind, tmp_path / kind, model_cache)
    store = str(tmp_path / "store")
    invoke("init", "--store", store, "--config", str(config_file(tmp_path / "c.toml", str(folder))))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"The film number {i} was"}) + "\n" for i in range(24)))
    invoke("import", str(prompts), "--store", store)
    tests = tmp_path / "t.txt"
    tests.write_text("".join(f"This movie {i} is\n" for i in range(3)))
    invoke("import", str(tests), "--split", "test", "--store", store)
    chats = tmp_path / "chat.jsonl"
    chats.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Review film {i}"}],
                                         "chosen": "A joy from start to end.", "rejected": "Dull."}) + "\n"
                             for i in range(4)))
    invoke("import", str(chats), "--completions", "--store", store)
    invoke("run", "--oracle", "vader", "--budget", "8", "--store", store)
    with Store(Path(store)) as s:
        versions = [v for (v,) in s.query("SELECT version FROM adapters ORDER BY 1")[1]]
        sources = dict(s.query("SELECT source, count(*) FROM effective_labels GROUP BY 1")[1])
        cfg = s.load_config()
        chat_prompt = s.query("SELECT text FROM prompts WHERE text LIKE '[{%' LIMIT 1")[1][0][0]
    assert versions and sources == {"imported": 4, "vader": 8}
    # The first round trained on the imported chat labels too: it used all labels then present.

    out = tmp_path / "merged"
    invoke("adapter", "export", str(versions[-1]), str(out), "--merge", "--store", store)
    policy = Policy.load(cfg.model, model_cache)
    policy.load_adapter(Path(store) / "adapters" / f"v{versions[-1]}", versions[-1])
    prompts_ = ["The film number 3 was", chat_prompt]
    completions = [" great and warm", "A joy from start to end."]
    expected = policy.sequence_logps(prompts_, completions).tolist()
    assert max(abs(a - b) for a, b in zip(expected, policy.reference_logps(prompts_, completions).tolist())) > 1e-4
    merged = Policy(AutoModelForCausalLM.from_pretrained(out).eval(), policy.tokenizer, cfg=cfg.model,
                    device="cpu", spec=str(out))
    assert merged.sequence_logps(prompts_, completions).tolist() == pytest.approx(expected, abs=1e-4)
