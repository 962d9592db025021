"""`apl label --eval`: a person measures an adapter against the reference, blind, on the test split.

The labeling screen runs unchanged over an `EvalDesk` (it serves eval pairs instead of pool pairs)
while an `EvalLearner` generates those pairs on the learner's thread, a chunk ahead of the
person, so no key press waits for the model. Pairs are made exactly as `apl eval` makes them
(same temperature, lengths, chunking and seeds, hence the same settings hash), so the human
win-rate sits beside the oracles' for the same completions.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

from apl_tui.batch import EvalSettings
from apl_tui.config import AplConfig
from apl_tui.desk import DeskStatus
from apl_tui.errors import AplError, check_cancel
from apl_tui.eval_store import HUMAN
from apl_tui.events import LabelRecorded, PoolGenerated, ProgressSink, StepProgressed, ignore
from apl_tui.learner import Learner
from apl_tui.records import OUTCOMES, ShownPair
from apl_tui.store import Store

AHEAD = 8
"""Pairs kept ready beyond the one on screen (generation runs while the person reads)."""


@dataclass(frozen=True)
class EvalPlan:
    """Which adapter, which test prompts, and the settings that make the evaluation comparable."""

    adapter_version: int
    adapter_path: str
    tests: list[tuple[int, str]]
    settings: EvalSettings
    digest: str


def plan_eval(store: Store, config: AplConfig, adapter_version: int | None = None,
              prompts: int | None = None, seed: int = 0) -> EvalPlan:
    """The evaluation `apl eval` would run for this adapter (default: the latest), as a plan."""
    versions = store.adapter_versions()
    if not versions:
        raise AplError("no adapter to evaluate yet", hint="label until a round has trained, then apl label --eval")
    version = adapter_version if adapter_version is not None else versions[-1]
    info = store.adapter(version)
    if info is None:
        raise AplError(f"no adapter v{version}", hint=f"versions: {', '.join(f'v{v}' for v in versions)}")
    if info["retired"]:
        raise AplError(f"adapter v{version} is retired", hint="evaluate another version (see `apl stats`)")
    tests = store.test_prompts(prompts)
    if not tests:
        raise AplError("no test prompts to evaluate on", hint="apl import FILE --split test")
    gen = config.generation
    settings = EvalSettings(gen.eval_temperature, gen.max_new_tokens, len(tests), seed)
    return EvalPlan(version, info["path"], tests, settings, settings.digest([i for i, _ in tests]))


class EvalDesk:
    """The label desk's interface (next_pair, record_label, undo, status) over one evaluation's pairs."""

    def __init__(self, store: Store, plan: EvalPlan, config: AplConfig | None = None) -> None:
        self.store = store
        self.config = config or store.load_config()
        self.plan = plan
        """The evaluation being judged."""
        self._session_labels = 0

    @property
    def finished(self) -> bool:
        """Every test prompt has a verdict."""
        judged, _ = self.store.eval_counts(self.plan.adapter_version, self.plan.digest, HUMAN)
        return judged >= len(self.plan.tests)

    def waiting_text(self) -> str:
        """What the labeling screen says when no pair is ready."""
        if self.finished:
            return (f"Done: every test prompt has your verdict on adapter v{self.plan.adapter_version}.\n"
                    "Press g for the win-rate (or run apl stats); q quits.")
        return "Generating the next pairs (adapter vs reference)… they appear here as soon as they are ready."

    def next_pair(self, source: str = HUMAN) -> ShownPair | None:
        """The next pair of the evaluation without a verdict; A is always the left pane."""
        p = self.store.next_eval_pair(self.plan.adapter_version, self.plan.digest, source)
        if p is None:
            return None
        # Revealed only after the verdict (loop.reveal), like any 'why this pair'.
        reveal = f"adapter v{self.plan.adapter_version} was {p.policy_side.upper()}"
        return ShownPair(candidate_id=p.id, prompt_id=p.prompt_id, prompt=p.prompt, completion_a=p.completion_a,
                         completion_b=p.completion_b, left="a", control=False, acquisition=reveal, score=None,
                         rank=p.position + 1, entropy=None, reward_a=None, reward_b=None, p_a=None, fallback=None,
                         scored_by=None, labels_since_scored=None)

    def record_label(self, shown: ShownPair, outcome: str, *, source: str = HUMAN, latency_ms: int | None = None,
                     rationale: str | None = None, sink: ProgressSink = ignore) -> int:
        """Commit a verdict and the evaluation's new tally (one transaction)."""
        if outcome not in OUTCOMES:
            raise AplError(f"unknown outcome {outcome!r}", hint=f"one of {', '.join(OUTCOMES)}")
        jid = self.store.record_eval_judgment(shown.candidate_id, outcome, source=source, shown_left=shown.left,
                                              latency_ms=latency_ms, settings=self.plan.settings.__dict__)
        self._session_labels += 1
        sink(LabelRecorded(candidate_id=shown.candidate_id, outcome=outcome, source=source))
        return jid

    def undo(self, source: str = HUMAN) -> int | None:
        """Undo the newest verdict; its pair is the next one shown."""
        undone = self.store.undo_eval_judgment(self.plan.adapter_version, self.plan.digest, source,
                                               settings=self.plan.settings.__dict__)
        if undone is not None:
            self._session_labels = max(0, self._session_labels - 1)
        return undone

    def status(self) -> DeskStatus:
        """Verdicts given, pairs ready, and progress through the test prompts."""
        judged, made = self.store.eval_counts(self.plan.adapter_version, self.plan.digest, HUMAN)
        return DeskStatus(labels_total=judged, labels_session=self._session_labels, pool_size=made - judged,
                          adapter_version=self.plan.adapter_version, labels_since_round=judged,
                          round_due_at=len(self.plan.tests), progress="eval")


class EvalLearner(Learner):
    """A learner whose only job is making the evaluation's pairs, a chunk ahead of the person."""

    def __init__(self, store: Store, plan: EvalPlan, config: AplConfig | None = None, **kw: Any) -> None:
        super().__init__(store, config, **kw)
        self.plan = plan

    def make_pairs(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None) -> int:
        """Generate the next chunk (generation.batch_size test prompts), as `apl eval` chunks them."""
        plan, bs = self.plan, self.config.generation.batch_size
        start = self.store.eval_pairs_made(plan.adapter_version, plan.digest)
        chunk = plan.tests[start:start + bs]
        if not chunk:
            return 0
        s = plan.settings
        kw = dict(n=1, temperature=s.temperature, top_p=1.0, min_new_tokens=0, max_new_tokens=s.max_new_tokens,
                  seed=s.seed + start, batch_size=bs)
        with self.heavy_lock:
            policy = self.load_policy(sink, cancel)
            check_cancel(cancel)
            policy.load_adapter(self.store.root / plan.adapter_path, plan.adapter_version)
            try:
                texts = [t for _, t in chunk]
                mine = [g[0].text for g in policy.generate(texts, adapter=True, **kw)]
                check_cancel(cancel)
                ref = [g[0].text for g in policy.generate(texts, adapter=False, **kw)]
            finally:
                self.sync_adapter()
        rows = []
        for k, ((pid, _), m, r) in enumerate(zip(chunk, mine, ref)):
            side = "a" if random.Random(f"{plan.digest}:{start + k}").random() < 0.5 else "b"  # blind
            rows.append((start + k, pid, m, r, side))
        check_cancel(cancel)
        self.store.add_eval_pairs(plan.adapter_version, plan.digest, s.__dict__, rows)
        sink(StepProgressed("evaluation pairs", start + len(rows), len(plan.tests)))
        sink(PoolGenerated(added=len(rows), adapter_version=plan.adapter_version))
        return len(rows)

    def step(self, sink: ProgressSink = ignore, cancel: threading.Event | None = None) -> str | None:
        """Load the model, then keep `AHEAD` pairs ready until every test prompt has one."""
        if self.policy is None:
            with self.heavy_lock:
                self.load_policy(sink, cancel)
            return "loaded model"
        judged, made = self.store.eval_counts(self.plan.adapter_version, self.plan.digest, HUMAN)
        if made >= len(self.plan.tests) or made - judged > AHEAD:
            return None
        n = self.make_pairs(sink, cancel)
        return f"made {n} evaluation pairs" if n else None
