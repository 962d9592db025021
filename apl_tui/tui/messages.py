"""Messages the engine worker posts to the app (thread-safe via `post_message`).

The worker never touches a widget: it only says what happened; the app looks again at DuckDB.
"""

from __future__ import annotations

from textual.message import Message

from apl_tui.events import Event, StepProgressed, TrainStepDone


class EngineReported(Message):
    """The engine's sink received an event (progress, pool, round, warning)."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event
        """The engine's event, unchanged."""

    def can_replace(self, message: Message) -> bool:
        """A burst of progress events collapses into the newest one of the same phase."""
        if not isinstance(message, EngineReported):
            return False
        old, new = self.event, message.event
        if isinstance(old, StepProgressed) and isinstance(new, StepProgressed):
            return old.phase == new.phase
        return isinstance(old, TrainStepDone) and isinstance(new, TrainStepDone)


class EngineStepFinished(Message):
    """One `Engine.step` call returned: its description, or None when nothing was due."""

    def __init__(self, description: str | None) -> None:
        super().__init__()
        self.description = description
        """What the step did, in a few words; None when the engine was idle."""

    def can_replace(self, message: Message) -> bool:
        """Idle ticks carry no news; a newer finish supersedes an older one."""
        return isinstance(message, EngineStepFinished) and self.description is None
