"""Plain records passed between the store, the engine and the shells."""

from __future__ import annotations

from dataclasses import dataclass

OUTCOMES = ("a", "b", "tie", "both_bad", "skip")
"""Verdicts about a candidate's completions, always in the candidate's own A/B terms."""

"""Outcomes that become DPO training pairs; ties, both-bad and skips do not."""


@dataclass(frozen=True)
class Pair:
    """A prompt with two completions to train on, after position is resolved."""

    prompt: str
    chosen: str
    rejected: str
    candidate_id: int = 0
    chosen_eos: bool = False
    rejected_eos: bool = False


@dataclass(frozen=True)
class NewCandidate:
    """A generated pair before it has an id."""

    prompt_id: int
    completion_a: str
    completion_b: str
    adapter_version: int
    temperature: float
    top_p: float
    max_new_tokens: int
    tokens_a: int = 0
    tokens_b: int = 0
    eos_a: bool = False
    eos_b: bool = False
    entropy: float | None = None
    origin: str = "pool"


@dataclass(frozen=True)
class ScoreRow:
    """One acquisition score for one candidate under one adapter version."""

    candidate_id: int
    adapter_version: int
    acquisition: str
    score: float
    entropy: float | None = None
    reward_a: float | None = None
    reward_b: float | None = None
    p_a: float | None = None
    fallback: str | None = None


@dataclass(frozen=True)
class ShownPair:
    """The next pair to label, with why it was picked and how stale that reason is.

    `left` is which of the candidate's completions ('a' or 'b') goes on the left.
    """

    candidate_id: int
    prompt_id: int
    prompt: str
    completion_a: str
    completion_b: str
    left: str
    control: bool
    acquisition: str | None
    score: float | None
    rank: int | None
    entropy: float | None
    reward_a: float | None
    reward_b: float | None
    p_a: float | None
    fallback: str | None
    scored_by: int | None
    labels_since_scored: int | None
    impression_id: int = 0
    probe_of: int | None = None
    """For a consistency probe: the label whose pair this asks again (sides swapped); else None."""

    @property
    def probe(self) -> bool:
        """Whether this is a consistency probe (it never trains; it measures agreement)."""
        return self.probe_of is not None

    @property
    def left_text(self) -> str:
        return self.completion_a if self.left == "a" else self.completion_b

    @property
    def right_text(self) -> str:
        return self.completion_b if self.left == "a" else self.completion_a

    def outcome_for_side(self, side: str) -> str:
        """Map a screen side ('left'/'right') to the candidate's 'a'/'b'."""
        other = "b" if self.left == "a" else "a"
        return self.left if side == "left" else other


@dataclass(frozen=True)
class AdapterInfo:
    """A trained adapter version as recorded in the store."""

    version: int
    parent: int | None
    labels_used: int
    label_hash: str
    path: str
    metrics: dict[str, float]
