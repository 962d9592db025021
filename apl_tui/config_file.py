"""Reading a config.toml so that nothing silently falls back to the defaults.

`AplConfig.load` parses and validates the settings; this checks the file around it: a folder, a
missing, unreadable or empty file is refused with one line, and a store's own file that lacks
sections `apl init` writes (cut short by a full disk, or hand-edited) is named in a warning.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

from apl_tui.config import AplConfig
from apl_tui.errors import ConfigError

logger = logging.getLogger(__name__)


def load_config_file(path: Path, *, store_file: bool = False) -> AplConfig:
    """Read a config.toml, refusing what would silently mean "all defaults".

    A folder, a missing, unreadable or empty file is a ConfigError. For a store's own file
    (`store_file`), sections that `apl init` writes but the file lacks are named in a warning.
    """
    path = Path(path)
    init = "`apl init --store DIR` writes one with the default settings"
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a settings file", hint=f"remove it; {init}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such file", hint=init if store_file else "check the path") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text: {e.reason}", hint="fix or replace the file") from e
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}", hint="check the file's permissions") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}", hint="fix the TOML syntax (was the file cut short?)") from e
    if not data:
        raise ConfigError(f"{path} is empty: it would silently mean all defaults",
                          hint=f"write the settings you want (see examples/config.toml), or delete it: {init}")
    if store_file:
        missing = [name for name in AplConfig().to_dict() if name not in data]
        if missing:
            logger.warning("%s has no %s section%s: using the defaults there (was the file cut short?)",
                           path, ", ".join(f"[{m}]" for m in missing), "" if len(missing) == 1 else "s")
    return AplConfig.load(path)
