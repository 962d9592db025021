"""apl-tui: active preference learning for language models, in the terminal."""

__version__ = "0.1.0"
