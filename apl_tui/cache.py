"""Where converted models live: one cache per user, shared by every store.

Converting the embedded model takes about a minute and 517 MB; doing it once per store (as a
`store/cache/` did) made every new store, demo and experiment pay again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "apl-tui"


def model_cache_dir() -> Path:
    """The converted-model cache: `$APL_CACHE_DIR`, else the platform's user cache folder.

    Linux and other Unix: `$XDG_CACHE_HOME/apl-tui` (default `~/.cache/apl-tui`); macOS:
    `~/Library/Caches/apl-tui`; Windows: `%LOCALAPPDATA%\\apl-tui\\Cache`.
    """
    override = os.environ.get("APL_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / APP_NAME
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache") / APP_NAME
