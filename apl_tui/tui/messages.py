"""Messages between the app's threads and its screens (`post_message` is thread-safe).

The learner's thread never touches a widget: it only says what happened; the app looks again at
DuckDB. Screens say "labels changed" upward instead of calling into the app.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

from apl_tui.events import Event, StepProgressed, TrainStepDone


class LearnerReported(Message):
    """The learner's sink received an event (progress, pool, round, warning)."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event
        """The learner's event, unchanged."""

    def can_replace(self, message: Message) -> bool:
        """A burst of progress events collapses into the newest one of the same phase."""
        if not isinstance(message, LearnerReported):
            return False
        old, new = self.event, message.event
        if isinstance(old, StepProgressed) and isinstance(new, StepProgressed):
            return old.phase == new.phase
        return isinstance(old, TrainStepDone) and isinstance(new, TrainStepDone)


class LearnerStepFinished(Message):
    """One `Learner.step` call returned: its description, or None when nothing was due."""

    def __init__(self, description: str | None) -> None:
        super().__init__()
        self.description = description
        """What the step did, in a few words; None when the learner was idle."""

    def can_replace(self, message: Message) -> bool:
        """Idle ticks carry no news; a newer finish supersedes an older one."""
        return isinstance(message, LearnerStepFinished) and self.description is None


class LearnerFailed(Message):
    """The learner's thread ended with an error (it is not restarted by itself)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
        """What ended it."""


class StatusRead(Message):
    """The desk read its status on its own thread (`LabelDesk.status_soon`): `status`, or the error it raised."""

    def __init__(self, status: Any = None, error: BaseException | None = None) -> None:
        super().__init__()
        self.status = status
        self.error = error


class LabelsChanged(Message):
    """A label or undo was committed on the labeling screen (the snapshot is due)."""
