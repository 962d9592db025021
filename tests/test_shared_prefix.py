"""Scoring that shares the prompt: one body pass per prompt, its cache reused by its completions.

Every test compares against the padded path (`Policy.shared_prefix = False`, the scorer before
issue 17) and, where cheap, against an unpadded full-logits computation of each row.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from apl_tui import logps
from apl_tui.config import LoraSettings, ModelConfig
from apl_tui.policy import Policy

# Uneven prompt lengths; pairs, a group of four with an empty completion, a repeated 1-token prompt
# (""), and a prompt of its own.
ROWS = [
    ("The movie was", " great fun", True),
    ("The movie was", " dull and far too long for anyone", False),
    ("I watched this film last night with my whole family and", " we loved it", True),
    ("I watched this film last night with my whole family and", " nobody laughed", True),
    ("I watched this film last night with my whole family and", "", False),
    ("I watched this film last night with my whole family and", " the ending", False),
    ("I watched this film last night with my whole family and", " it was fine", True),
    ("", " alone", True),
    ("", " also alone", False),
    ("Bad", " acting", True),
]


def naive_logp(policy: Policy, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """Full logits of one unpadded sequence; sum the completion tokens' log-probs."""
    full = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        lp = torch.log_softmax(policy.model(full).logits[0].float(), -1)  # (T, V)
    return sum(float(lp[t - 1, full[0, t]]) for t in range(len(prompt_ids), full.shape[1]))


def perturb_lora(policy: Policy, seed: int) -> None:
    """A LoRA adapter whose B matrices are random, so it changes the model."""
    policy.new_adapter(LoraSettings(r=4), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def both_paths(policy: Policy, rows: list[tuple[str, str, bool]], **kw: Any) -> tuple[Any, Any]:
    """(shared, padded) results of `sequence_logps` over rows."""
    out = []
    for flag in (None, False):  # None: decided by the rule
        policy.shared_prefix = flag
        out.append(policy.sequence_logps([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], **kw))
        assert policy.shared_prefix is (flag is None)  # the rule shares on this model
    return out[0], out[1]


def test_the_rule_picks_rows_with_a_completion_that_repeat_a_prompt(tiny_policy: Policy) -> None:
    p_ids = tiny_policy.encode_prompts([r[0] for r in ROWS])
    c_ids = tiny_policy.encode_completions([r[1] for r in ROWS], [r[2] for r in ROWS])
    assert len(p_ids[7]) == 1  # "" is the BOS alone: its one token is cached and predicts both completions
    # Not the empty completion (4), not the prompt of its own (9).
    assert logps.shared_prefix_rows(tiny_policy, p_ids, c_ids) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert tiny_policy.shared_prefix is True
    assert logps.shared_prefix_rows(tiny_policy, p_ids[9:], c_ids[9:]) == []  # a prompt of its own
    tiny_policy.shared_prefix = False
    assert logps.shared_prefix_rows(tiny_policy, p_ids, c_ids) == []


@pytest.mark.parametrize("adapter", [True, False])
def test_shared_prompt_pass_gives_the_same_log_probs_and_features(tiny_policy: Policy, adapter: bool) -> None:
    perturb_lora(tiny_policy, seed=3)
    (shared, phi_s), (padded, phi_p) = both_paths(tiny_policy, ROWS, adapter=adapter, batch_size=3, features=True)
    assert shared.shape == (len(ROWS),) and shared.dtype == torch.float32
    assert torch.allclose(shared, padded, atol=1e-4), (shared, padded)
    assert torch.allclose(phi_s, phi_p, atol=1e-4)
    assert shared[4] == 0 and torch.count_nonzero(phi_s[4]) == 0  # the empty completion
    p_ids = tiny_policy.encode_prompts([r[0] for r in ROWS])
    c_ids = tiny_policy.encode_completions([r[1] for r in ROWS], [r[2] for r in ROWS])
    with tiny_policy._adapter(adapter):
        naive = torch.tensor([naive_logp(tiny_policy, p, c) for p, c in zip(p_ids, c_ids)])
    assert torch.allclose(shared, naive, atol=1e-4)
    plain, _ = both_paths(tiny_policy, ROWS, adapter=adapter, batch_size=3)
    assert torch.allclose(plain, shared, atol=1e-5)  # features do not change the log-probs


def test_gradients_through_the_shared_cache_match_the_padded_ones(tiny_policy: Policy) -> None:
    """The shared path is differentiable (the gradient flows into the prompt pass through its cache)
    and agrees with the padded one; training itself keeps the padded path (see `logps.score`)."""
    perturb_lora(tiny_policy, seed=5)
    p_ids = tiny_policy.encode_prompts([r[0] for r in ROWS])
    c_ids = tiny_policy.encode_completions([r[1] for r in ROWS], [r[2] for r in ROWS])
    rows = logps.shared_prefix_rows(tiny_policy, p_ids, c_ids)
    weights = torch.linspace(1.0, 2.0, len(rows))  # unequal: the order of the rows matters
    grads, values = [], []
    for shared in (True, False):
        for q in tiny_policy.trainable_parameters():
            q.grad = None
        with torch.enable_grad():
            if shared:
                idx, lp, _ = logps.shared_prefix_logps(tiny_policy, [p_ids[i] for i in rows],
                                                       [c_ids[i] for i in rows], batch_size=2, features=False)
                lp = lp[torch.tensor(idx).argsort()]
            else:
                lp, _ = logps.padded_batch(tiny_policy, [p_ids[i] for i in rows], [c_ids[i] for i in rows])
        assert lp.requires_grad
        (lp * weights).sum().backward()
        values.append(lp.detach())
        grads.append(torch.cat([q.grad.flatten() for q in tiny_policy.trainable_parameters()]))
    assert torch.allclose(values[0], values[1], atol=1e-4)
    assert grads[0].abs().max() > 0
    # Relative to the gradient's scale (|g| up to ≈ 170 with this adapter): entries that are sums
    # of large terms that cancel keep float32 rounding of ≈ 1e-5 of the scale, whatever the path.
    scale = float(grads[1].abs().max())
    assert float((grads[0] - grads[1]).abs().max()) <= 1e-4 * scale
    assert float((grads[0] - grads[1]).norm()) <= 1e-4 * float(grads[1].norm())


def test_training_scores_every_row_padded(tiny_policy: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    perturb_lora(tiny_policy, seed=5)
    calls: list[int] = []
    real = logps.shared_prefix_logps

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(logps, "shared_prefix_logps", counted)
    texts = ([r[0] for r in ROWS], [r[1] for r in ROWS], [r[2] for r in ROWS])
    assert tiny_policy.sequence_logps(*texts, grad=True).requires_grad and not calls
    tiny_policy.sequence_logps(*texts)  # scoring without grad does share
    assert calls


def test_groups_across_chunks_and_batches_come_back_in_the_callers_order(tiny_policy: Policy) -> None:
    """N completions per prompt over several chunks (batch_size 2: 8 rows a chunk), shuffled rows."""
    words = " good bad long short film story music ending cast".split()
    prompts = [" ".join(words[:k + 2]) for k in range(7)]
    rows = [(p, " " + " ".join(words[(i + j) % 9:(i + j) % 9 + 1 + j]), j % 2 == 0)
            for i, p in enumerate(prompts) for j in range(3)]
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    rows = [rows[i] for i in perm]
    (shared, phi_s), (padded, phi_p) = both_paths(tiny_policy, rows, batch_size=2, features=True)
    assert torch.allclose(shared, padded, atol=1e-4)
    assert torch.allclose(phi_s, phi_p, atol=1e-4)
    assert len(set(shared.tolist())) == len(rows)  # distinct rows, not one row copied around


def test_a_sliding_window_model_keeps_the_padded_path(tiny_model: tuple[Any, Any]) -> None:
    """A cache with sliding-window layers is not shared (the rule), and scores as before."""
    from transformers import MistralConfig, MistralForCausalLM

    _, tok = tiny_model
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             sliding_window=64, pad_token_id=tok.pad_token_id)).eval()
    policy = Policy(model, tok, cfg=ModelConfig(spec="tiny-random", device="cpu"), device="cpu", spec="sw")
    got = policy.sequence_logps([r[0] for r in ROWS], [r[1] for r in ROWS], [r[2] for r in ROWS], batch_size=4)
    assert policy.packed_head is True and policy.shared_prefix is False
    p_ids = policy.encode_prompts([r[0] for r in ROWS])
    c_ids = policy.encode_completions([r[1] for r in ROWS], [r[2] for r in ROWS])
    naive = torch.tensor([naive_logp(policy, p, c) for p, c in zip(p_ids, c_ids)])
    assert torch.allclose(got, naive, atol=1e-4)


def test_length_batches_pad_least_for_the_overhead_and_keep_the_size_bound() -> None:
    import itertools

    assert logps.length_batches([9, 3, 9, 3], 4, overhead=2) == [[0, 2], [1, 3]]
    assert logps.length_batches([9, 3, 9, 3], 4, overhead=100) == [[0, 2, 1, 3]]  # passes dear: one batch
    assert logps.length_batches([], 4) == []
    gen = torch.Generator().manual_seed(0)
    for n, size, overhead in ((7, 3, 4), (8, 8, 1), (6, 2, 0)):
        lengths = torch.randint(1, 12, (n,), generator=gen).tolist()
        batches = logps.length_batches(lengths, size, overhead=overhead)
        assert sorted(i for b in batches for i in b) == list(range(n)) and all(0 < len(b) <= size for b in batches)

        def cost(bs: list[list[int]], lengths: list[int] = lengths, overhead: int = overhead) -> int:
            return sum(len(b) * max(lengths[i] for i in b) + overhead for b in bs)

        # Brute force over every split of the rows (sorted, longest first) into consecutive runs.
        order = sorted(range(n), key=lambda i: -lengths[i])
        best = min(cost([order[a:b] for a, b in zip((0,) + cuts, cuts + (n,))])
                   for k in range(n) for cuts in itertools.combinations(range(1, n), k)
                   if all(b - a <= size for a, b in zip((0,) + cuts, cuts + (n,))))
        assert cost(batches) == best


def test_the_head_in_vocabulary_blocks_gives_the_full_log_softmax(tiny_policy: Policy,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    head = tiny_policy.base.get_output_embeddings()
    hidden = torch.randn(9, head.in_features, generator=gen)
    targets = torch.randint(0, head.out_features, (9,), generator=gen)
    want = torch.log_softmax(head(hidden).float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    monkeypatch.setattr(logps, "HEAD_COLUMNS", 7)  # many blocks, the last one short
    assert head.out_features % 7
    with torch.no_grad():
        got = logps._token_logps(tiny_policy, hidden, targets)
    assert torch.allclose(got, want, atol=1e-5)
    with torch.enable_grad():  # with grad: one head matmul, differentiable
        h = hidden.clone().requires_grad_()
        out = logps._token_logps(tiny_policy, h, targets)
        out.sum().backward()
    assert torch.allclose(out.detach(), want, atol=1e-5) and h.grad is not None
