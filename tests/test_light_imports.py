"""`apl --help`, the data commands and the TUI's modules must not import torch."""

from __future__ import annotations

import subprocess
import sys

LIGHT = ["apl_tui.cli", "apl_tui.store", "apl_tui.engine", "apl_tui.desk", "apl_tui.learner",
         "apl_tui.snapshot_writer", "apl_tui.atomic", "apl_tui.acquisition", "apl_tui.oracles",
         "apl_tui.snapshot", "apl_tui.queries", "apl_tui.batch", "apl_tui.pool"]


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_modules_do_not_import_torch_or_textual():
    mods = _loaded("\n".join(f"import {m}" for m in LIGHT))
    assert "torch" not in mods
    assert "textual" not in mods and "transformers" not in mods


def test_help_does_not_import_torch():
    mods = _loaded("import sys\nsys.argv = ['apl', '--help']\nfrom apl_tui.cli import main\n"
                   "try:\n    main()\nexcept SystemExit:\n    pass")
    assert "torch" not in mods
