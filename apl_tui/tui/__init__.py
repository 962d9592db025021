"""The labeling TUI (Textual). Importing this package loads Textual but never torch."""

from __future__ import annotations
