"""One error hierarchy: every failure a user can cause is an `AplError` with a hint.

The CLI and the TUI catch `AplError` at their boundary and show `message` and `hint` on one
line each; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


def first_line(e: BaseException) -> str:
    """An exception's first line for a one-line message (its type's name when it says nothing).

    >>> first_line(ValueError("  bad value  ")), first_line(TimeoutError())
    ('bad value', 'TimeoutError')
    """
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class AplError(Exception):
    """An error the user can act on: a one-line message and a hint."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(AplError):
    """A setting is missing, malformed or out of range."""


class StoreError(AplError):
    """The store cannot be opened, migrated, read or written."""


class StoreLockedError(StoreError):
    """Another process owns the database file read-write."""


class ImportDataError(AplError):
    """A prompt file cannot be imported; nothing from it was imported."""


class ModelError(AplError):
    """A model spec cannot be resolved or loaded."""


class TrainingDiverged(AplError):
    """A training round produced a non-finite loss or adapter; nothing of it was recorded."""


class OracleError(AplError):
    """An oracle cannot be built or cannot answer."""


class Cancelled(AplError):
    """A long operation stopped because its cancel event was set."""

    def __init__(self, message: str = "cancelled", hint: str = "") -> None:
        super().__init__(message, hint)


def check_cancel(cancel: Any) -> None:
    """Raise Cancelled if the caller's threading.Event is set (long work calls this between steps)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled()
