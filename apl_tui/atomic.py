"""Write files and folders so that a crash leaves the old version or the new one, never half of one."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; it replaces `path` only if the block succeeds.

    >>> import tempfile; target = Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_file(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; it is renamed into place if the block succeeds.

    An existing `path` is replaced (moved aside first, then removed), or with `keep_existing`
    kept and the new copy discarded (another process finished the same work first).
    Temporary folders are hidden (`.NAME.tmp-PID-*`) so a store can clean up leftovers of a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name tells a store which hidden folders are a save in progress in this
    # process (kept) and which a killed one left behind (removed on open).
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        if path.exists() and keep_existing:
            shutil.rmtree(tmp)
            return
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(folder: Path) -> int:
    """Remove the hidden temporary folders `atomic_folder` left in `folder` when killed; return how many.

    Call it only where no other process can be writing there (a store opened read-write). The
    folders of a write in progress in this process carry its pid and are kept; older unnamed
    ones (`.NAME.xxxx`, before the pid was added) are removed too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    mine = re.compile(rf"\.[^/]+\.(?:tmp|old)-{os.getpid()}(?:-|$)")
    leftovers = [p for p in folder.glob(".*") if p.is_dir() and not mine.match(p.name)]
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return len(leftovers)
