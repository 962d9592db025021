"""Σ log p(completion | prompt) for many rows: the one scorer behind `Policy.sequence_logps_ids`.

Two paths, the same numbers (to float rounding):

- padded: each row is [prompt + completion], left-padded, in length-sorted batches; logits only
  at completion positions.
- shared prefix: when several completions of one prompt are scored (the two sides of a pair, the
  N completions of an acquisition group, entropy samples), the prompt's body pass runs ONCE and
  its key/value cache is copied to each of its completions, which are then batched by length.
  See `shared_prefix_rows` for which rows take it and `shared_prefix_works` for which models.

torch and transformers are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from apl_tui.policy import Policy

logger = logging.getLogger(__name__)

CHUNK_BATCHES = 4
"""Completion batches per shared-prefix chunk: the prompts' caches of one chunk are held at once
(a bound on memory), and its completions are sorted by length across all of its batches."""


def score(policy: Policy, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *,
          grad: bool, batch_size: int, features: bool) -> Any:
    """`Policy.sequence_logps_ids` under the caller's adapter and grad context: (B,) [, φ (B, d)].

    Rows go to the shared-prefix path (`shared_prefix_rows`) or the padded one; each path returns
    its rows' log-probs, which are put back in the caller's order (differentiably, for DPO).
    Training (grad=True) keeps the padded path: the shared one gives the same gradients, but a DPO
    step's forward + backward was no faster with it (0.97×, 8 pairs, SmolLM2-135M, one thread),
    and padded rows keep LoRA dropout independent between a pair's two sides.
    """
    import torch

    shared = [] if grad else shared_prefix_rows(policy, prompt_ids, completion_ids)  # ascending
    padded = sorted(set(range(len(prompt_ids))) - set(shared))
    # Longest first: less padding per batch.
    padded.sort(key=lambda i: -(len(prompt_ids[i]) + len(completion_ids[i])))
    rows: list[int] = []
    pieces: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for start in range(0, len(padded), batch_size):
        idx = padded[start:start + batch_size]
        rows += idx
        pieces.append(padded_batch(policy, [list(prompt_ids[i]) for i in idx],
                                   [list(completion_ids[i]) for i in idx], features=features))
    if shared:
        idx, logps, phi = shared_prefix_logps(policy, [prompt_ids[i] for i in shared],
                                              [completion_ids[i] for i in shared],
                                              batch_size=batch_size, features=features)
        rows += [shared[j] for j in idx]
        pieces.append((logps, phi))
    device = pieces[0][0].device
    inverse = torch.empty(len(rows), dtype=torch.long)
    inverse[torch.tensor(rows)] = torch.arange(len(rows))
    logps = torch.cat([p[0] for p in pieces])[inverse.to(device)]  # (B,) in the caller's order
    logps = logps if grad else logps.detach().float().cpu()
    if not features:
        return logps
    return logps, torch.cat([p[1] for p in pieces if p[1] is not None])[inverse]  # (B, d)


# --- the padded path ------------------------------------------------------------------------------


def padded_batch(policy: Policy, prompts: list[list[int]], completions: list[list[int]], *,
                 features: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass over a left-padded batch; logits only at completion positions.

    Returns (logps (b,) on the model's device, φ (b, d) float32 on the CPU or None).
    """
    import torch

    device = policy.device
    lengths = torch.tensor([len(c) for c in completions], device=device)  # (b,)
    cmax = int(lengths.max())
    if cmax == 0:
        zeros = torch.zeros(len(prompts), device=device)
        return zeros, (torch.zeros(len(prompts), policy.model.config.hidden_size) if features else None)
    input_ids, mask = policy._left_pad([p + c for p, c in zip(prompts, completions)])  # (b, L)
    # Explicit positions: with left padding, each row's first real token is position 0.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (b, L)
    # The last token is only ever a target, so it is not fed. Left padding puts every
    # completion at the end of its row, so the last `cmax` outputs predict the last `cmax`
    # tokens, of which each row keeps its own completion's (the LM head dominates small models).
    inputs = {"input_ids": input_ids[:, :-1], "attention_mask": mask[:, :-1],
              "position_ids": positions[:, :-1], "use_cache": False}
    keep = torch.arange(cmax, device=device) >= (cmax - lengths).unsqueeze(1)  # (b, cmax)
    targets = input_ids[:, -cmax:][keep]  # (N,) the kept positions, row by row
    if policy._use_packed_head():
        # The body's hidden states at the kept positions, packed into one (N, d) matrix, go
        # through the head in ONE 2-D matmul. The model's own `logits_to_keep` projects a
        # non-contiguous (b, cmax, d) slice instead: with LoRA loaded, torch then runs one small
        # matmul per row, each repacking the (V, d) weight (measured 1.2× slower end to end).
        hidden = policy.base.get_decoder()(**inputs).last_hidden_state  # (b, L-1, d)
        token_logps = _token_logps(policy, hidden[:, -cmax:][keep], targets)  # (N,)
    else:
        # transformers ties hidden_states[-1] to last_hidden_state (after the final norm), so
        # φ is the same on both paths.
        out = policy.model(**inputs, output_hidden_states=features,
                           **({"logits_to_keep": cmax} if policy._logits_to_keep else {}))
        hidden = out.hidden_states[-1] if features else None  # (b, L-1, d)
        logits = out.logits[:, -cmax:][keep].float()  # (N, V); log-softmax in fp32 even for bf16 models
        token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)  # (N,)
    logps = _row_sums(token_logps, keep)
    return logps, (_pool(hidden[:, -cmax:], keep) if features else None)


def _row_sums(token_logps: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Σ per row of token_logps (N,), the values at the True cells of keep (b, w), row by row."""
    import torch

    rows = torch.arange(keep.shape[0], device=keep.device).unsqueeze(1).expand_as(keep)[keep]  # (N,)
    return torch.zeros(keep.shape[0], dtype=token_logps.dtype, device=keep.device).index_add(0, rows, token_logps)


def _pool(hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of hidden (b, w, d) over the True cells of keep (b, w): φ (b, d) float32 on the CPU, 0 if none."""
    weights = keep.float().unsqueeze(-1)  # (b, w, 1)
    return ((hidden.detach().float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)).cpu()


# --- batching by length --------------------------------------------------------------------------


BATCH_OVERHEAD = 8
"""A forward pass's fixed cost in token rows, for `length_batches`: per-op overhead, and thinner
matmuls for fewer rows (SmolLM2-135M on one CPU thread: a pass costs ≈ 2.4 ms per token row)."""

HEAD_COLUMNS = 2048
"""Vocabulary rows of the head per matmul when scoring without grad (see `_token_logps`)."""


def length_batches(lengths: Sequence[int], batch_size: int, overhead: int = BATCH_OVERHEAD) -> list[list[int]]:
    """Indices into `lengths` in batches of at most `batch_size`, longest first, with little padding.

    Minimises Σ over batches of (rows × its longest row + overhead): the token rows a batch computes
    (padding included) plus a fixed cost per pass, so that equal lengths go together without
    splitting the work into many thin passes. The best split of the sorted rows into runs
    (dynamic programming, O(n · batch_size)).

    Example: lengths [9, 3, 9, 3], batch_size 4, overhead 2 → [[0, 2], [1, 3]]
    (2·9 + 2 + 2·3 + 2 = 28 token rows, against 4·9 + 2 = 38 in one batch).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = [0] + [float("inf")] * len(order)  # best[j]: cost of the first j rows of `order`
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(max(0, j - batch_size), j):
            cost = best[i] + (j - i) * lengths[order[i]] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches, j = [], len(order)
    while j > 0:
        batches.append(order[cut[j]:j])
        j = cut[j]
    return batches[::-1]


def _token_logps(policy: Policy, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log-softmax(head(hidden))[target] per row: hidden (N, d), targets (N,) → (N,) float32.

    Without grad, and for a plain Linear head, the (N, V) logits are never held at once: the
    head's weight goes `HEAD_COLUMNS` vocabulary rows at a time, and each block's log-sum-exp is
    taken while the block is still in the cache (one (N, V) matrix written out to memory and read
    back by log-sum-exp cost 28 % more, SmolLM2-135M, 320 rows, one thread); the target's logit
    is its own dot product. With grad, for another head, or in half precision (where the target's
    logit would be rounded differently from its block's) the head runs once over all rows.
    """
    import torch
    import torch.nn.functional as F

    head = policy.base.get_output_embeddings()
    if torch.is_grad_enabled() or type(head) is not torch.nn.Linear or head.weight.dtype != torch.float32:
        logits = head(hidden).float()  # (N, V); log-softmax in fp32 even for bf16
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    weight, bias = head.weight, head.bias  # (V, d), (V,) or None
    blocks = [F.linear(hidden, weight[s:s + HEAD_COLUMNS], None if bias is None else bias[s:s + HEAD_COLUMNS])
              .float().logsumexp(-1) for s in range(0, weight.shape[0], HEAD_COLUMNS)]
    picked = (hidden.float() * weight[targets].float()).sum(-1)  # (N,) the targets' logits
    if bias is not None:
        picked = picked + bias[targets].float()
    return picked - torch.stack(blocks, -1).logsumexp(-1)


# --- the shared-prefix path -----------------------------------------------------------------------


def shared_prefix_rows(policy: Policy, prompt_ids: Sequence[Sequence[int]],
                       completion_ids: Sequence[Sequence[int]]) -> list[int]:
    """The rows scored with a shared prompt pass: the rule, in one place.

    A row shares when its completion is non-empty and another row of this call with a non-empty
    completion has the same prompt; and only if the model supports it (`shared_prefix_works`).
    Everything else takes the padded path, and so does training (`score`).
    """
    counts: dict[tuple[int, ...], int] = {}
    eligible = [i for i in range(len(prompt_ids)) if prompt_ids[i] and completion_ids[i]]
    for i in eligible:
        key = tuple(prompt_ids[i])
        counts[key] = counts.get(key, 0) + 1
    rows = [i for i in eligible if counts[tuple(prompt_ids[i])] >= 2]
    return rows if rows and _use_shared_prefix(policy) else []


def shared_prefix_logps(policy: Policy, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
                        batch_size: int, features: bool) -> tuple[list[int], torch.Tensor, torch.Tensor | None]:
    """Log-probs (and φ) with each distinct prompt's body pass run once: (rows, logps, φ).

    `rows[j]` is the index (into the arguments) of the j-th output. Every prompt and every
    completion needs ≥ 1 token. Prompts go in chunks of about `CHUNK_BATCHES * batch_size`
    completions. Within a chunk the prompts run through the body (`length_batches`), which caches
    their keys and values and gives, at each prompt's last position, the prediction of the first
    token of ALL its completions (one head row per prompt). Each completion is then fed without
    its last token on its prompt's cache, batched by length (`length_batches`).

    Example: prompt [5, 6] with completions [7, 2] and [9]: one pass over [5, 6] caches its keys
    and values, and its output at 6 predicts 7 and 9; then one batch feeds [7] on that cache,
    whose output predicts 2.
    """
    import torch

    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(tuple(p), []).append(i)
    order = sorted(groups, key=len, reverse=True)
    rows: list[int] = []
    logps: list[torch.Tensor] = []
    phis: list[torch.Tensor] = []
    chunk: list[tuple[int, ...]] = []
    size = 0
    for n, key in enumerate(order):
        chunk.append(key)
        size += len(groups[key])
        if size >= CHUNK_BATCHES * batch_size or n == len(order) - 1:
            lp, phi = _chunk_logps(policy, [list(k) for k in chunk], [groups[k] for k in chunk], completions,
                                   batch_size=batch_size, features=features)
            rows += [i for k in chunk for i in groups[k]]
            logps.append(lp)
            if phi is not None:
                phis.append(phi)
            chunk, size = [], 0
    return rows, torch.cat(logps), (torch.cat(phis) if features else None)


def _chunk_logps(policy: Policy, prompts: list[list[int]], members: list[list[int]],
                 completions: Sequence[Sequence[int]], *, batch_size: int,
                 features: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk of `shared_prefix_logps`: (logps, φ) of completions members[0] + members[1] + …"""
    import torch

    cache = _prefix_cache(policy, prompts, batch_size)
    owners = [u for u, ms in enumerate(members) for _ in ms]  # (M,) prompt of each row
    comps = [list(completions[i]) for ms in members for i in ms]
    who = torch.tensor(owners, device=policy.device)
    # The first completion token: one head row per prompt, read by each of its completions.
    firsts = torch.tensor([c[0] for c in comps], device=policy.device)
    logits = policy.base.get_output_embeddings()(cache["last"]).float()  # (U, V)
    logps = logits[who, firsts] - logits.logsumexp(-1)[who]  # (M,)
    phi = cache["last"][who].detach().float().cpu() if features else None  # (M, d) sums, divided below
    rest = [j for j, c in enumerate(comps) if len(c) >= 2]
    for batch in length_batches([len(comps[j]) - 1 for j in rest], batch_size):
        part = [rest[b] for b in batch]
        lp, hsum = _completion_batch(policy, cache, [owners[j] for j in part], [comps[j] for j in part],
                                     features=features)
        logps = logps.index_add(0, torch.tensor(part, device=logps.device), lp)
        if phi is not None and hsum is not None:
            phi = phi.index_add(0, torch.tensor(part), hsum)
    if phi is not None:
        phi = phi / torch.tensor([float(len(c)) for c in comps]).unsqueeze(1)
    return logps, phi


def _prefix_cache(policy: Policy, prompts: list[list[int]], batch_size: int) -> dict[str, Any]:
    """The body's keys and values over left-padded prompts, in `length_batches`, and its last outputs.

    Returns {"kv": [(K, V) per layer, each (U, H, W, hd)], "mask": (U, W), "lengths": (U,),
    "last": (U, d) the body's output at each prompt's last token}, in the order of `prompts`,
    every row left-padded to the longest prompt W (zero keys and values under mask 0).
    """
    import torch
    import torch.nn.functional as F

    width = max(len(p) for p in prompts)
    kv: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    masks, lasts, done = [], [], []
    decoder = policy.base.get_decoder()
    for batch in length_batches([len(p) for p in prompts], batch_size):
        ids, mask = policy._left_pad([prompts[u] for u in batch])  # (b, w)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = _plain_cache(out)
        if cache is None:  # `shared_prefix_works` saw a plain cache on this model: this would be a bug
            raise RuntimeError("the body's cache is not plain DynamicLayers: score with shared_prefix = False")
        pad = width - ids.shape[1]
        masks.append(F.pad(mask, (pad, 0)))
        lasts.append(out.last_hidden_state[:, -1])  # (b, d): left padding puts every last token at -1
        done += batch
        for n, layer in enumerate(cache.layers):
            if n == len(kv):
                kv.append(([], []))
            kv[n][0].append(F.pad(layer.keys, (0, 0, pad, 0)))  # (b, H, W, hd)
            kv[n][1].append(F.pad(layer.values, (0, 0, pad, 0)))
    back = torch.empty(len(done), dtype=torch.long)
    back[torch.tensor(done)] = torch.arange(len(done))  # batch order → the order of `prompts`
    back = back.to(policy.device)
    lengths = torch.tensor([len(p) for p in prompts], device=policy.device)
    return {"kv": [(torch.cat(k)[back], torch.cat(v)[back]) for k, v in kv], "mask": torch.cat(masks)[back],
            "lengths": lengths, "last": torch.cat(lasts)[back]}


def _completion_batch(policy: Policy, cache: dict[str, Any], owners: list[int], completions: list[list[int]], *,
                      features: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Score completions after their first token on copies of their prompts' caches.

    Row j feeds completions[j][:-1] (≥ 1 token), right-padded, at positions that continue its
    prompt, on the cache rows of prompt owners[j]; its outputs predict completions[j][1:].
    Returns (Σ of those log-probs (b,), Σ of the body's outputs there (b, d) on the CPU, or None).
    """
    import torch
    from transformers.cache_utils import DynamicCache

    device = policy.device
    pad_id = policy.tokenizer.pad_token_id
    width = max(len(c) for c in completions) - 1
    inputs = torch.full((len(completions), width), pad_id, dtype=torch.long)
    targets = torch.full((len(completions), width), pad_id, dtype=torch.long)
    keep = torch.zeros((len(completions), width), dtype=torch.bool)
    for j, c in enumerate(completions):
        inputs[j, :len(c) - 1] = torch.tensor(c[:-1])
        targets[j, :len(c) - 1] = torch.tensor(c[1:])
        keep[j, :len(c) - 1] = True
    inputs, targets, keep = inputs.to(device), targets.to(device), keep.to(device)
    who = torch.tensor(owners, device=device)  # (b,)
    past = DynamicCache(ddp_cache_data=[(k[who], v[who]) for k, v in cache["kv"]])
    mask = torch.cat([cache["mask"][who], keep.long()], dim=1)  # (b, W + width)
    positions = cache["lengths"][who].unsqueeze(1) + torch.arange(width, device=device)  # (b, width)
    decoder = policy.base.get_decoder()
    hidden = decoder(input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=True,
                     **{_cache_kwarg(decoder): past}).last_hidden_state  # (b, width, d)
    logps = _row_sums(_token_logps(policy, hidden[keep], targets[keep]), keep)
    hsum = (hidden.detach().float() * keep.unsqueeze(-1)).sum(1).cpu() if features else None
    return logps, hsum


def _cache_kwarg(decoder: Any) -> str:
    """The name under which this transformers version's decoder takes a cache."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _plain_cache(out: Any) -> Any:
    """The cache a body pass returned, if it is a `DynamicCache` of plain full-attention layers; else None.

    The model builds its own cache (from its config), so sliding-window or linear-attention layers
    show up here; transformers 4's caches have no `layers` and also give None.
    """
    from transformers import cache_utils

    cache = getattr(out, "cache", None)
    if cache is None:  # transformers before the rename to `cache`
        cache = getattr(out, "past_key_values", None)
    plain = getattr(cache_utils, "DynamicLayer", None)
    layers = getattr(cache, "layers", None)
    if type(cache) is not cache_utils.DynamicCache or plain is None or not layers:
        return None
    return cache if all(type(layer) is plain for layer in layers) else None


def _use_shared_prefix(policy: Policy) -> bool:
    """Whether this model scores with a shared prompt pass (decided once, see `shared_prefix_works`)."""
    if policy.shared_prefix is None:
        policy.shared_prefix = shared_prefix_works(policy)
    return policy.shared_prefix


def shared_prefix_works(policy: Policy) -> bool:
    """Whether the shared-prefix path applies to this model: the rule, checked once on a probe.

    It needs (1) the packed head (a body that can run alone, `Policy._use_packed_head`); (2) a
    body whose cache is transformers' `DynamicCache` of plain full-attention `DynamicLayer`s
    (sliding-window, linear-attention or older-transformers caches keep the padded path); and
    (3) the same log-probs as the padded path on a probe of uneven prompts.
    """
    import torch

    if not policy._use_packed_head():
        return False
    probe = torch.tensor([[policy.tokenizer.eos_token_id or 0, 5, 6]], device=policy.device)
    with torch.no_grad():
        cache = _plain_cache(policy.base.get_decoder()(input_ids=probe, use_cache=True))
    if cache is None:
        logger.info("scoring without a shared prompt pass (the model's cache is not plain DynamicLayers)")
        return False
    prompts = [[5, 6, 7, 8, 9], [5, 6, 7, 8, 9], [11, 12], [11, 12]]
    completions = [[20, 21, 22], [23], [24, 25], [26, 27, 28, 29]]
    with torch.no_grad():
        want, _ = padded_batch(policy, prompts, completions)
        rows, got, _ = shared_prefix_logps(policy, prompts, completions, batch_size=4, features=False)
    tol = 1e-3 if policy.base.dtype == torch.float32 else 5e-2
    same = bool(torch.allclose(got.float(), want[torch.tensor(rows)].float(), rtol=tol, atol=tol))
    if not same:
        logger.info("scoring without a shared prompt pass (the probe's log-probs differ)")
    return same


def packed_head_works(policy: Policy) -> bool:
    """Whether the body + head split reproduces the model's own logits, on a probe (see `padded_batch`)."""
    import torch

    base = policy.base
    try:
        ids = torch.tensor([[policy.tokenizer.eos_token_id or 0, 5, 6, 7]], device=policy.device)
        with torch.no_grad():
            want = base(input_ids=ids, use_cache=False).logits[0].float()  # (4, V)
            hidden = base.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
            got = base.get_output_embeddings()(hidden[0]).float()  # (4, V)
    except (AttributeError, TypeError, NotImplementedError) as e:
        logger.info("logits through the model's own forward (no body/head split: %s)", e)
        return False
    # Another matmul shape may round differently: 1 ulp of bf16/fp16 is ≈ 0.4 % (soft-capping
    # or scaling changes logits by far more).
    tol = 1e-3 if base.dtype == torch.float32 else 2e-2
    same = got.shape == want.shape and bool(torch.allclose(got, want, rtol=tol, atol=tol))
    if not same:
        logger.info("logits through the model's own forward (the head alone differs from its logits)")
    return same
