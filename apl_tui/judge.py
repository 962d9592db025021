"""The IMDB task judge (`--oracle imdb-task`): more positive about the movie AND fluent, on topic,
not repetitive — the paper's whole criterion, not only its first word.

Each completion gets one score from vader and the lexical guards (apl_tui/guards.py):

    score = compound − OOV_WEIGHT · oov − REPEAT_WEIGHT · repetition − OFF_TOPIC_PENALTY · [off topic]

- compound: VADER sentiment in [−1, 1] (the `vader` oracle's scorer, unchanged);
- oov: share of words outside the review-corpus vocabulary (invented words, URL and brand drift);
- repetition: 1 − distinct-2 within the completion ("masterpiece of art – masterpiece of art");
- off topic: neither a film word nor a content word of the prompt.

The higher score wins; equal scores tie (a soft win-rate counts a tie as ½). Off-topic praise
costs a full point, so a praise template that ignores the prompt (≈ +0.8 − 1) loses to any
fluent on-topic continuation that is not negative, while between two fluent on-topic
continuations the more positive one wins exactly as under vader. The weights were set on the
hand-written cases in tests/test_judge.py before any experiment was run, never on evaluation
results. Limits: it is lexical (a fluent template that says "this movie is great" on every prompt
passes; the across-completion guards in experiments are there to catch that), and grammar is only
approximated by the vocabulary.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from apl_tui import guards
from apl_tui.oracles import Verdict, vader_score

OOV_WEIGHT = 2.0
REPEAT_WEIGHT = 1.0
OFF_TOPIC_PENALTY = 1.0


@dataclass(frozen=True)
class TaskScore:
    """One completion's score and the parts it is made of."""

    score: float
    compound: float
    oov: float
    repetition: float
    on_topic: bool

    def explain(self) -> str:
        """A short rationale, e.g. "0.42 = sent 0.62 − oov 0.10 − rep 0.10"."""
        parts = [f"sent {self.compound:.2f}"]
        if self.oov:
            parts.append(f"oov {OOV_WEIGHT * self.oov:.2f}")
        if self.repetition:
            parts.append(f"rep {REPEAT_WEIGHT * self.repetition:.2f}")
        if not self.on_topic:
            parts.append(f"off-topic {OFF_TOPIC_PENALTY:.2f}")
        return f"{self.score:.2f} = " + " − ".join(parts)


def task_score(prompt: str, text: str) -> TaskScore:
    """Score one continuation of `prompt` (higher is better)."""
    compound = vader_score(text)
    oov = guards.oov_share(text, prompt)
    rep = guards.repetition(text)
    topical = guards.on_topic(prompt, text)
    score = compound - OOV_WEIGHT * oov - REPEAT_WEIGHT * rep - (0.0 if topical else OFF_TOPIC_PENALTY)
    return TaskScore(score=round(score, 9), compound=compound, oov=oov, repetition=rep, on_topic=topical)


class TaskJudge:
    """The `imdb-task` oracle: compares `task_score`s; caches scores per (prompt, completion).

    Deterministic and symmetric (judge(p, a, b) mirrors judge(p, b, a)), so no order coin is needed.
    """

    name = "imdb-task"

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], TaskScore] = {}
        self._lock = threading.Lock()

    def score(self, prompt: str, text: str) -> TaskScore:
        """`task_score`, memoised: evaluation judges the reference's completions once per adapter."""
        key = (prompt, text)
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = task_score(prompt, text)
            with self._lock:
                self._cache[key] = hit
        return hit

    def judge(self, prompt: str, a: str, b: str) -> Verdict:
        """The higher task score wins; equal scores tie."""
        sa, sb = self.score(prompt, a), self.score(prompt, b)
        why = f"{sa.explain()} vs {sb.explain()}"
        if sa.score == sb.score:
            return Verdict("tie", why)
        return Verdict("a" if sa.score > sb.score else "b", why)
