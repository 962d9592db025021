"""Shared-pool experiments: per seed, one pool of reference completions from which every arm selects.

Common random numbers: for a given seed every arm shares the pool (train-prompt subset, its
completions and their order), the warm-up labels, the LoRA initialisation, the DPO data order, the
evaluation prompts and the sampling seeds. The only thing an arm changes is which pairs it sends to
the oracle after the warm-up, so two arms' difference at a seed is the effect of selection plus
training noise, not of a different draw of everything. The warm-up point is identical for all arms,
so it is trained and evaluated once per seed.

Selection each round looks at a window of `k·F_c·F_e` unused pool prompts (the same window for
every arm given the same history) and keeps k pairs, at most one per prompt:

- random / aa: uniform draws (aa with another selection stream: the noise floor, A/A);
- certainty / uncertainty: largest / smallest implicit-reward margin |r̂_i − r̂_j|;
- entropy: prompts with the highest predictive entropy; hybrid: entropy filter to k·F_c prompts,
  then certainty;
- gap-ucb, drts, dopt, dopt+gap: the preference head on frozen features (apl_tui/head_scoring.py),
  refitted from the arm's own labels each round; φ per pool completion comes from the reference
  pass that makes the pool (older pools get it on first use). gap-ucb@softmax: gap-ucb's scores,
  the batch drawn by softmax instead of top-k;
- oracle-max-gap / oracle-min-gap: largest / smallest judge-score gap (they peek at the judge: an
  upper and a lower bound on what selection can do in this regime); oracle-no-ties: uniform among
  pairs the judge does not tie. Experiment-only: refused anywhere else.

Files per seed under `<output>/shared/s<seed>/`: the pool, the reference's evaluation, one JSON per
finished point (resume skips them) with its labels, and the adapters later rounds select with.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from apl_tui.errors import ConfigError

logger = logging.getLogger(__name__)

ORACLE_ARMS = ("oracle-max-gap", "oracle-min-gap", "oracle-no-ties")
HEAD_ARMS = ("gap-ucb", "drts", "dopt", "dopt+gap", "gap-ucb@softmax")
POOL_ARMS = ("random", "aa", "entropy", "certainty", "uncertainty", "hybrid", *HEAD_ARMS, *ORACLE_ARMS)
WARMUP = "_warmup"


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _rounded(phi: Any) -> list[list[float]]:
    """φ rows as JSON-friendly lists (5 decimals: far below the features' spread)."""
    return [[round(float(v), 5) for v in row] for row in phi.tolist()]


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"{seed}:{name}")


def completion_score(oracle: Any, prompt: str, text: str) -> float:
    """The oracle's per-completion score (task judge or vader), for the `oracle-*` arms."""
    if hasattr(oracle, "score"):
        try:
            value = oracle.score(prompt, text)
        except TypeError:
            value = oracle.score(text)
        return float(getattr(value, "score", value))
    raise ConfigError(f"oracle {oracle.name} has no per-completion score", hint="oracle-* arms need imdb-task or vader")


class SeedRun:
    """All arms of one seed: pool, warm-up, rounds, evaluations. Resumable point by point."""

    def __init__(self, exp: Any, seed: int, policy: Any, out: Path, train: list[tuple[int, str]],
                 test: list[tuple[int, str]], log: Any = logger.info) -> None:
        from apl_tui.oracles import build_oracle

        self.exp, self.seed, self.policy, self.log = exp, seed, policy, log
        self.cfg = exp.base.replace("train", seed=seed)
        self.dir = out / "shared" / f"s{seed}"
        self.train, self.test = train, test
        self.oracle = build_oracle(exp.oracle, seed=seed)
        self.k = self.cfg.loop.round_size
        self.warmup = self.cfg.acquisition.warmup_labels

    # --- the pool ---------------------------------------------------------------------------

    def pool(self) -> dict[str, Any]:
        """Per seed: `pool_prompts` train prompts in a seeded order, N reference completions each."""
        path = self.dir / "pool.json"
        cached = _read_json(path)
        if cached is not None:
            return cached
        exp, gen = self.exp, self.cfg.generation
        if len(self.train) < exp.pool_prompts:
            raise ConfigError(f"{exp.pool_prompts} pool prompts wanted, {len(self.train)} train prompts",
                              hint="lower experiment.pool_prompts or raise train_prompts")
        picked = _stream(self.seed, "pool").sample(self.train, exp.pool_prompts)
        texts = [t for _, t in picked]
        samples = self.policy.generate(texts, n=exp.pool_completions, temperature=gen.temperature, top_p=gen.top_p,
                                       min_new_tokens=gen.min_new_tokens, max_new_tokens=gen.max_new_tokens,
                                       seed=self.seed * 7919 + 1, adapter=False, batch_size=gen.batch_size)
        flat = [(p, s) for p, group in zip(texts, samples) for s in group]
        ref_t, phi_t = self.policy.sequence_logps([p for p, _ in flat], [s.text for _, s in flat],
                                                  [s.eos for _, s in flat], adapter=False, batch_size=gen.batch_size,
                                                  features=True)
        ref, phi = ref_t.tolist(), _rounded(phi_t)
        n = exp.pool_completions
        comps = [[{"text": s.text, "eos": s.eos, "ref_logp": ref[i * n + j], "phi": phi[i * n + j],
                   "judge": completion_score(self.oracle, texts[i], s.text) if hasattr(self.oracle, "score") else None}
                  for j, s in enumerate(group)] for i, group in enumerate(samples)]
        pool = {"prompt_ids": [pid for pid, _ in picked], "prompts": texts, "completions": comps}
        _write_json(path, pool)
        return pool

    def pairs_of(self, pool: dict[str, Any], prompt: int) -> list[tuple[int, int, int]]:
        """(prompt, i, j) for every two distinct completions of a prompt (twins teach nothing)."""
        comps = pool["completions"][prompt]
        return [(prompt, i, j) for i, j in itertools.combinations(range(len(comps)), 2)
                if comps[i]["text"].strip() != comps[j]["text"].strip()]

    def label(self, pool: dict[str, Any], pair: tuple[int, int, int]) -> list[Any]:
        """Ask the oracle about one pair: [prompt, i, j, outcome]."""
        p, i, j = pair
        comps = pool["completions"][p]
        verdict = self.oracle.judge(pool["prompts"][p], comps[i]["text"], comps[j]["text"])
        return [p, i, j, verdict.outcome]

    # --- selection --------------------------------------------------------------------------

    def window(self, pool: dict[str, Any], used: set[int], size: int) -> list[int]:
        """The next `size` unused prompts of the seed's shared order."""
        free = [p for p in range(len(pool["prompts"])) if p not in used]
        if len(free) < size:
            raise ConfigError(f"seed {self.seed}: the pool has {len(free)} unused prompts, a round needs {size}",
                              hint="raise experiment.pool_prompts")
        return free[:size]

    def select(self, arm: str, pool: dict[str, Any], used: set[int], round_no: int,
               labels: list[list[Any]] | None = None) -> list[tuple[int, int, int]]:
        """k pairs for this arm's round `round_no` (the policy carries the arm's latest adapter).

        `labels`: the arm's [prompt, i, j, outcome] rows so far (what the head arms learn from).
        """
        a = self.cfg.acquisition
        window = self.window(pool, used, self.k * a.certainty_factor * a.entropy_factor)
        cands = [pair for p in window for pair in self.pairs_of(pool, p)]
        if arm in ("random", "aa", "oracle-no-ties"):
            rng = _stream(self.seed, f"{arm}:{round_no}" if arm != "random" else f"random:{round_no}")
            if arm == "oracle-no-ties":
                cands = [c for c in cands if self._gap(pool, c) > 0] or cands
            rng.shuffle(cands)
            return self._one_per_prompt(cands)
        if arm in HEAD_ARMS:
            from apl_tui.head_scoring import rank_pool_pairs

            self._ensure_features(pool)
            name, _, wrapper = arm.partition("@")
            acq_cfg = self.cfg.replace("acquisition", selection=wrapper).acquisition if wrapper else self.cfg.acquisition
            return self._one_per_prompt(rank_pool_pairs(name, pool, cands, labels or [], acq_cfg, batch=self.k,
                                                        seed=self.seed * 31 + round_no))
        if arm in ("oracle-max-gap", "oracle-min-gap"):
            sign = -1 if arm == "oracle-max-gap" else 1
            return self._one_per_prompt(sorted(cands, key=lambda c: sign * self._gap(pool, c)))
        if arm in ("entropy", "hybrid"):
            from apl_tui import acquisition as acq

            sampler = acq.policy_sampler(self.policy, max_new_tokens=a.entropy_max_new_tokens,
                                         batch_size=self.cfg.generation.batch_size)
            ent = acq.entropy_scores(sampler, [pool["prompts"][p] for p in window], n=a.entropy_samples,
                                     seed=self.seed * 31 + round_no, per_token=a.entropy_per_token)
            keep = self.k if arm == "entropy" else self.k * a.certainty_factor
            kept = {window[i] for i in acq.top_k(ent, keep)}
            cands = [c for c in cands if c[0] in kept]
            if arm == "entropy":
                rng = _stream(self.seed, f"entropy:{round_no}")
                rng.shuffle(cands)
                return self._one_per_prompt(cands)
        margins = self._margins(pool, cands)
        sign = 1 if arm == "uncertainty" else -1
        order = sorted(range(len(cands)), key=lambda i: (sign * margins[i], i))
        return self._one_per_prompt([cands[i] for i in order])

    def _ensure_features(self, pool: dict[str, Any]) -> None:
        """φ for pool completions made before the pool kept it: one reference pass, saved with the pool."""
        comps = pool["completions"]
        flat = [(p, j) for p in range(len(comps)) for j in range(len(comps[p])) if "phi" not in comps[p][j]]
        if not flat:
            return
        _, phi = self.policy.sequence_logps([pool["prompts"][p] for p, _ in flat], [comps[p][j]["text"] for p, j in flat],
                                            [comps[p][j]["eos"] for p, j in flat], adapter=False,
                                            batch_size=self.cfg.generation.batch_size, features=True)
        for (p, j), row in zip(flat, _rounded(phi)):
            comps[p][j]["phi"] = row
        _write_json(self.dir / "pool.json", pool)

    def _gap(self, pool: dict[str, Any], pair: tuple[int, int, int]) -> float:
        comps = pool["completions"][pair[0]]
        return abs(comps[pair[1]]["judge"] - comps[pair[2]]["judge"])

    def _margins(self, pool: dict[str, Any], cands: list[tuple[int, int, int]]) -> list[float]:
        """|r̂_i − r̂_j| with r̂ = β(log π_θ − log π_ref) under the current adapter."""
        needed = sorted({(p, i) for p, a, b in cands for i in (a, b)})
        comps = pool["completions"]
        lp = self.policy.sequence_logps([pool["prompts"][p] for p, _ in needed], [comps[p][i]["text"] for p, i in needed],
                                        [comps[p][i]["eos"] for p, i in needed], adapter=True,
                                        batch_size=self.cfg.generation.batch_size).tolist()
        beta = self.cfg.train.beta
        reward = {key: beta * (v - comps[key[0]][key[1]]["ref_logp"]) for key, v in zip(needed, lp)}
        return [abs(reward[(p, a)] - reward[(p, b)]) for p, a, b in cands]

    def _one_per_prompt(self, ordered: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        taken: set[int] = set()
        out = []
        for c in ordered:
            if c[0] not in taken:
                taken.add(c[0])
                out.append(c)
            if len(out) == self.k:
                break
        return out

    # --- training ---------------------------------------------------------------------------

    def train_on(self, pool: dict[str, Any], labels: list[list[Any]], n_labels: int) -> int:
        """A fresh LoRA (seeded by seed and label count, shared by arms) trained by DPO; pairs used."""
        import torch

        from apl_tui.dpo import train_dpo
        from apl_tui.records import Pair

        pairs, ref_c, ref_r = [], [], []
        for p, i, j, outcome in labels:
            if outcome not in ("a", "b"):
                continue  # ties and unparseable verdicts teach DPO nothing
            w, lo = (i, j) if outcome == "a" else (j, i)
            cw, cl = pool["completions"][p][w], pool["completions"][p][lo]
            pairs.append(Pair(prompt=pool["prompts"][p], chosen=cw["text"], rejected=cl["text"], candidate_id=p,
                              chosen_eos=cw["eos"], rejected_eos=cl["eos"]))
            ref_c.append(cw["ref_logp"])
            ref_r.append(cl["ref_logp"])
        self.policy.new_adapter(self.cfg.lora, seed=self.seed * 1000 + n_labels)
        if pairs:
            # LoRA dropout draws from torch's global RNG: seed it so a point never depends on what
            # the process did before (that is what makes --jobs 2 equal --jobs 1).
            with torch.random.fork_rng():
                torch.manual_seed(self.seed * 1000 + n_labels)
                train_dpo(self.policy, pairs, ref_c, ref_r, self.cfg.train)
        return len(pairs)

    # --- the arms ---------------------------------------------------------------------------

    def run(self, arms: tuple[str, ...], schedule: tuple[int, ...], on_point: Any = None) -> list[dict[str, Any]]:
        """Every arm to every schedule point; returns this seed's point records."""
        from apl_tui.evaluation import Evaluator

        t0 = time.perf_counter()
        pool = self.pool()
        evaluator = Evaluator(self.exp, self.cfg, self.seed, self.policy, self.test, self.dir, self.oracle)
        evaluator.reference()
        setup_s = time.perf_counter() - t0
        if schedule[0] != self.warmup:
            raise ConfigError(f"experiment.schedule must start at the warm-up ({self.warmup} labels) in shared-pool mode",
                              hint=f"e.g. [{self.warmup}, {self.warmup + self.k}]")
        if list(schedule) != [self.warmup + self.k * i for i in range(len(schedule))]:
            raise ConfigError("shared-pool schedule points must be the warm-up, then one point per round",
                              hint=f"round size {self.k}: e.g. [{self.warmup}, {self.warmup + self.k}]")
        warm = self._point(WARMUP, pool, evaluator, None, self.warmup, on_point, extra_s=setup_s)
        records = []
        for arm in arms:
            prev = warm
            records.append(warm | {"method": arm, "shared_warmup": True})
            for budget in schedule[1:]:
                prev = self._point(arm, pool, evaluator, prev, budget, on_point)
                records.append(prev)
        return records

    def _point(self, arm: str, pool: dict[str, Any], evaluator: Any, prev: dict[str, Any] | None, budget: int,
               on_point: Any, extra_s: float = 0.0) -> dict[str, Any]:
        path = self.dir / "points" / f"{arm}-{budget}.json"
        done = _read_json(path)
        if done is not None:
            return done
        t0 = time.perf_counter()
        adapters = self.dir / "adapters"
        if prev is None:
            order = _stream(self.seed, "warmup")
            cands = [c for p in range(len(pool["prompts"])) for c in self.pairs_of(pool, p)]
            order.shuffle(cands)
            chosen = self._one_per_prompt_n(cands, self.warmup)
            labels = [self.label(pool, c) for c in chosen]
        else:
            # The previous point's adapter selects this round (certainty needs r̂ under it).
            labels = [list(x) for x in prev["label_rows"]]
            self.policy.load_adapter(adapters / f"{prev['method']}-{prev['labels']}", 1)
            used = {x[0] for x in labels}
            labels += [self.label(pool, c) for c in self.select(arm, pool, used, len(labels) // self.k, labels)]
        select_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        used_pairs = self.train_on(pool, labels, budget)
        self.policy.save_adapter(adapters / f"{arm}-{budget}")
        train_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        metrics, per_prompt = evaluator.evaluate(arm, budget)
        eval_s = time.perf_counter() - t2
        point = {"method": arm, "seed": self.seed, "labels": budget, "pairs": used_pairs, **metrics,
                 "ties_in_labels": sum(1 for x in labels if x[3] not in ("a", "b")),
                 "seconds": round(time.perf_counter() - t0 + extra_s, 1), "select_s": round(select_s, 1),
                 "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "label_rows": labels}
        _write_json(self.dir / "per_prompt" / f"{arm}-{budget}.json", per_prompt)
        _write_json(path, point)
        if on_point is not None:
            on_point(point)
        return point

    def _one_per_prompt_n(self, ordered: list[tuple[int, int, int]], n: int) -> list[tuple[int, int, int]]:
        taken: set[int] = set()
        out = []
        for c in ordered:
            if c[0] not in taken and len(out) < n:
                taken.add(c[0])
                out.append(c)
        return out
