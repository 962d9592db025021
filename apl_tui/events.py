"""Progress events: frozen, past-tense facts sent to a caller's sink.

The engine calls `sink(event)` and knows nothing of who listens: the CLI draws Rich progress,
the TUI posts a Textual message, tests append to a list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """Base class of all progress events."""


@dataclass(frozen=True)
class ModelLoaded(Event):
    spec: str
    device: str
    seconds: float


@dataclass(frozen=True)
class StepProgressed(Event):
    """Generic progress of a named phase (generating, scoring, reference, converting)."""

    phase: str
    done: int
    total: int


@dataclass(frozen=True)
class PoolGenerated(Event):
    added: int
    adapter_version: int


@dataclass(frozen=True)
class PoolScored(Event):
    scored: int
    adapter_version: int
    acquisition: str


@dataclass(frozen=True)
class TrainStepDone(Event):
    step: int
    total: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundTrained(Event):
    adapter_version: int
    labels_used: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelRecorded(Event):
    candidate_id: int
    outcome: str
    source: str


@dataclass(frozen=True)
class EvalFinished(Event):
    adapter_version: int
    win_rate: float
    stderr: float
    n: int


@dataclass(frozen=True)
class WarningRaised(Event):
    """Something the user should know that does not stop the work (e.g. DPO stuck at ln 2)."""

    message: str


ProgressSink = Callable[[Event], None]


def ignore(_: Event) -> None:
    """A sink that drops every event."""
